"""Receiving relay-to-relay mail over HTTPS: `POST https://<relay>/mxdeliv` through the real
nginx (port 443, ALPN mux, TLS from a test CA) to filtermail incoming's HTTP listener, which
checks as on port 25 (DKIM on, keys from an unbound inside the relay's namespace) and
re-injects into the real Postfix, which delivers to Dovecot.

Requests are built as upstream's senders build them (../shared/mxdeliv-notes.md): envelope
in `X-MAIL-FROM` / `X-MAIL-TO` headers, the message dot-stuffed with CRLF line ends and no
final `.` line, signed by the sender domain's DKIM key.
"""

import time

import pytest
from dkim_samples import SELECTOR, rsa_key, sign
from unbound_instance import Unbound, require_unbound, txt

from chatmaild.relay import testca
from chatmaild.relay.netns import entered

from .conftest import running_relay
from .helpers import cleartext_message, encrypted_message, maildir_messages, wire_form
from .test_relay_web import WebRelay
from conftest import require_tool

DOMAIN = "_mx.example"
SENDER_DOMAIN = "sender.example"
SENDER = f"alice@{SENDER_DOMAIN}"
KEY = rsa_key("a")
DNS_PORT = 5353  # the relay's namespace is fresh: the port is free there
MAX_SIZE = 200_000
OK = (200, "250 OK")
DKIM_FAILED = (400, "550 5.7.1 No valid DKIM signature found")


@pytest.fixture(scope="module")
def mx_relay(tmp_path_factory):
    require_tool("nginx", "nft", "/usr/lib/nginx/modules/ngx_stream_module.so")
    require_unbound()
    extra = {
        "filtermail_dkim_check": "true",
        "filtermail_dkim_nameserver": f"127.0.0.1:{DNS_PORT}",
        "max_message_size": str(MAX_SIZE),
    }
    with running_relay("chatmaild-mx", with_ca=True, mail_domain=DOMAIN, ini_extra=extra) as r:
        zones = {SENDER_DOMAIN: [(f"{SELECTOR}._domainkey", 300, "TXT", txt(KEY.record()))]}
        dns = Unbound(tmp_path_factory.mktemp("unbound"), zones, port=DNS_PORT)
        with entered(r.netns):  # unbound and its control client run in the namespace
            dns.start()
        try:
            yield WebRelay(r, testca.ca_cert_path(r.ca_dir))
        finally:
            dns.stop()


def stuffed(message: bytes) -> bytes:
    """The request body: upstream's DATA form, written out here rather than imported."""
    lines = message.split(b"\r\n")
    assert lines[-1] == b"", "the message ends in CRLF"
    out = [(b"." + line if line.startswith(b".") else line) + b"\r\n" for line in lines[:-1]]
    return b"".join(out)


def post(relay, body, mail_from=SENDER, rcpts=(), source="127.0.0.1", extra=()):
    headers = [("X-MAIL-FROM", mail_from)] if mail_from is not None else []
    headers += [("X-MAIL-TO", rcpt) for rcpt in rcpts]
    headers += list(extra)
    status, _, text = relay.web.request(
        "POST", "/mxdeliv", body=body, source=source, headers=headers
    )
    return status, text.decode()


