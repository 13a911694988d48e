"""DKIM signing by the relay's real OpenDKIM (issue 12, part 1).

What the relay delivers is checked, not what OpenDKIM says it did: the stored message, as
it crossed SMTP, must carry a signature (d=chat.example, s=opendkim) that dkimpy verifies
with the TXT record derived from the relay's key. So the signature must have been made
after the authclean rewriting (Received and User-Agent dropped, Subject replaced), and
Postfix's own bounces must pass the milter too. logmetrics counts OpenDKIM's log lines,
which reach it through the syslog sink and log/opendkim.log.
"""

import dkim
import pytest

from chatmaild.relay.dkimrun import wait_syslog_socket
from chatmaild.render.opendkim import key_name, txt_value

from .helpers import (
    Endpoints,
    encrypted_message,
    maildir_messages,
    random_local_part,
    value,
    wait_until,
    wire_form,
)
from .test_relay_metrics import settle

SIGNED = "chatmail_dkim_signed_total"


@pytest.fixture
def record(relay):
    """The relay's TXT record, derived here from its key file and compared with the one
    `up` printed."""
    dkim_layout = relay.relay.dkim
    assert dkim_layout is not None, "the local relay for chat.example signs"
    value_ = txt_value(dkim_layout.key_file.read_bytes())
    assert relay.relay.dkim_record == value_
    return value_


@pytest.fixture
def logmetrics(relay):
    relay.require_daemons("logmetrics")
    return Endpoints(relay)


def _dns(record, domain):
    name = f"{key_name(domain)}.".encode()

    def lookup(qname, timeout=5):
        return record.encode() if qname == name else None

    return lookup


def _signature_tags(message):
    """{tag: value} of the (single) DKIM-Signature header."""
    head = message.split(b"\r\n\r\n", 1)[0].decode()
    fields = [f for f in head.replace("\r\n\t", " ").replace("\r\n ", " ").split("\r\n")]
    (sig,) = [f for f in fields if f.lower().startswith("dkim-signature:")]
    tags = sig.split(":", 1)[1].split(";")
    return {k.strip(): v.strip() for k, _, v in (t.partition("=") for t in tags if "=" in t)}


def _signed_headers(wire):
    return [h.strip().lower() for h in _signature_tags(wire)["h"].split(":")]


def _signed(relay, record, message):
    """Assert that `message` (stored bytes) carries a verifying signature of the relay."""
    wire = wire_form(message)
    tags = _signature_tags(wire)
    assert tags["d"] == relay.domain and tags["s"] == "opendkim"
    assert tags["c"] == "relaxed/simple" and tags["a"] == "rsa-sha256"
    assert {"from", "to", "subject", "date"} <= set(_signed_headers(wire))
    assert dkim.verify(wire, dnsfunc=_dns(record, relay.domain)), "signature does not verify"
    # and dkimpy does check: a changed body no longer verifies
    assert not dkim.verify(wire + b"tampered\r\n", dnsfunc=_dns(record, relay.domain))
    return wire


def _signed_count(logmetrics):
    return value(logmetrics.scrape("logmetrics"), SIGNED)


@pytest.mark.parametrize("port", [465, 587])
def test_submitted_mail_is_signed_after_the_header_cleanup(relay, record, logmetrics, port):
    settle(relay, logmetrics)
    before = _signed_count(logmetrics)
    a, pa = relay.new_account()
    b, pb = relay.new_account()
    marker, message = encrypted_message(a, [b])
    # headers authclean removes or rewrites after filtermail (see submission_header_cleanup)
    message = message.replace(
        b"MIME-Version: 1.0\r\n", b"User-Agent: dkim-test/1.0\r\nMIME-Version: 1.0\r\n", 1
    ).replace(b"Subject: [...]\r\n", b"Subject: a subject the relay must hide\r\n", 1)
    assert b"must hide" in message
    assert relay.submit(port, a, pa, a, [b], message) == {}
    relay.wait_delivered(b, pb, marker)
    (stored,) = [m for m in maildir_messages(relay.user_dir(b)) if marker.encode() in m]
    wire = _signed(relay, record, stored)
    head = wire.split(b"\r\n\r\n", 1)[0]
    assert b"User-Agent:" not in head and b"\r\nReceived:" not in head
    assert b"\r\nSubject: [...]\r\n" in head and b"must hide" not in wire
    # Subject is signed (and oversigned) and what verifies is the rewritten "[...]": the
    # signature was made after authclean's rewriting
    assert _signed_headers(wire).count("subject") == 2
    wait_until(lambda: _signed_count(logmetrics) == before + 1, f"{SIGNED} + 1")


def test_postfix_bounce_is_signed(relay, record, logmetrics):
    """Mail to an address without an account: Dovecot's LMTP refuses it (550 5.1.1) after
    Postfix queued it, so Postfix's bounce daemon reports to the sender, through OpenDKIM."""
    settle(relay, logmetrics)
    before = _signed_count(logmetrics)
    a, pa = relay.new_account()
    nobody = f"{random_local_part()}@{relay.domain}"
    marker, message = encrypted_message(a, [nobody])
    assert relay.submit(465, a, pa, a, [nobody], message) == {}

    def bounce():
        found = [m for m in maildir_messages(relay.user_dir(a)) if b"MAILER-DAEMON@" in m]
        return [m for m in found if marker.encode() in m]

    (stored,) = wait_until(bounce, "the bounce in the sender's mailbox")
    wire = _signed(relay, record, stored)
    head = wire.split(b"\r\n\r\n", 1)[0]
    assert f"From: Mail Delivery System <MAILER-DAEMON@{relay.domain}>".encode() in head
    assert b"Return-Path: <>" in stored
    # the submitted mail and the bounce: two signatures, two log lines counted
    wait_until(lambda: _signed_count(logmetrics) == before + 2, f"{SIGNED} + 2")
    settle(relay, logmetrics)
    assert _signed_count(logmetrics) == before + 2


def test_opendkim_lines_reach_a_restarted_syslog_sink(relay, record, logmetrics):
    """The sink makes a new socket at the same path; OpenDKIM's /dev/log (a symlink to
    that path) reaches it without an OpenDKIM restart."""
    relay.require_daemons("opendkim-syslog")
    relay.relay.restart_daemon("opendkim-syslog")
    assert wait_syslog_socket(relay.relay.dkim)
    settle(relay, logmetrics)
    before = _signed_count(logmetrics)
    a, pa = relay.new_account()
    b, pb = relay.new_account()
    marker, message = encrypted_message(a, [b])
    assert relay.submit(465, a, pa, a, [b], message) == {}
    relay.wait_delivered(b, pb, marker)
    wait_until(lambda: _signed_count(logmetrics) == before + 1, f"{SIGNED} + 1")
