"""filtermail incoming's /mxdeliv HTTP listener over real sockets: an aiohttp client (or
raw bytes) -> the listener -> aiosmtpd recording sink as the downstream Postfix. Requests
are built as upstream's senders build them: envelope headers, dot-stuffed CRLF body without
the final dot line."""

import asyncio
import logging
import socket

import aiohttp
import pytest
from filtermail_samples import armor, encrypt, encrypted_mail, plain_mail
from filtermail_server_helpers import Client, Filter, closed_port
from multidict import CIMultiDict
from prometheus_client import generate_latest

from chatmaild.filtermail.dkimkeys import KeyFetcher
from chatmaild.filtermail.mxdeliv import request_headers, stuff_body

SENDER = "alice@sender.example"
LOCAL = "bob@chat.example"
ENCRYPTION_NEEDED = "523 Encryption Needed: Invalid Unencrypted Mail"


@pytest.fixture
async def session():
    async with aiohttp.ClientSession() as session:
        yield session


def encrypted(sender=SENDER, to=LOCAL) -> bytes:
    return encrypted_mail(armor(encrypt(("x25519",), 1500)), sender=sender, to=to)


async def post(session, port, body, mail_from=SENDER, rcpts=(LOCAL,), headers=()):
    hdrs = CIMultiDict(request_headers(mail_from, rcpts) if mail_from is not None else [])
    if mail_from is None:
        for rcpt in rcpts:
            hdrs.add("X-MAIL-TO", rcpt)
    for name, value in headers:
        hdrs.add(name, value)
    url = f"http://127.0.0.1:{port}/mxdeliv"
    async with session.post(url, data=body, headers=hdrs) as resp:
        return resp.status, await resp.text()


def http_filter(tmp_path, sink_port, **params):
    return Filter(tmp_path, "incoming", sink_port, http=True, **params)


def filter_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "filtermail"]


async def test_encrypted_mail_is_reinjected_exactly_once(tmp_path, sink, session, caplog):
    caplog.set_level(logging.INFO, logger="filtermail")
    message = encrypted().replace(b"\r\n\r\n", b"\r\n\r\n.leading dot\r\n..\r\n", 1)
    async with http_filter(tmp_path, sink.port) as f:
        status, text = await post(session, f.http_port, stuff_body(message))
        assert (status, text) == (200, "250 OK")
        status, text = await post(session, f.http_port, stuff_body(message), rcpts=[LOCAL, "c@x"])
        assert (status, text) == (200, "250 OK")
        assert f.server.handler.metrics.encrypted.value == 2
        exported = generate_latest(f.http.metrics.registry).decode()
        assert 'chatmail_filtermail_http_requests_total{mode="incoming",status="200"} 2.0' in (
            exported
        )
        assert 'chatmail_filtermail_http_open_requests{mode="incoming"} 0.0' in exported
    assert [m.data for m in sink.messages] == [message, message]
    assert [(m.mail_from, m.rcpt_tos) for m in sink.messages] == [
        (SENDER, [LOCAL]),
        (SENDER, [LOCAL, "c@x"]),
    ]
    assert filter_lines(caplog) == ["Incoming: Filtering encrypted mail. (HTTP)"] * 2


async def test_null_sender_and_8bit_and_utf8_envelope(tmp_path, sink, session):
    message = encrypted(to="bö@chat.example").replace(b"Subject: [...]", "Subject: ä".encode())
    async with http_filter(tmp_path, sink.port) as f:
        body = stuff_body(message)
        assert await post(session, f.http_port, body, None, ["bö@chat.example"]) == (200, "250 OK")
        assert await post(session, f.http_port, body, "", [LOCAL]) == (200, "250 OK")
    first, second = sink.messages
    assert (first.mail_from, first.rcpt_tos, first.data) == ("<>", ["bö@chat.example"], message)
    assert "SMTPUTF8" in first.mail_options and "BODY=8BITMIME" in first.mail_options
    assert (second.mail_from, second.rcpt_tos) == ("<>", [LOCAL])  # aiosmtpd spells it <>


