"""Relay-to-relay delivery over HTTPS (`POST /mxdeliv`) between the pair, through the
transport service (Postfix's default_transport): the path an operator whose provider blocks
port 25 depends on, its SMTP fallback and memory, refusals that must come back to the
sender, and a receiver restarted while mail is on its way.

The receiving side is filtermail incoming's HTTP listener behind B's nginx; A's transport
verifies B's certificate against the pair's test CA. The pair's SMTP-only memory is
shortened to TRANSPORT_MEMORY_S seconds (conftest.py).
"""

import importlib.util
import smtplib
import time

import pytest
from e2e.helpers import Endpoints, cleartext_message, encrypted_message, value, wait_until

from chatmaild.relay.netns import entered

from .conftest import TRANSPORT_MEMORY_S
from .helpers import nft_output_rule
from .test_federation_delivery import _exactly_once, _message_id, _send
from conftest import require

DELIVERED = "chatmail_transport_delivered_total"
FALLBACKS = "chatmail_transport_fallbacks_total"
BLOCK_25 = 'oifname "peer0" tcp dport 25 drop'
REFUSE_25 = 'oifname "peer0" tcp dport 25 reject with tcp reset'
# nginx's upstream for /mxdeliv refused: nginx answers 502, as a relay without the listener
NO_LISTENER = 'oifname "lo" ip daddr 127.0.0.1 tcp dport 10082 reject with tcp reset'


def require_listener(federation):
    found = importlib.util.find_spec("chatmaild.filtermail.httpserver") is not None
    require(found, "the /mxdeliv listener of filtermail incoming (chatmaild.filtermail.httpserver)")
    federation.require_daemons("filtermail-transport", "filtermail-incoming")


def forget_memory():
    """Let any SMTP-only mark of an earlier test expire."""
    time.sleep(TRANSPORT_MEMORY_S + 0.5)


def sent_line(side, message):
    queue_id = wait_until(lambda: side.queue_id_of(_message_id(message)), "queue id")
    lines = wait_until(
        lambda: [x for x in side.delivery_lines(queue_id) if "status=sent" in x], "sent line"
    )
    return lines[0]


def transport_metric(side, name, **labels):
    return value(Endpoints(side).scrape("filtermail-transport"), name, **labels)


def test_mail_goes_over_https_dkim_verified_once(federation):
    require_listener(federation)
    a, b = federation.a, federation.b
    forget_memory()
    https_before = transport_metric(a, DELIVERED, via="https")
    posts_before = len(b.mxdeliv_posts())
    _, rcpt, _, marker, message = _send(a, b)
    _exactly_once(b, rcpt, marker)
    (stored,) = b.messages_with(rcpt, marker)
    assert b.dkim_verified_domain(stored) == a.domain  # A's signature survived, B checked it
    line = sent_line(a, message)
    assert f"OK (HTTPS {b.domain})" in line, line
    new_posts = b.mxdeliv_posts()[posts_before:]
    assert [status for _, status in new_posts] == [200]
    assert transport_metric(a, DELIVERED, via="https") == https_before + 1
    # not over port 25: B's smtpd saw no session from A for it
    assert _message_id(message) not in "".join(
        x for x in b.log_text("postfix.log").splitlines() if "postfix/smtpd" in x
    )


def test_port_25_blocked_both_ways_mail_flows_over_443(federation):
    require_listener(federation)
    a, b = federation.a, federation.b
    forget_memory()
    with nft_output_rule(a.netns, BLOCK_25), nft_output_rule(b.netns, BLOCK_25):
        for src, dst in ((a, b), (b, a)):
            _, rcpt, _, marker, message = _send(src, dst)
            _exactly_once(dst, rcpt, marker)
            assert f"OK (HTTPS {dst.domain})" in sent_line(src, message)


