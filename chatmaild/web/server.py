"""chatmail-web's HTTP server: an asyncio Protocol around httpproto and WebApp.

Keep-alive connections from nginx (an upstream `keepalive` pool), an idle timeout by
`call_later` handle (no task per connection), every complete request of a chunk answered in
one write. A unix socket is made world-connectable (0666): nginx's workers run as another
user, and the socket only offers what port 443 offers anyway.
"""

import asyncio
import logging
import os
import signal

from ..daemon import listen_error, remove_stale_socket
from .httpproto import HttpError, RequestParser, response

log = logging.getLogger("chatmaild.web")

IDLE_TIMEOUT = 75.0  # above nginx's upstream keepalive_timeout (60 s)


class HttpConnection(asyncio.Protocol):
    def __init__(self, app, connections, idle_timeout=IDLE_TIMEOUT):
        self.app = app
        self.connections = connections
        self.idle_timeout = idle_timeout
        self.parser = RequestParser()
        self.transport = None
        self._timer = None

    def connection_made(self, transport):
        self.transport = transport
        self.connections.add(self)
        self._arm()

    def _arm(self):
        if self._timer is not None:
            self._timer.cancel()
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self.idle_timeout, self.transport.close)

    def data_received(self, data):
        self._arm()
        try:
            requests = self.parser.feed(data)
        except HttpError as e:
            body = f"{e}\n".encode()
            self.transport.write(response(e.status, body, keep_alive=False))
            self.transport.close()
            return
        out = []
        close = False
        for request in requests:
            status, body, ctype, headers = self.app.handle(request)
            close = not request.keep_alive
            out.append(response(status, body, ctype, keep_alive=not close, headers=headers))
            if close:
                break
        if out:
            self.transport.write(b"".join(out))
        if close:
            self.transport.close()

    def connection_lost(self, exc):
        if self._timer is not None:
            self._timer.cancel()
        self.connections.discard(self)


async def serve(app, listen):
    """Listen on `listen` (a metrics.exporter.ListenSpec); returns (server, connections)."""
    loop = asyncio.get_running_loop()
    connections = set()

    def factory():
        return HttpConnection(app, connections)

    where = listen.describe()
    try:
        if listen.path is not None:
            path = os.fspath(listen.path)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            remove_stale_socket(path)
            server = await loop.create_unix_server(factory, path=path, backlog=1024)
            os.chmod(path, 0o666)
        else:
            server = await loop.create_server(
                factory, listen.host, listen.port, backlog=1024, reuse_address=True
            )
    except OSError as e:
        raise listen_error(where, e) from None
    log.info("listening on %s", where)
    return server, connections


async def serve_until_signalled(app, listen):
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    server, connections = await serve(app, listen)
    try:
        await stop.wait()
        log.info("shutting down (%d accounts handed out)", app.handed_out)
    finally:
        server.close()
        for conn in list(connections):
            conn.transport.close()
        if listen.path is not None:
            try:
                os.unlink(listen.path)
            except FileNotFoundError:
                pass
