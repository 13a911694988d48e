"""chatmail-web's HTTP server: aiohttp.web around WebApp.

aiohttp does the HTTP/1.1 wire work (parsing, keep-alive with nginx's upstream pool,
pipelining, errors); every request goes to one catch-all handler that asks WebApp what to
answer. No access log (no client addresses kept); a malformed request is one log line and a
400, never a traceback. A unix socket is made world-connectable (0666): nginx's workers run
as another user, and the socket only offers what port 443 offers anyway.
"""

import asyncio
import logging
import os

from aiohttp import HttpVersion11, web, web_protocol
from aiohttp.http_exceptions import HttpProcessingError

from .. import acceptor
from ..daemon import listen_error, stop_event

log = logging.getLogger("chatmaild.web")

IDLE_TIMEOUT = 75.0  # above nginx's upstream keepalive_timeout (60 s)
MAX_BODY = 64 * 1024  # /new takes no body; nginx buffers what a client sends
SHUTDOWN_TIMEOUT = 5.0
LINGER = 2.0  # after refusing a body: how long unread body bytes are drained before closing


class _OneLineErrors:
    """aiohttp's per-connection logger: a client's malformed request is one line without a
    traceback; anything else (a bug in a handler) keeps its traceback."""

    def __init__(self, logger):
        self._log = logger

    def exception(self, msg, *args, exc_info=None, **kwargs):
        if isinstance(exc_info, HttpProcessingError):
            self._log.info("bad request (%d): %s", exc_info.code, _first_line(exc_info.message))
        else:
            self._log.error(msg, *args, exc_info=exc_info or True, **kwargs)

    def debug(self, msg, *args, exc_info=None, **kwargs):
        # aiohttp logs a first request with a bad method (non-HTTP traffic) at debug level
        if isinstance(exc_info, HttpProcessingError):
            self.exception(msg, *args, exc_info=exc_info)
        elif self._log.isEnabledFor(logging.DEBUG):
            self._log.debug(msg, *args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._log, name)


def _first_line(text, limit=200):
    return (str(text).strip().splitlines() or [""])[0][:limit]


def _handler(app):
    async def handle(request):
        if (request.content_length or 0) > MAX_BODY:
            response = web.Response(status=413, text="body too large\n")
            response.force_close()
            return response
        status, body, ctype, headers = app.handle(request)
        return web.Response(
            status=status,
            body=body,
            headers={"Content-Type": ctype, "Cache-Control": "no-store", **dict(headers)},
        )

    return handle


def _request_factory(loop):
    """aiohttp stands an unparsable request in with an HTTP/1.0 placeholder; answer it in
    HTTP/1.1, which then says `Connection: close` explicitly."""

    def make(message, payload, protocol, writer, task):
        if message is web_protocol.ERROR:
            message = message._replace(version=HttpVersion11)
        return web.BaseRequest(message, payload, protocol, writer, task, loop)

    return make


async def serve(app, listen):
    """Listen on `listen` (a metrics.exporter.ListenSpec); returns (server, http): the
    listening asyncio server and the aiohttp server that owns the connections."""
    loop = asyncio.get_running_loop()
    http = web.Server(
        _handler(app),
        request_factory=_request_factory(loop),
        access_log=None,
        keepalive_timeout=IDLE_TIMEOUT,
        lingering_time=LINGER,
        logger=_OneLineErrors(log),
    )
    where = listen.describe()
    if listen.path is not None:
        try:
            os.makedirs(os.path.dirname(listen.path), exist_ok=True)
        except OSError as e:
            raise listen_error(where, e) from None
    # our acceptor, not the loop's: it logs (rate-limited) when descriptors run out
    server = acceptor.listen(listen, http, where, mode=0o666)
    log.info("listening on %s", where)
    return server, http


async def serve_until_signalled(app, listen):
    stop = stop_event()
    server, http = await serve(app, listen)
    try:
        await stop.wait()
        log.info("shutting down (%d accounts handed out)", app.handed_out)
    finally:
        await acceptor.close_http(server, http, SHUTDOWN_TIMEOUT)
        if listen.path is not None:
            try:
                os.unlink(listen.path)
            except FileNotFoundError:
                pass
