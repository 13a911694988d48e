"""The transport's pure decisions: MX choice, SMTP-only memory, replies, admission, wire
form, and the LMTP mode of the SMTP core (per-recipient replies)."""

import pytest

from chatmaild.smtp.proto import (
    NEED_DATA,
    PAUSED,
    MessageComplete,
    RcptTo,
    Reply,
    ServerConnection,
)
from chatmaild.transport import replies
from chatmaild.transport.limits import Admission
from chatmaild.transport.memory import SmtpOnlyMemory
from chatmaild.transport.mx import (
    Failed,
    NoDomain,
    NoRecords,
    Records,
    domain_of,
    hosts_or_reply,
    ip_literal,
    verifies_certificate,
)
from chatmaild.transport.wire import request_headers, stuff_body, url

# -- MX choice -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "lookup, expected",
    [
        (Records(((20, "mx2.b.test."), (10, "MX1.b.test."))), ("mx1.b.test", "mx2.b.test")),
        (Records(((10, "a."), (10, "b."), (5, "c."))), ("c", "a", "b")),
        (Records(((10, "a."), (20, "a."))), ("a",)),
        (NoRecords(), ("b.test",)),
    ],
    ids=["preference-order", "ties-keep-answer-order", "duplicates-once", "implicit-mx"],
)
def test_mx_hosts(lookup, expected):
    assert hosts_or_reply("b.test", lookup) == expected


@pytest.mark.parametrize(
    "lookup, code, text",
    [
        (Records(((0, "."),)), 556, "5.1.10"),
        (NoDomain(), 550, "5.1.2 Host or domain name not found"),
        (Failed("timeout"), 421, "4.4.3 Host or domain name not found"),
    ],
    ids=["null-mx", "nxdomain", "dns-failure"],
)
def test_mx_replies(lookup, code, text):
    reply = hosts_or_reply("b.test", lookup)
    assert isinstance(reply, Reply)
    assert reply.code == code and reply.text.startswith(text)
    assert "b.test" in reply.text


@pytest.mark.parametrize(
    "domain, host",
    [
        ("[10.0.0.1]", "10.0.0.1"),
        ("[IPv6:::1]", "::1"),
        ("[ipv6:2001:db8::1]", "2001:db8::1"),
        ("[10.0.0]", None),
        ("[::1]", None),
        ("b.test", None),
    ],
)
def test_ip_literal(domain, host):
    assert ip_literal(domain) == host


def test_domain_of():
    assert domain_of("Bob@B.Test") == "b.test"
    assert domain_of("a@b@c.test") == "c.test"
    assert domain_of("nodomain") == ""
    assert domain_of("@b.test") == ""


@pytest.mark.parametrize(
    "host, verify",
    [("b.test", True), ("_relay.b.test", False), ("10.0.0.1", False), ("::1", False)],
)
def test_certificate_exceptions(host, verify):
    assert verifies_certificate(host) is verify


# -- memory --------------------------------------------------------------------------------


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_memory_expires_and_forgets():
    clock = Clock()
    memory = SmtpOnlyMemory(interval=1800, clock=clock)
    assert not memory.smtp_only("mx")
    memory.remember("mx")
    assert memory.smtp_only("mx")
    clock.now += 1799
    assert memory.smtp_only("mx")
    clock.now += 1
    assert not memory.smtp_only("mx")
    assert len(memory) == 0
    memory.remember("mx")
    memory.forget("mx")
    assert not memory.smtp_only("mx")


def test_memory_is_bounded():
    clock = Clock()
    memory = SmtpOnlyMemory(interval=10, clock=clock, max_hosts=3)
    for host in "abc":
        memory.remember(host)
    clock.now += 5
    memory.remember("d")  # full: the oldest ("a") goes
    assert len(memory) == 3
    assert not memory.smtp_only("a")
    assert all(memory.smtp_only(h) for h in "bcd")
    clock.now += 6  # b, c expired
    memory.remember("e")
    assert len(memory) == 2


# -- replies -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body, expected",
    [
        (
            "523 Encryption Needed: Invalid Unencrypted Mail",
            Reply(523, "Encryption Needed: Invalid Unencrypted Mail"),
        ),
        (
            "554 5.7.1 No valid DKIM signature found",
            Reply(554, "5.7.1 No valid DKIM signature found"),
        ),
        ("451 4.7.1 DNS\n", Reply(451, "4.7.1 DNS")),
        ("250 OK", None),
        ("<html>Bad Gateway</html>", None),
        ("", None),
    ],
)
def test_https_reported_reply(body, expected):
    assert replies.https_reported(body) == expected