def test_no_listener_falls_back_to_smtp_remembers_and_returns_to_https(federation):
    require_listener(federation)
    a, b = federation.a, federation.b
    forget_memory()
    fallbacks = transport_metric(a, FALLBACKS)
    sender, spw = a.new_account()
    rcpt, _ = b.new_account()

    def send():
        marker, message = encrypted_message(sender, [rcpt])
        assert a.submit(465, sender, spw, sender, [rcpt], message) == {}
        _exactly_once(b, rcpt, marker)
        return sent_line(a, message)

    with nft_output_rule(b.netns, NO_LISTENER):
        posts = len(b.mxdeliv_posts())
        line = send()
        assert f"OK (SMTP {b.domain}: 250 " in line, line
        assert [s for _, s in b.mxdeliv_posts()[posts:]] == [502]
        assert "https HTTP 502" in a.transport_lines(b.domain)[-1]
        assert transport_metric(a, FALLBACKS) == fallbacks + 1
        # remembered: straight to SMTP, no HTTPS request
        posts = len(b.mxdeliv_posts())
        assert f"OK (SMTP {b.domain}" in send()
        assert len(b.mxdeliv_posts()) == posts
    forget_memory()  # the memory expires: HTTPS again
    assert f"OK (HTTPS {b.domain})" in send()
    assert transport_metric(a, FALLBACKS) == fallbacks + 1


def _inject_after_the_filter(a, mail_from, rcpts, message):
    """Hand a message to A's outgoing reinjection port (after filtermail outgoing, where
    OpenDKIM signs mail From: A's domain), as if the filter had passed it."""
    port = a.relay.config.postfix_reinject_port
    with entered(a.netns):
        client = smtplib.SMTP("127.0.0.1", port, timeout=30)
    try:
        return client.sendmail(mail_from, rcpts, message)
    finally:
        client.close()


def _bounce_for(a, sender, message):
    mid = _message_id(message).encode()

    def bounce():
        for stored in a.maildir(sender):
            if mid in stored and b"multipart/report" in stored:
                return stored
        return None

    return wait_until(bounce, f"bounce at {sender}", timeout=90)


def _refusal_case(federation, case, port25):
    require_listener(federation)
    a, b = federation.a, federation.b
    forget_memory()
    sender, _ = a.new_account()
    rcpt, _ = b.new_account()
    if case == "cleartext":
        marker, message = cleartext_message(sender, [rcpt])
        expected = b"Encryption Needed"
    else:  # unsigned: From a domain A does not sign for
        marker, message = encrypted_message(f"someone@{federation.sender.domain}", [rcpt])
        expected = b"No valid DKIM signature"
    posts = len(b.mxdeliv_posts())
    rule = REFUSE_25 if port25 == "refused" else None
    if rule:
        with nft_output_rule(a.netns, rule):
            assert _inject_after_the_filter(a, sender, [rcpt], message) == {}
            report = _bounce_for(a, sender, message)
    else:
        assert _inject_after_the_filter(a, sender, [rcpt], message) == {}
        report = _bounce_for(a, sender, message)
    assert expected in report
    assert rcpt.encode() in report
    assert [s for _, s in b.mxdeliv_posts()[posts:]] == [400]  # B refused over HTTPS
    time.sleep(1)
    assert not b.messages_with(rcpt, marker)


def test_cleartext_refused_over_https_bounces_to_the_sender(federation):
    _refusal_case(federation, "cleartext", "open")


def test_cleartext_refused_over_https_bounces_even_without_port_25(federation):
    _refusal_case(federation, "cleartext", "refused")


def test_unsigned_refused_over_https_bounces_to_the_sender(federation):
    _refusal_case(federation, "unsigned", "open")


@pytest.mark.parametrize(
    "side, daemon", [("b", "filtermail-incoming"), ("a", "filtermail-transport")]
)
def test_restart_mid_transfer_loses_nothing(federation, side, daemon):
    """B's filtermail incoming (the /mxdeliv listener and the port-25 filter) or A's transport
    service restarts while A delivers a burst: every message arrives, at most twice (a
    request B accepted but whose answer was lost is sent again), and A's queue empties."""
    require_listener(federation)
    a, b = federation.a, federation.b
    forget_memory()
    sender, spw = a.new_account()
    rcpt, _ = b.new_account()
    markers = []
    client = a.smtp(465)
    try:
        client.login(sender, spw)
        for i in range(30):
            marker, message = encrypted_message(sender, [rcpt])
            client.sendmail(sender, [rcpt], message)
            markers.append(marker)
            if i == 10:
                getattr(federation, side).relay.restart_daemon(daemon)
    finally:
        client.close()
    a.relay.flush_queue()
    for marker in markers:
        wait_until(lambda m=marker: b.messages_with(rcpt, m), f"{marker} at B", timeout=120)
    time.sleep(3)
    counts = [len(b.messages_with(rcpt, m)) for m in markers]
    assert all(1 <= n <= 2 for n in counts), counts
    wait_until(lambda: "Mail queue is empty" in a.postqueue_list(), "A's queue empty")
