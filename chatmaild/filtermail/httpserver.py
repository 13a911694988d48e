"""filtermail incoming's HTTP listener for relay-to-relay delivery (`POST /mxdeliv`).

nginx terminates TLS and proxies `/mxdeliv` here (127.0.0.1, HTTP/1.1). A request is parsed
and validated by `mxdeliv` (the wire form), then decided and reinjected by the same
`FilterHandler.on_message` as a message over SMTP: the same encryption rules, DKIM check
and per-recipient rules, the same reinjection to Postfix. 200 is answered only after
Postfix accepted the message.

The client address for an IP-literal From (the SMTP path's XFORWARD ADDR) is nginx's
`X-Real-IP`, which our nginx sets to the address it received the request from, replacing
anything the client sent. The listener is reachable only on loopback; a request without
(or with more than one) `X-Real-IP` has no client address, so an IP-literal From fails.

Limits: at most `max_requests` requests at once (more answer 503 before the body is read),
`read_timeout` seconds per read of the body (then 408), bodies up to `max_message_size`
(413 beyond, from Content-Length when given, without reading the body).
"""

import asyncio
import logging

from aiohttp import web

from chatmaild import acceptor
from chatmaild.smtp.proto import Transaction
from chatmaild.smtp.server import INTERNAL_ERROR

from . import mxdeliv

log = logging.getLogger("filtermail")

MAX_REQUESTS = 200
READ_TIMEOUT = 60.0
KEEPALIVE_TIMEOUT = 75.0  # an idle kept-alive connection (nginx keeps a few)
VIA = " (HTTP)"
CLIENT_ADDR_HEADER = "X-Real-IP"
BUSY = (503, "421 4.3.2 Too many deliveries at once, try again later")
SLOW = (408, "421 4.4.2 Timeout reading the message")


class _TooLarge(Exception):
    pass


class MxdelivServer:
    """The listener; `start()` binds, `port` is the bound port, `shutdown()` stops."""

    def __init__(
        self,
        handler,
        host: str,
        port: int,
        *,
        max_message_size: int,
        max_requests: int = MAX_REQUESTS,
        read_timeout: float = READ_TIMEOUT,
        backlog: int = 1024,
    ):
        self.handler = handler
        self.metrics = handler.metrics
        self.host = host
        self.port = port
        self.max_message_size = max_message_size
        self.max_requests = max_requests
        self.read_timeout = read_timeout
        self.backlog = backlog
        self.active = 0
        self._grace = 10.0
        self._http: web.Server | None = None
        self._listener: acceptor.Acceptor | None = None
        self.metrics.http_open_requests.set_function(lambda: self.active)

    async def start(self, grace: float = 10.0) -> None:
        """Bind and serve; `shutdown()` lets requests in progress finish for `grace` s."""
        sock = acceptor.tcp_listener(self.host, self.port, self.backlog)
        self.port = sock.getsockname()[1]
        self._grace = grace
        self._http = web.Server(
            self._handle,
            access_log=None,
            keepalive_timeout=KEEPALIVE_TIMEOUT,
            max_headers=mxdeliv.MAX_RECIPIENTS + 64,
            auto_decompress=False,
        )
        # our acceptor, not the loop's: it logs (rate-limited) when descriptors run out
        where = f"{self.host}:{self.port} (/mxdeliv)"
        self._listener = acceptor.start(sock, self._http, where)

    async def shutdown(self) -> None:
        """Stop listening; requests in progress get the `grace` given to `start()`."""
        listener, self._listener = self._listener, None
        if listener is not None:
            await acceptor.close_http(listener, self._http, self._grace)

    # -- one request ------------------------------------------------------------------------

    def _answer(self, status: int, text: str) -> web.Response:
        child = self.metrics.http_status.get(status)
        if child is not None:
            child.inc()
        return web.Response(status=status, text=text)

    def _refused(self, status: int, text: str, why: str, mail_from: str = "") -> web.Response:
        """Answer a request refused before the filter's decision, with one log line."""
        log.info(
            "Incoming: Refused mail from <%s>%s: %d %s (%s)",
            _printable(mail_from),
            VIA,
            status,
            text,
            why,
        )
        return self._answer(status, text)

    async def _handle(self, request: web.BaseRequest) -> web.Response:
        if request.method != "POST":
            status, text = mxdeliv.METHOD_NOT_ALLOWED
            method = _printable(request.method[:16])
            log.info("Incoming: Refused %s request%s: %d %s", method, VIA, status, text)
            return self._answer(status, text)
        if self.active >= self.max_requests:
            return self._refused(*BUSY, f"{self.active} requests in progress")
        self.active += 1
        try:
            return await self._deliver(request)
        finally:
            self.active -= 1

    async def _deliver(self, request: web.BaseRequest) -> web.Response:
        headers = request.headers
        mail_from = ""
        try:
            env = mxdeliv.parse_envelope(
                headers.getall(mxdeliv.HEADER_MAIL_FROM, []),
                headers.getall(mxdeliv.HEADER_RCPT_TO, []),
            )
            mail_from = env.mail_from
            length = request.content_length
            if length is not None and length > self.max_message_size:
                return self._refused(*mxdeliv.TOO_LARGE, f"Content-Length {length}", mail_from)
            try:
                body = await self._read_body(request)
            except _TooLarge:
                return self._refused(*mxdeliv.TOO_LARGE, "body too large", mail_from)
            except TimeoutError:
                return self._refused(*SLOW, "read timeout", mail_from)
            data, dots = mxdeliv.unstuff_body(body)
        except mxdeliv.Refused as refused:
            line = mxdeliv.smtp_line(refused.code, refused.text)
            return self._refused(mxdeliv.REFUSED_STATUS, line, "request form", mail_from)
        tx = Transaction(
            helo="mxdeliv",
            mail_from=env.mail_from,
            mail_params=_mail_params(env, data),
            rcpt_tos=env.rcpt_tos,
            data=data,
            unstuffed_dots=dots,
            xforward=_client_addr(headers),
        )
        try:
            reply = await self.handler.on_message(tx, via=VIA)
        except Exception:
            log.exception("mxdeliv handler failed")  # as the SMTP server does: 451, go on
            reply = INTERNAL_ERROR
        status, text = mxdeliv.http_reply(reply.code, reply.text)
        return self._answer(status, text)

    async def _read_body(self, request: web.BaseRequest) -> bytes:
        content = request.content
        limit = self.max_message_size
        chunks = []
        size = 0
        while True:
            async with asyncio.timeout(self.read_timeout):
                chunk = await content.readany()
            if not chunk:
                return b"".join(chunks)
            size += len(chunk)
            if size > limit:
                raise _TooLarge()
            chunks.append(chunk)


def _client_addr(headers) -> dict | None:
    """The XFORWARD-like attributes: ADDR from exactly one X-Real-IP header, else none."""
    values = headers.getall(CLIENT_ADDR_HEADER, [])
    if len(values) != 1 or not values[0].strip():
        return None
    return {"ADDR": values[0].strip()}


def _mail_params(env, data: bytes) -> dict:
    """MAIL parameters for the reinjection: SMTPUTF8 for a non-ASCII envelope address and
    BODY=8BITMIME for non-ASCII message bytes, as an SMTP client would have declared."""
    params = {}
    if not data.isascii():
        params["BODY"] = "8BITMIME"
    if not env.mail_from.isascii() or not all(r.isascii() for r in env.rcpt_tos):
        params["SMTPUTF8"] = True
    return params


def _printable(text: str) -> str:
    return text if text.isprintable() else "".join(c if c.isprintable() else "?" for c in text)