def test_smtp_reply_forwarded_as_given():
    assert replies.smtp_reply("mx", 550, "5.1.1 <x@b.test>: unknown") == Reply(
        550, "5.1.1 <x@b.test>: unknown"
    )
    ok = replies.smtp_reply("mx", 250, "2.0.0 Ok: queued as ABC")
    assert ok.code == 250 and "SMTP mx" in ok.text and "queued as ABC" in ok.text


def test_final_reply_prefers_the_receivers_refusal():
    refusal = Reply(523, "Encryption Needed")
    temp = replies.unreachable("mx", 25, "Connection refused")
    assert replies.final_reply(temp, refusal) == refusal
    assert replies.final_reply(temp, None) == temp
    assert replies.final_reply(None, None).code == 451
    assert temp.code == 451 and "mx:25" in temp.text


# -- admission -----------------------------------------------------------------------------


def test_admission_caps():
    adm = Admission(workers=4, per_destination=1, queue=1)
    assert adm.enter("a") and adm.enter("a")  # one running, one waiting
    assert not adm.enter("a")  # destination full
    assert adm.enter("b") and adm.enter("c")
    assert not adm.enter("d")  # all workers taken
    adm.leave("a")
    assert adm.taken("a") == 1
    assert adm.enter("d")
    assert adm.in_flight == 4
    adm.leave("a")
    assert adm.taken("a") == 0


# -- wire form -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data, stuffed",
    [
        (b"a\r\n.b\r\n..c\r\n", b"a\r\n..b\r\n...c\r\n"),
        (b".x\r\n", b"..x\r\n"),
        (b"no end", b"no end\r\n"),
        (b"", b"\r\n"),
    ],
)
def test_dot_stuff(data, stuffed):
    assert stuff_body(data) == stuffed


def test_envelope_and_url():
    assert request_headers("", ["a@b", "c@b"]) == [
        ("X-MAIL-FROM", ""),
        ("X-MAIL-TO", "a@b"),
        ("X-MAIL-TO", "c@b"),
    ]
    assert url("b.test") == "https://b.test/mxdeliv"
    assert url("::1", 8443) == "https://[::1]:8443/mxdeliv"


# -- LMTP mode of the SMTP core ------------------------------------------------------------


def _events(conn):
    out = []
    while True:
        event = conn.next_event()
        if event is NEED_DATA or event is PAUSED:
            return out, event
        out.append(event)


def test_lmtp_per_recipient_replies():
    conn = ServerConnection(lmtp=True)
    conn.greeting()
    assert b"LMTP" in conn.data_to_send()
    conn.receive_data(b"EHLO x\r\n")
    _events(conn)
    assert conn.data_to_send().startswith(b"500 ")
    conn.receive_data(b"LHLO postfix\r\nMAIL FROM:<a@a.test>\r\n")
    _events(conn)
    conn.answer(None)
    for rcpt in (b"x@b.test", b"y@c.test"):
        conn.receive_data(b"RCPT TO:<" + rcpt + b">\r\n")
        (event,), _ = _events(conn)
        assert isinstance(event, RcptTo)
        conn.answer(None)
    conn.receive_data(b"DATA\r\nSubject: s\r\n\r\nbody\r\n.\r\n")
    (event,), state = _events(conn)
    assert isinstance(event, MessageComplete) and state is PAUSED
    with pytest.raises(ValueError):
        conn.answer([Reply(250, "ok")])  # two recipients: two replies
    conn.answer([Reply(250, "2.0.0 ok"), Reply(550, "5.1.1 no")])
    out = conn.data_to_send()
    assert out.endswith(b"250 2.0.0 ok\r\n550 5.1.1 no\r\n")
    assert b"250 2.0.0 ok\r\n550" in out
    # the session goes on: a one-recipient message, one Reply for all
    conn.receive_data(b"MAIL FROM:<>\r\n")
    _events(conn)
    conn.answer(None)
    conn.receive_data(b"RCPT TO:<z@b.test>\r\n")
    _events(conn)
    conn.answer(None)
    conn.data_to_send()
    conn.receive_data(b"DATA\r\nx\r\n.\r\n")
    _events(conn)
    conn.answer(Reply(451, "4.4.1 later"))
    assert conn.data_to_send().endswith(b"451 4.4.1 later\r\n")


def test_smtp_mode_refuses_lhlo():
    conn = ServerConnection()
    conn.receive_data(b"LHLO x\r\n")
    _events(conn)
    assert conn.data_to_send().startswith(b"500 ")
