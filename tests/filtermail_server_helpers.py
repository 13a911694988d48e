"""Helpers for the filtermail server tests: an aiosmtpd recording sink on the test's loop,
a raw SMTP client that sends exact bytes, and an in-process filter on an ephemeral port
(with its /mxdeliv HTTP listener when asked)."""

import asyncio
import socket
from dataclasses import dataclass

from aiosmtpd.smtp import SMTP as AiosmtpdSMTP

from chatmaild.config import read_config
from chatmaild.filtermail.app import build_http_server, build_server

from conftest import write_ini


@dataclass
class Received:
    mail_from: str
    mail_options: list
    rcpt_tos: list
    data: bytes
    peer: tuple


class RecordingSink:
    """Records every message; special recipients trigger refusals or a held reply.

    nouser@...   RCPT gets 550 5.1.1
    busy@...     RCPT gets 452 4.2.2
    tempdata@... end of DATA gets 451 4.3.5
    hold@...     end of DATA waits until `release` is set (`held` is set on arrival)
    """

    def __init__(self):
        self.messages: list[Received] = []
        self.protocols = []
        self.held = asyncio.Event()
        self.release = asyncio.Event()
        self.server = None
        self.port = None
        self.arrived = asyncio.Condition()

    async def start(self, port=0):
        loop = asyncio.get_running_loop()

        def factory():
            proto = AiosmtpdSMTP(self, enable_SMTPUTF8=True, hostname="sink.test")
            self.protocols.append(proto)
            return proto

        self.server = await loop.create_server(factory, "127.0.0.1", port)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def stop(self):
        """Stop listening and close every connection; a held delivery is released first."""
        self.release.set()
        self.server.close()
        for proto in self.protocols:
            if proto.transport is not None:
                proto.transport.close()

    def close_connections(self):
        """Close every open connection from the server side (idle timeout)."""
        for proto in self.protocols:
            if proto.transport is not None and not proto.transport.is_closing():
                proto.transport.close()

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.startswith("nouser@"):
            return f"550 5.1.1 <{address}>: Recipient address rejected: User unknown"
        if address.startswith("busy@"):
            return f"452 4.2.2 <{address}>: Mailbox full, try again later"
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 Ok"

    async def handle_DATA(self, server, session, envelope):
        if any(r.startswith("hold@") for r in envelope.rcpt_tos):
            self.held.set()
            await self.release.wait()
        if any(r.startswith("tempdata@") for r in envelope.rcpt_tos):
            return "451 4.3.5 Server configuration problem"
        self.messages.append(
            Received(
                envelope.mail_from,
                list(envelope.mail_options),
                list(envelope.rcpt_tos),
                envelope.original_content,
                session.peer,
            )
        )
        async with self.arrived:
            self.arrived.notify_all()
        return f"250 2.0.0 Ok: queued as {len(self.messages)}"

    async def wait_for(self, count, timeout=10):
        async with self.arrived:
            await asyncio.wait_for(
                self.arrived.wait_for(lambda: len(self.messages) >= count), timeout
            )


def stuff(data: bytes) -> bytes:
    """Client-side dot stuffing and the final dot (data has CRLF line ends)."""
    lines = data.split(b"\r\n")
    if lines and lines[-1] == b"":
        lines.pop()
    out = b"".join((b"." + line if line.startswith(b".") else line) + b"\r\n" for line in lines)
    return out + b".\r\n"


class Client:
    """A raw SMTP client: exact bytes out, replies parsed as (code, text)."""

    def __init__(self, reader, writer):
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, port, ehlo=True):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        client = cls(reader, writer)
        code, _ = await client.reply()
        assert code == 220
        if ehlo:
            code, text = await client.cmd(b"EHLO client.test")
            assert code == 250, text
        return client

    async def reply(self):
        lines = []
        while True:
            line = await asyncio.wait_for(self.reader.readline(), 30)
            if not line:
                raise ConnectionError("closed by server")
            lines.append(line[4:].rstrip(b"\r\n").decode("utf-8", "replace"))
            if line[3:4] != b"-":
                return int(line[:3]), "\n".join(lines)

    async def replies(self, count):
        return [await self.reply() for _ in range(count)]

    def write(self, data: bytes):
        self.writer.write(data)

    async def cmd(self, line: bytes):
        self.writer.write(line + b"\r\n")
        return await self.reply()

    async def send_mail(self, mail_from, rcpts, data: bytes, params=b"", xforward=b""):
        """One transaction in lock-step like Postfix; returns the final (code, text).

        `xforward` (e.g. b"ADDR=192.0.2.1"): an XFORWARD command first, as Postfix sends
        the client's attributes to a filter that announces XFORWARD.
        """
        if xforward:
            code, text = await self.cmd(b"XFORWARD " + xforward)
            if code != 250:
                return code, text
        code, text = await self.cmd(b"MAIL FROM:<" + mail_from.encode() + b">" + params)
        if code != 250:
            return code, text
        for rcpt in rcpts:
            code, text = await self.cmd(b"RCPT TO:<" + rcpt.encode() + b">")
            if code != 250:
                return code, text
        code, text = await self.cmd(b"DATA")
        if code != 354:
            return code, text
        self.writer.write(stuff(data))
        return await self.reply()

    async def close(self):
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except ConnectionError:
            pass


def closed_port() -> int:
    """A loopback port with nothing listening (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Filter:
    """An in-process filter of `mode` on an ephemeral port, re-injecting to `reinject_port`.

    DKIM verification of incoming mail is off unless the test passes
    `filtermail_dkim_check="true"` (most tests send unsigned mail); `key_fetcher` then sets
    where the keys come from.
    """

    def __init__(self, tmp_path, mode, reinject_port, key_fetcher=None, http=False, **params):
        params.setdefault("filtermail_dkim_check", "false")
        ini = write_ini(
            tmp_path / "chatmail.ini",
            mailboxes_dir=tmp_path / "mailboxes",
            postfix_reinject_port=reinject_port,
            postfix_reinject_port_incoming=reinject_port,
            **params,
        )
        self.config = read_config(ini)
        self.server, self.reinjector = build_server(
            self.config, mode, listen_port=0, key_fetcher=key_fetcher
        )
        # `http=True`: the /mxdeliv listener too, on its own ephemeral port (`http_port`)
        self.http = build_http_server(self.config, self.server, listen_port=0) if http else None

    async def __aenter__(self):
        await self.server.start()
        self.port = self.server.port
        if self.http is not None:
            await self.http.start(grace=1)
            self.http_port = self.http.port
        return self

    async def __aexit__(self, *exc):
        if self.http is not None:
            await self.http.shutdown()
        await self.server.shutdown(grace=1)
        await self.reinjector.close()
