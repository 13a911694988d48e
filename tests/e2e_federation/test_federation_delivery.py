"""Relay-to-relay delivery: MX lookup, port 25 with verified TLS, bounces, and what happens
when the resolver is down or the peer's certificate is not trusted.

Mail is submitted on 465 by an authenticated user of one relay (Python smtplib inside that
relay's namespace) and looked for in the recipient's Maildir on the other relay.
"""

import email
import re
import smtplib
import time
from email.utils import parseaddr

import pytest
from e2e.helpers import encrypted_message, wait_until

from chatmaild.relay.instance import make_certificate
from chatmaild.relay.netns import entered
from chatmaild.relay.webcert import issue

TRANSPORT_PORT = 10083  # filtermail_lmtp_port_transport
SETTLE_S = 3.0  # how long "nothing more arrived" is watched for
SCACHE_S = 2.5


def _message_id(message):
    for line in message.split(b"\r\n"):
        if line.lower().startswith(b"message-id:"):
            return line.split(b"<", 1)[1].split(b">", 1)[0].decode()
    raise AssertionError("no Message-ID")


def _send(sender_side, recipient_side):
    """Submit one encrypted mail from a new user on one relay to a new user on the other."""
    sender, spw = sender_side.new_account()
    rcpt, rpw = recipient_side.new_account()
    marker, message = encrypted_message(sender, [rcpt])
    assert sender_side.submit(465, sender, spw, sender, [rcpt], message) == {}
    return sender, rcpt, rpw, marker, message


def _submit_and_see_it_deferred(a, b, sender, spw, rcpt, marker, message):
    """Submit on A; returns (queue id, A's deferral line) once A deferred it, after
    checking that it is still in A's queue and that nothing reached B."""
    assert a.submit(465, sender, spw, sender, [rcpt], message) == {}
    queue_id = wait_until(lambda: a.queue_id_of(_message_id(message)), "queue id")
    (line,) = wait_until(lambda: a.delivery_lines(queue_id), "deferral", timeout=60)
    assert "status=deferred" in line
    assert queue_id in a.postqueue_list()
    time.sleep(SETTLE_S)
    assert not b.messages_with(rcpt, marker)
    return queue_id, line


def _exactly_once(side, rcpt, marker):
    wait_until(lambda: side.messages_with(rcpt, marker), f"{marker} at {rcpt}")
    time.sleep(SETTLE_S)
    assert len(side.messages_with(rcpt, marker)) == 1


@pytest.mark.parametrize("direction", ["a->b", "b->a"])
def test_mail_crosses_to_the_peer_over_verified_tls(federation, direction):
    src, dst = (federation.a, federation.b) if direction == "a->b" else (federation.b, federation.a)
    _, rcpt, _, marker, message = _send(src, dst)
    _exactly_once(dst, rcpt, marker)

    queue_id = wait_until(lambda: src.queue_id_of(_message_id(message)), "queue id")
    (line,) = wait_until(lambda: src.delivery_lines(queue_id), "delivery line")
    # Postfix handed it to the transport service, which found the peer by MX lookup and
    # delivered over HTTPS (/mxdeliv, certificate verified) or SMTP port 25 with STARTTLS
    assert f"relay=127.0.0.1[127.0.0.1]:{TRANSPORT_PORT}" in line
    assert "status=sent" in line
    stored = dst.messages_with(rcpt, marker)[0]
    assert b"-----BEGIN PGP MESSAGE-----" in stored
    if f"OK (HTTPS {dst.domain})" in line:
        posts = dst.mxdeliv_posts()
        assert posts and posts[-1][1] == 200
        return
    assert f"OK (SMTP {dst.domain}: 250 " in line, line
    # the peer's smtpd saw STARTTLS before the mail (port 25 requires it)
    peer_log = dst.log_text("postfix.log")
    assert f"connect from unknown[{src.address}]" in peer_log
    sessions = [
        line
        for line in peer_log.splitlines()
        if f"disconnect from unknown[{src.address}]" in line and "starttls=1" in line
    ]
    assert sessions
    received = f"Received: from {src.domain} (unknown [{src.address}])\n\tby {dst.domain} (Postfix)"
    assert f"{received} with ESMTPS".encode() in stored  # ESMTPS: the session was TLS


def test_unknown_recipient_bounce_reaches_the_sender(federation):
    """Relay B accepts the RCPT (as production does: no recipient map), Dovecot's LMTP
    refuses the unknown user, and B's bounce, DKIM-signed by B, travels back to A like any
    other mail and passes A's filtermail as a mailer-daemon report."""
    a, b = federation.a, federation.b
    sender, spw = a.new_account()
    nobody = f"nosuchuser9@{b.domain}"
    marker, message = encrypted_message(sender, [nobody])
    assert a.submit(465, sender, spw, sender, [nobody], message) == {}

    def bounce():
        for stored in a.maildir(sender):
            if _message_id(message).encode() in stored and b"multipart/report" in stored:
                return stored
        return None

    report = wait_until(bounce, f"bounce for {marker} at {sender}", timeout=60)
    headers = email.message_from_bytes(report)
    assert parseaddr(headers["From"])[1] == f"MAILER-DAEMON@{b.domain}"
    assert headers["Auto-Submitted"] == "auto-replied"
    assert b"Status: 5.1.1" in report
    assert nobody.encode() in report
    assert b"Accepted: mailer-daemon report" in a.log_text("filtermail-incoming.log").encode()
    # B's OpenDKIM signed its bounce (non_smtpd_milters), and it verifies with B's record
    assert a.dkim_verified_domain(report) == b.domain


