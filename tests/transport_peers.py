"""Real local peers for the transport tests: an aiohttp HTTPS server answering
`POST /mxdeliv` as told, an aiosmtpd SMTP server that requires STARTTLS, both with
certificates for `localhost` from a trustme CA, and a raw LMTP client that reads one reply
per recipient after DATA (as Postfix's LMTP client does)."""

import asyncio
import ssl
from dataclasses import dataclass, field

import trustme
from aiohttp import web
from aiosmtpd.smtp import SMTP as AioSMTP

from chatmaild.transport.mx import Records


@dataclass
class Posted:
    headers: list
    body: bytes


class HttpsPeer:
    """`status`/`text` answer every POST (`delay` seconds later); `posts` records them."""

    def __init__(self, cert_ctx, status=200, text="250 OK", delay=0.0):
        self.cert_ctx = cert_ctx
        self.status = status
        self.text = text
        self.delay = delay
        self.posts: list[Posted] = []
        self.peers = set()  # client (address, port) of each connection: one TLS handshake each
        self.port = None
        self._runner = None

    async def _handle(self, request):
        body = await request.read()
        self.peers.add(request.transport.get_extra_info("peername"))
        self.posts.append(Posted(list(request.headers.items()), body))
        if self.delay:
            await asyncio.sleep(self.delay)
        return web.Response(status=self.status, text=self.text)

    async def start(self):
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/mxdeliv", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=self.cert_ctx)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]
        return self

    async def stop(self):
        await self._runner.cleanup()


@dataclass
class SmtpPeer:
    """aiosmtpd requiring STARTTLS; `refuse`: {address: reply}; `messages` records
    (mail_from, rcpt_tos, content)."""

    cert_ctx: ssl.SSLContext
    refuse: dict = field(default_factory=dict)
    data_reply: str = "250 2.0.0 Ok: queued as TEST"
    messages: list = field(default_factory=list)
    sessions: int = 0
    port: int | None = None
    server: object = None

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address in self.refuse:
            return self.refuse[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
        return self.data_reply

    async def start(self):
        loop = asyncio.get_running_loop()

        def factory():
            self.sessions += 1
            return AioSMTP(
                self, hostname="localhost", tls_context=self.cert_ctx, require_starttls=True
            )

        self.server = await loop.create_server(factory, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def stop(self):
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
            self.server = None


class Certs:
    def __init__(self):
        self.ca = trustme.CA()
        self.leaf = self.ca.issue_cert("localhost", "127.0.0.1")

    def server_context(self, leaf=None):
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        (leaf or self.leaf).configure_cert(ctx)
        return ctx

    def client_context(self):
        ctx = ssl.create_default_context()
        self.ca.configure_trust(ctx)
        return ctx


class StubResolver:
    """MX answers from a dict {domain: outcome}; unknown domains: MX localhost."""

    def __init__(self, answers=None):
        self.answers = answers or {}
        self.lookups = []

    async def lookup(self, domain):
        self.lookups.append(domain)
        return self.answers.get(domain, Records(((10, "localhost."),)))


async def lmtp_send(port, mail_from, rcpts, message: bytes):
    """One LMTP transaction; returns (RCPT replies, DATA replies for the accepted ones)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)

    async def reply():
        lines = []
        while True:
            line = await reader.readline()
            lines.append(line.decode().rstrip("\r\n"))
            if line[3:4] != b"-":
                return int(lines[-1][:3]), lines[-1][4:]

    try:
        assert (await reply())[0] == 220
        writer.write(b"LHLO test\r\n")
        assert (await reply())[0] == 250
        writer.write(f"MAIL FROM:<{mail_from}>\r\n".encode())
        assert (await reply())[0] == 250
        rcpt_replies = []
        for rcpt in rcpts:
            writer.write(f"RCPT TO:<{rcpt}>\r\n".encode())
            rcpt_replies.append(await reply())
        accepted = sum(1 for code, _ in rcpt_replies if code == 250)
        writer.write(b"DATA\r\n")
        assert (await reply())[0] == 354
        body = message.replace(b"\r\n.", b"\r\n..")
        writer.write(body + b".\r\n")
        data_replies = [await reply() for _ in range(accepted)]
        writer.write(b"QUIT\r\n")
        await reply()
        return rcpt_replies, data_replies
    finally:
        writer.close()
