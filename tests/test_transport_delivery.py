"""The transport service end to end on loopback: LMTP in (a raw client reading one reply
per recipient, as Postfix's), real peers out: an aiohttp HTTPS server answering
`POST /mxdeliv` and an aiosmtpd server on "port 25" that requires STARTTLS, both with
certificates for `localhost` from a test CA the transport trusts."""

import asyncio

import pytest
import trustme
from transport_peers import Certs, HttpsPeer, SmtpPeer, StubResolver, lmtp_send

from chatmaild.metrics.transport import TransportMetrics
from chatmaild.smtp.server import ServerSettings, SMTPServer
from chatmaild.transport.app import LISTEN_HOST, TransportHandler
from chatmaild.transport.deliver import Deliverer
from chatmaild.transport.https import HttpsSender
from chatmaild.transport.limits import Admission
from chatmaild.transport.memory import SmtpOnlyMemory
from chatmaild.transport.mx import Failed, NoDomain

MESSAGE = (
    b"From: a@a.test\r\nTo: x@b.test\r\nSubject: [...]\r\n\r\nline\r\n.dot line\r\n"
    + (b"x" * 76 + b"\r\n") * 52
)


class Setup:
    def __init__(self, certs, https, smtp, deliverer, server, metrics):
        self.certs = certs
        self.https = https
        self.smtp = smtp
        self.deliverer = deliverer
        self.server = server
        self.metrics = metrics

    async def send(self, rcpts, mail_from="a@a.test", message=MESSAGE):
        return await lmtp_send(self.server.port, mail_from, rcpts, message)


@pytest.fixture
async def transport():
    made = []

    async def make(
        status=200,
        text="250 OK",
        https_up=True,
        smtp_up=True,
        https_leaf=None,
        answers=None,
        memory=60.0,
        admission=None,
        delay=0.0,
        refuse=None,
        deadline=60.0,
    ):
        from chatmaild.transport.smtpclient import SmtpSender

        certs = Certs()
        https = HttpsPeer(certs.server_context(https_leaf), status, text, delay)
        smtp = SmtpPeer(certs.server_context(), refuse=refuse or {})
        await https.start()
        await smtp.start()
        https_port, smtp_port = https.port, smtp.port
        if not https_up:
            await https.stop()
        if not smtp_up:
            await smtp.stop()
        metrics = TransportMetrics()
        sender = HttpsSender(port=https_port, ssl_context=certs.client_context(), timeout=10)
        deliverer = Deliverer(
            StubResolver(answers),
            sender,
            SmtpSender("a.test", port=smtp_port, ssl_context=certs.client_context(), timeout=10),
            memory=SmtpOnlyMemory(interval=memory),
            admission=admission or Admission(),
            metrics=metrics,
            deadline=deadline,
        )
        server = SMTPServer(
            TransportHandler(deliverer), LISTEN_HOST, 0, settings=ServerSettings(lmtp=True)
        )
        await server.start()
        setup = Setup(certs, https, smtp, deliverer, server, metrics)
        made.append((setup, https_up, smtp_up))
        return setup

    yield make
    for setup, https_up, smtp_up in made:
        await setup.server.shutdown(grace=1)
        await setup.deliverer.https.close()
        if https_up:
            await setup.https.stop()
        if smtp_up:
            await setup.smtp.stop()


async def test_https_delivery_in_upstream_form_over_one_connection(transport):
    t = await transport()
    rcpt, data = await t.send(["x@b.test", "y@b.test"])
    assert [c for c, _ in rcpt] == [250, 250]
    assert [c for c, _ in data] == [250, 250]
    assert all("HTTPS localhost" in text for _, text in data)
    (post,) = t.https.posts
    headers = [(k.upper(), v) for k, v in post.headers if k.upper().startswith("X-MAIL")]
    assert headers == [
        ("X-MAIL-FROM", "a@a.test"),
        ("X-MAIL-TO", "x@b.test"),
        ("X-MAIL-TO", "y@b.test"),
    ]
    # DATA wire form: dot-stuffed, CRLF, ending in CRLF, no final dot line
    assert post.body == MESSAGE.replace(b"\r\n.", b"\r\n..")
    assert not t.smtp.messages
    for _ in range(5):
        await t.send(["z@b.test"])
    assert len(t.https.posts) == 6
    assert len(t.https.peers) == 1  # one TLS handshake for six messages
    assert t.deliverer.https.handshakes == 1
    assert t.metrics.delivered_https.value == 7
    assert t.metrics.delivered_smtp.value == 0


async def test_null_sender_goes_as_an_empty_x_mail_from(transport):
    t = await transport()
    _, data = await t.send(["x@b.test"], mail_from="")
    assert data[0][0] == 250
    assert ("X-MAIL-FROM", "") in [(k.upper(), v) for k, v in t.https.posts[0].headers]