def delivered(relay, addr, marker, timeout=30.0):
    """The stored copies of the message with `marker` once one arrived (then 1 s more)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [m for m in maildir_messages(relay.user_dir(addr)) if marker.encode() in m]
        if found:
            time.sleep(1.0)  # a duplicate would arrive right behind it
            return [m for m in maildir_messages(relay.user_dir(addr)) if marker.encode() in m]
        time.sleep(0.1)
    return []


def signed_encrypted(to, sender=SENDER, domain=SENDER_DOMAIN):
    marker, message = encrypted_message(sender, to)
    # lines starting with "." (in the epilogue): they travel stuffed and arrive unstuffed
    message += b".dot line\r\n..\r\n"
    return marker, sign(message, domain, KEY) if domain else message


def test_signed_encrypted_mail_is_delivered_exactly_once(mx_relay):
    bob, _ = mx_relay.new_account()
    carol, _ = mx_relay.new_account()
    marker, message = signed_encrypted([bob, carol])
    assert b"\r\n.dot line\r\n" in message
    assert post(mx_relay, stuffed(message), rcpts=[bob, carol]) == OK
    for addr in (bob, carol):
        (stored,) = delivered(mx_relay, addr, marker)
        assert wire_form(stored).endswith(message)  # Postfix added its Received line only
    access = mx_relay.log_text("nginx-access.log")
    assert '"POST /mxdeliv HTTP/1.1" 200' in access
    log = mx_relay.log_text("filtermail-incoming.log")
    assert "Incoming: Filtering encrypted mail. (HTTP)" in log
    assert "BEGIN PGP" not in log


def test_refusals_of_the_request_form(mx_relay):
    bob, _ = mx_relay.new_account()
    marker, message = signed_encrypted([bob])
    body = stuffed(message)
    assert post(mx_relay, body.replace(b"\r\n", b"\n", 1), rcpts=[bob]) == (400, "500 Invalid DATA")
    lone_dot = body.replace(b"\r\nVersion: 1\r\n", b"\r\nVersion: 1\r\n.\r\n", 1)
    assert lone_dot != body
    assert post(mx_relay, lone_dot, rcpts=[bob]) == (400, "500 Invalid DATA")
    assert post(mx_relay, body, rcpts=[]) == (400, "554 5.5.1 Error: no valid recipients")
    status, _, text = mx_relay.web.request("GET", "/mxdeliv")
    assert (status, text) == (405, b"Method Not Allowed")
    too_large = body + b"x" * 70 + b"\r\n"
    too_large += (b"y" * 998 + b"\r\n") * (MAX_SIZE // 1000)
    assert len(too_large) > MAX_SIZE
    assert post(mx_relay, too_large, rcpts=[bob]) == (413, "552 Message exceeds maximum size")
    # none of them got through; the same request well-formed does
    assert delivered(mx_relay, bob, marker, timeout=2.0) == []
    assert post(mx_relay, body, rcpts=[bob]) == OK
    assert len(delivered(mx_relay, bob, marker)) == 1


def test_unsigned_and_cleartext_mail_are_refused(mx_relay):
    bob, _ = mx_relay.new_account()
    marker, unsigned = signed_encrypted([bob], domain=None)
    assert post(mx_relay, stuffed(unsigned), rcpts=[bob]) == DKIM_FAILED
    # signed by a key the sender domain does not publish
    _, forged = encrypted_message(SENDER, [bob])
    assert post(mx_relay, stuffed(sign(forged, SENDER_DOMAIN, rsa_key("b"))), rcpts=[bob]) == (
        DKIM_FAILED
    )
    # cleartext to an account (they enforce encryption from their first login)
    _, clear = cleartext_message(SENDER, [bob])
    assert post(mx_relay, stuffed(sign(clear, SENDER_DOMAIN, KEY)), rcpts=[bob]) == (
        400,
        "523 Encryption Needed: Invalid Unencrypted Mail",
    )
    # a recipient Postfix does not take (not local: no relaying into the Internet)
    _, message = signed_encrypted(["x@elsewhere.example"])
    status, text = post(mx_relay, stuffed(message), rcpts=["x@elsewhere.example"])
    assert status == 400 and text.startswith("554 5.7.1") and "Relay access denied" in text
    assert delivered(mx_relay, bob, marker, timeout=2.0) == []


def test_ip_literal_sender_is_exempt_only_from_its_own_address(mx_relay):
    """X-Real-IP is what nginx saw (the PROXY header from the 443 mux), never what the
    client wrote."""
    bob, _ = mx_relay.new_account()
    literal = "alice@[127.0.0.7]"
    marker, message = encrypted_message(literal, [bob])
    body = stuffed(message)
    assert post(mx_relay, body, literal, [bob], source="127.0.0.8") == DKIM_FAILED
    spoofed = [("X-Real-IP", "127.0.0.7")]
    assert post(mx_relay, body, literal, [bob], source="127.0.0.8", extra=spoofed) == DKIM_FAILED
    assert delivered(mx_relay, bob, marker, timeout=2.0) == []
    assert post(mx_relay, body, literal, [bob], source="127.0.0.7") == OK
    assert len(delivered(mx_relay, bob, marker)) == 1
    # nginx replaces the client's X-Real-IP (one header reaches the listener, nginx's)
    marker, message = encrypted_message(literal, [bob])
    wrong = [("X-Real-IP", "127.0.0.8")]
    assert post(mx_relay, stuffed(message), literal, [bob], source="127.0.0.7", extra=wrong) == OK
    assert len(delivered(mx_relay, bob, marker)) == 1