async def test_refusals_of_the_request_form(tmp_path, sink, session, caplog):
    caplog.set_level(logging.INFO, logger="filtermail")
    good = stuff_body(encrypted())
    url_of = "http://127.0.0.1:{}/mxdeliv".format
    async with http_filter(tmp_path, sink.port) as f:
        port = f.http_port
        bare_lf = good.replace(b"\r\n", b"\n", 1)
        assert await post(session, port, bare_lf) == (400, "500 Invalid DATA")
        lone_dot = good.replace(b"\r\n\r\n", b"\r\n\r\n.\r\n", 1)
        assert await post(session, port, lone_dot) == (400, "500 Invalid DATA")
        assert await post(session, port, good + b".\r\n") == (400, "500 Invalid DATA")
        assert await post(session, port, good[:-2]) == (400, "500 Invalid DATA")
        no_rcpt = (400, "554 5.5.1 Error: no valid recipients")
        assert await post(session, port, good, rcpts=()) == no_rcpt
        async with session.get(url_of(port)) as resp:
            assert (resp.status, await resp.text()) == (405, "Method Not Allowed")
        async with session.put(url_of(port), data=good) as resp:
            assert resp.status == 405
        codes = f.http.metrics.http_status
        assert (codes[400].value, codes[405].value) == (5, 2)
    assert sink.messages == []
    lines = filter_lines(caplog)
    assert len(lines) == 7
    assert lines[0] == (
        f"Incoming: Refused mail from <{SENDER}> (HTTP): 400 500 Invalid DATA (request form)"
    )
    assert lines[-1] == "Incoming: Refused PUT request (HTTP): 405 Method Not Allowed"
    assert not any("BEGIN PGP" in line for line in lines)


async def test_over_max_message_size_is_413(tmp_path, sink, session):
    async with http_filter(tmp_path, sink.port, max_message_size=5000) as f:
        big = stuff_body(encrypted()) + b"x" * 5000 + b"\r\n"
        too_large = (413, "552 Message exceeds maximum size")
        assert await post(session, f.http_port, big) == too_large

        async def chunks():  # no Content-Length: counted while reading
            for i in range(0, len(big), 1000):
                yield big[i : i + 1000]

        assert await post(session, f.http_port, chunks()) == too_large
        # exactly the limit passes (cleartext to a recipient who did not opt in)
        exact = b"Subject: x\r\n\r\n" + b"x" * 84 + b"\r\n"
        exact += (b"y" * 98 + b"\r\n") * 49
        assert len(exact) == 5000
        assert await post(session, f.http_port, exact) == (200, "250 OK")
        assert await post(session, f.http_port, exact + b"\r\n") == too_large
        assert f.http.metrics.http_status[413].value == 3
    assert [m.data for m in sink.messages] == [exact]


async def test_policy_and_downstream_refusals_are_400_with_the_smtp_reply(tmp_path, sink, session):
    async with http_filter(tmp_path, sink.port) as f:
        mailbox = f.config.mailboxes_dir / LOCAL
        mailbox.mkdir(parents=True)
        (mailbox / "enforceE2EEincoming").write_text("")
        plain = stuff_body(plain_mail(sender=SENDER, to=LOCAL))
        assert await post(session, f.http_port, plain) == (400, ENCRYPTION_NEEDED)
        # cleartext to a recipient who did not opt in passes, as over SMTP
        other = "carol@chat.example"
        assert await post(session, f.http_port, plain, rcpts=[other]) == (200, "250 OK")
        body = stuff_body(encrypted())
        status, text = await post(session, f.http_port, body, rcpts=["nouser@chat.example"])
        assert (status, text) == (
            400,
            "550 5.1.1 <nouser@chat.example>: Recipient address rejected: User unknown",
        )
        status, text = await post(session, f.http_port, body, rcpts=["tempdata@chat.example"])
        assert (status, text) == (400, "451 4.3.5 Server configuration problem")
    assert [m.rcpt_tos for m in sink.messages] == [[other]]


async def test_downstream_unreachable_is_400_451(tmp_path, session):
    async with http_filter(tmp_path, closed_port()) as f:
        status, text = await post(session, f.http_port, stuff_body(encrypted()))
    assert status == 400 and text.startswith("451 4.3.0 Error: reinjection failed")


@pytest.fixture
def silent_dns():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        yield s