@pytest.mark.parametrize("status", [404, 405, 502])
async def test_fallback_to_smtp_and_memory(transport, status):
    t = await transport(status=status, text="nope", memory=0.5)
    _, data = await t.send(["x@b.test"])
    assert data[0][0] == 250 and "SMTP localhost" in data[0][1]
    assert len(t.https.posts) == 1 and len(t.smtp.messages) == 1
    (mail_from, rcpts, content) = t.smtp.messages[0]
    assert (mail_from, rcpts) == ("a@a.test", ["x@b.test"])
    assert content.replace(b"\r\n", b"\n") == MESSAGE.replace(b"\r\n", b"\n")
    assert t.metrics.fallbacks.value == 1
    # remembered: the next message goes straight to SMTP
    _, data = await t.send(["x@b.test"])
    assert data[0][0] == 250
    assert len(t.https.posts) == 1 and len(t.smtp.messages) == 2
    # after the memory interval HTTPS is tried again
    await asyncio.sleep(0.6)
    t.https.status = 200
    _, data = await t.send(["x@b.test"])
    assert "HTTPS" in data[0][1]
    assert len(t.https.posts) == 2 and len(t.smtp.messages) == 2


async def test_no_https_listener_falls_back(transport):
    t = await transport(https_up=False)
    _, data = await t.send(["x@b.test"])
    assert data[0][0] == 250 and "SMTP" in data[0][1]
    assert len(t.smtp.messages) == 1


async def test_untrusted_https_certificate_falls_back_to_smtp(transport):
    stranger = trustme.CA().issue_cert("localhost")
    t = await transport(https_leaf=stranger)
    _, data = await t.send(["x@b.test"])
    assert data[0][0] == 250 and "SMTP" in data[0][1]
    assert not t.https.posts


async def test_smtp_reply_per_recipient_is_forwarded(transport):
    t = await transport(
        status=400,
        text="554 5.7.1 No valid DKIM signature found",
        refuse={"nobody@b.test": "550 5.1.1 <nobody@b.test>: unknown user"},
    )
    _, data = await t.send(["x@b.test", "nobody@b.test"])
    assert data[0][0] == 250
    assert data[1] == (550, "5.1.1 <nobody@b.test>: unknown user")
    assert t.metrics.bounced.value == 1 and t.metrics.delivered_smtp.value == 1


async def test_https_refusal_bounces_when_port_25_is_unreachable(transport):
    t = await transport(
        status=400, text="523 Encryption Needed: Invalid Unencrypted Mail", smtp_up=False
    )
    _, data = await t.send(["x@b.test", "y@b.test"])
    assert data == [(523, "Encryption Needed: Invalid Unencrypted Mail")] * 2
    assert t.metrics.bounced.value == 2


async def test_nothing_reachable_defers(transport):
    t = await transport(https_up=False, smtp_up=False)
    _, data = await t.send(["x@b.test"])
    assert data[0][0] == 451 and "4.4.1" in data[0][1]
    assert t.metrics.deferred.value == 1


async def test_smtp_only_host_with_port_25_gone_is_tried_over_https(transport):
    t = await transport(status=502, memory=60)
    _, data = await t.send(["x@b.test"])
    assert "SMTP" in data[0][1]
    assert t.deliverer.memory.smtp_only("localhost")
    await t.smtp.stop()
    t.https.status = 200
    _, data = await t.send(["x@b.test"])
    assert "HTTPS" in data[0][1]
    assert not t.deliverer.memory.smtp_only("localhost")


async def test_dns_outcomes_per_domain(transport):
    t = await transport(answers={"gone.test": NoDomain(), "flaky.test": Failed("timeout")})
    _, data = await t.send(["x@b.test", "y@gone.test", "z@flaky.test"])
    assert data[0][0] == 250
    assert data[1][0] == 550 and "5.1.2" in data[1][1]
    assert data[2][0] == 421 and "4.4.3" in data[2][1]


async def test_busy_destination_gets_421(transport):
    t = await transport(delay=0.5, admission=Admission(workers=10, per_destination=1, queue=1))
    first = asyncio.create_task(t.send(["x@b.test"]))
    await asyncio.sleep(0.2)
    waiting = asyncio.create_task(t.send(["y@b.test"]))  # queued behind the first
    await asyncio.sleep(0.1)
    _, data = await t.send(["z@b.test"])
    assert data == [(421, "4.3.2 Transport busy")]
    assert (await first)[1][0][0] == 250
    assert (await waiting)[1][0][0] == 250
    assert len(t.https.posts) == 2
    assert t.metrics.busy.value == 1


async def test_a_delivery_slower_than_the_deadline_is_deferred(transport):
    t = await transport(delay=2.0, deadline=0.5, smtp_up=False)
    _, data = await t.send(["x@b.test"])
    assert data[0][0] == 451 and data[0][1].startswith("4.4.7")
    assert t.metrics.deferred.value == 1