def _deferred_while_down(a, b, resolver, sender, spw, rcpt, while_down=lambda: None):
    """Stop `resolver`, call while_down(), submit on A: deferred by A, nothing at B; then
    the resolver comes back, A's queue is flushed and the mail arrives exactly once.
    Returns A's deferral line."""
    marker, message = encrypted_message(sender, [rcpt])
    resolver.stop()
    try:
        while_down()
        # no cached SMTP connection from A to B may skip the MX lookup (Postfix keeps one
        # for smtp_connection_cache_time_limit, 2 s)
        time.sleep(SCACHE_S)
        queue_id, line = _submit_and_see_it_deferred(a, b, sender, spw, rcpt, marker, message)
    finally:
        resolver.start(probe_name=a.domain)
    a.relay.flush_queue()
    _exactly_once(b, rcpt, marker)
    assert any("status=sent" in line for line in a.delivery_lines(queue_id))
    wait_until(lambda: queue_id not in a.postqueue_list(), "queue empty")
    return line


def test_senders_resolver_down_defers_and_the_mail_arrives_once_it_is_back(federation):
    """A's resolver down: A's transport cannot look up B's MX and answers Postfix 421. (It
    keeps MX answers for their TTL and a TLS connection to B for a minute, so it is
    restarted while the resolver is down: it starts afresh, as after a reboot.)"""
    a, b = federation.a, federation.b
    sender, spw = a.new_account()
    rcpt, _ = b.new_account()

    def while_down():
        a.relay.restart_daemon("filtermail-transport")

    line = _deferred_while_down(a, b, a.resolver, sender, spw, rcpt, while_down)
    assert "Host or domain name not found" in line and "try again" in line


def test_recipients_resolver_down_defers_and_the_mail_arrives_once_it_is_back(federation):
    """B's resolver down: B's filtermail cannot fetch A's DKIM key and answers 4xx. A key it
    fetched before stays cached for its TTL, so mail keeps flowing until B's filtermail
    starts afresh (here: restarted while the resolver is down)."""
    a, b = federation.a, federation.b
    sender, spw = a.new_account()
    rcpt, _ = b.new_account()
    primed, message = encrypted_message(sender, [rcpt])
    assert a.submit(465, sender, spw, sender, [rcpt], message) == {}
    _exactly_once(b, rcpt, primed)  # B has A's key now

    def while_down():
        cached, message = encrypted_message(sender, [rcpt])
        assert a.submit(465, sender, spw, sender, [rcpt], message) == {}
        _exactly_once(b, rcpt, cached)  # A's key came from B's cache
        b.relay.restart_daemon("filtermail-incoming")  # and now the cache is empty

    line = _deferred_while_down(a, b, b.resolver, sender, spw, rcpt, while_down)
    assert re.search(r"said: 4\d\d ", line), line  # B answered 4xx


def test_untrusted_peer_certificate_defers_instead_of_sending_in_clear(federation):
    a, b = federation.a, federation.b
    layout = b.relay.layout
    sender, spw = a.new_account()
    rcpt, _ = b.new_account()
    marker, message = encrypted_message(sender, [rcpt])
    # B presents a self-signed certificate for its own name: valid name, unknown issuer
    for path in (layout.tls_cert, layout.tls_key):
        path.unlink()
    make_certificate(layout.tls_cert, layout.tls_key, b.domain)
    b.restart_postfix()
    b.reload_nginx()  # /mxdeliv (HTTPS) presents it too
    try:
        _, line = _submit_and_see_it_deferred(a, b, sender, spw, rcpt, marker, message)
        assert "certificate" in line.lower() and "verif" in line.lower()
        # B never saw the mail: no transaction, no queue id for it
        assert _message_id(message) not in b.log_text("postfix.log")
    finally:
        names = b.relay.peering.certificate_names(b.domain)
        issue(b.relay.ca_dir, names, layout.tls_cert, layout.tls_key)
        b.restart_postfix()
        b.reload_nginx()
    a.relay.flush_queue()
    _exactly_once(b, rcpt, marker)


def test_port_25_of_the_peer_takes_no_mail_before_starttls(federation):
    a, b = federation.a, federation.b
    with entered(a.netns):
        client = smtplib.SMTP(b.address, 25, timeout=30)
    try:
        client.ehlo(a.domain)
        assert client.has_extn("starttls")
        code, text = client.mail(f"x@{a.domain}")
        assert code == 530 and b"STARTTLS" in text
    finally:
        client.close()