async def test_dkim_and_the_ip_literal_client_address(tmp_path, sink, session, silent_dns):
    """DKIM is checked as over SMTP; an IP-literal From is exempt only when it is the
    address nginx forwarded in X-Real-IP (one header, nothing else)."""
    fetcher = KeyFetcher(silent_dns.getsockname(), timeout=0.5)
    async with http_filter(
        tmp_path, sink.port, key_fetcher=fetcher, filtermail_dkim_check="true"
    ) as f:
        port = f.http_port
        unsigned = stuff_body(encrypted())
        dkim_550 = (400, "550 5.7.1 No valid DKIM signature found")
        assert await post(session, port, unsigned) == dkim_550
        literal = stuff_body(encrypted(sender="alice@[192.0.2.1]"))
        real_ip = [("X-Real-IP", "192.0.2.1")]
        assert await post(session, port, literal, "alice@[192.0.2.1]", headers=real_ip) == (
            200,
            "250 OK",
        )
        assert await post(session, port, literal, "alice@[192.0.2.1]") == dkim_550
        other_ip = [("X-Real-IP", "192.0.2.2")]
        assert await post(session, port, literal, headers=other_ip) == dkim_550
        two = [("X-Real-IP", "192.0.2.1"), ("X-Real-IP", "192.0.2.1")]
        assert await post(session, port, literal, headers=two) == dkim_550
        assert f.server.handler.metrics.dkim_failed.value == 4
    assert [m.mail_from for m in sink.messages] == ["alice@[192.0.2.1]"]


async def test_concurrency_limit_answers_503_and_200_waits_for_the_downstream(
    tmp_path, sink, session
):
    body = stuff_body(encrypted())
    async with http_filter(tmp_path, sink.port) as f:
        f.http.max_requests = 1
        held = asyncio.create_task(post(session, f.http_port, body, rcpts=["hold@chat.example"]))
        await asyncio.wait_for(sink.held.wait(), 10)
        assert not held.done()  # no answer before the downstream took the message
        status, text = await post(session, f.http_port, body)
        assert status == 503 and text.startswith("421 ")
        sink.release.set()
        assert await held == (200, "250 OK")
        assert await post(session, f.http_port, body) == (200, "250 OK")
    assert len(sink.messages) == 2


async def test_read_timeout_and_the_listener_keeps_serving(tmp_path, sink, session):
    async with http_filter(tmp_path, sink.port) as f:
        f.http.read_timeout = 0.3
        reader, writer = await asyncio.open_connection("127.0.0.1", f.http_port)
        writer.write(
            b"POST /mxdeliv HTTP/1.1\r\nHost: x\r\nX-MAIL-FROM: a@x\r\nX-MAIL-TO: b@y\r\n"
            b"Content-Length: 100\r\n\r\nonly part of it"
        )
        status_line = await asyncio.wait_for(reader.readline(), 10)
        assert status_line.startswith(b"HTTP/1.1 408")
        writer.close()
        assert await post(session, f.http_port, stuff_body(encrypted())) == (200, "250 OK")
    assert len(sink.messages) == 1


async def test_smtp_and_http_share_the_filter(tmp_path, sink, session):
    message = encrypted()
    async with http_filter(tmp_path, sink.port) as f:
        client = await Client.connect(f.port)
        results = await asyncio.gather(
            client.send_mail(SENDER, [LOCAL], message),
            *(post(session, f.http_port, stuff_body(message)) for _ in range(5)),
        )
        await client.close()
        assert results[0][0] == 250
        assert results[1:] == [(200, "250 OK")] * 5
        assert f.server.handler.metrics.encrypted.value == 6
    assert [m.data for m in sink.messages] == [message] * 6


async def test_a_failing_handler_is_a_temporary_refusal(tmp_path, sink, session, monkeypatch):
    async with http_filter(tmp_path, sink.port) as f:
        handler = f.server.handler
        real = handler.on_message

        async def broken(tx, via=""):
            raise RuntimeError("bug")

        monkeypatch.setattr(handler, "on_message", broken)
        status, text = await post(session, f.http_port, stuff_body(encrypted()))
        assert (status, text) == (400, "451 4.3.0 Error: internal error, try again later")
        monkeypatch.setattr(handler, "on_message", real)
        assert await post(session, f.http_port, stuff_body(encrypted())) == (200, "250 OK")
    assert len(sink.messages) == 1


async def test_shutdown_lets_a_delivery_in_progress_finish(tmp_path, sink, session):
    body = stuff_body(encrypted())
    async with http_filter(tmp_path, sink.port) as f:
        held = asyncio.create_task(post(session, f.http_port, body, rcpts=["hold@chat.example"]))
        await asyncio.wait_for(sink.held.wait(), 10)
        stopping = asyncio.create_task(f.http.shutdown())
        await asyncio.sleep(0.3)
        assert not stopping.done()
        with pytest.raises(aiohttp.ClientConnectionError):  # no longer listening
            await post(session, f.http_port, body)
        sink.release.set()
        assert await held == (200, "250 OK")
        await asyncio.wait_for(stopping, 10)
    assert len(sink.messages) == 1
