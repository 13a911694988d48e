"""A tiny HTTP responder for `GET /metrics`, served by the daemon's own asyncio loop.

The daemons must never run a thread beside their event loop just to be scraped, so this is an
`asyncio.Protocol` that reads one request head (bounded), answers it with the exposition of a
`CollectorRegistry` in the format the scraper asked for (OpenMetrics or text 0.0.4) and closes
the connection. Parsing of the listen spec and of the request head is pure and tested alone.
"""

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path

from prometheus_client.exposition import choose_encoder

from chatmaild import acceptor

log = logging.getLogger(__name__)

MAX_REQUEST_HEAD = 8192
REQUEST_TIMEOUT = 10.0


@dataclass(frozen=True, slots=True)
class ListenSpec:
    """Where an endpoint listens: `host`/`port` for TCP, or `path` for a unix socket."""

    host: str = ""
    port: int = 0
    path: Path | None = None

    def describe(self) -> str:
        if self.path is not None:
            return f"unix:{self.path}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def parse_listen_spec(spec: str) -> ListenSpec | None:
    """`""` -> None (off); `127.0.0.1:9100`, `[::1]:9100`, `unix:/run/x.sock` -> ListenSpec.

    Raises ValueError with a short reason for anything else.
    """
    spec = spec.strip()
    if not spec:
        return None
    if spec.startswith("unix:"):
        path = spec[len("unix:") :]
        if not path.startswith("/"):
            raise ValueError(f"unix socket path must be absolute: {spec!r}")
        return ListenSpec(path=Path(path))
    if spec.startswith("["):
        host, sep, port = spec[1:].partition("]:")
        if not sep:
            raise ValueError(f"expected [HOST]:PORT: {spec!r}")
    else:
        host, sep, port = spec.rpartition(":")
        if not sep or not host or ":" in host:
            raise ValueError(f"expected HOST:PORT or unix:/path: {spec!r}")
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"bad port in {spec!r}")
    return ListenSpec(host=host, port=int(port))


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    target: str
    accept: str


def parse_request_head(head: bytes) -> Request | None:
    """Parse an HTTP/1.x request head (up to and without the blank line); None if malformed."""
    try:
        text = head.decode("latin-1")
    except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes everything
        return None
    lines = text.split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        return None
    accept = ""
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep:
            return None
        if name.strip().lower() == "accept":
            accept = value.strip()
    return Request(method=parts[0], target=parts[1], accept=accept)


def render(registry, accept: str) -> tuple[bytes, str]:
    """The exposition of `registry` in the format `accept` asks for, and its content type."""
    encoder, content_type = choose_encoder(accept)
    return encoder(registry), content_type


def _response(status: str, content_type: str, body: bytes, extra: str = "") -> bytes:
    head = (
        f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n{extra}Connection: close\r\n\r\n"
    )
    return head.encode("latin-1") + body


def respond(registry, head: bytes) -> bytes:
    """The whole HTTP response for one request head."""
    request = parse_request_head(head)
    if request is None:
        return _response("400 Bad Request", "text/plain", b"bad request\n")
    if request.method not in ("GET", "HEAD"):
        return _response("405 Method Not Allowed", "text/plain", b"", "Allow: GET, HEAD\r\n")
    path = request.target.split("?", 1)[0]
    if path not in ("/metrics", "/"):
        return _response("404 Not Found", "text/plain", b"try /metrics\n")
    try:
        body, content_type = render(registry, request.accept)
    except Exception:
        log.exception("metrics: collecting the registry failed")
        return _response("500 Internal Server Error", "text/plain", b"collect failed\n")
    if request.method == "HEAD":
        head_only = _response("200 OK", content_type, body)
        return head_only[: len(head_only) - len(body)]
    return _response("200 OK", content_type, body)


class MetricsProtocol(asyncio.Protocol):
    """One connection: read a request head, write the response, close."""

    def __init__(self, registry):
        self._registry = registry
        self._buffer = bytearray()
        self._transport = None
        self._timeout = None

    def connection_made(self, transport):
        self._transport = transport
        loop = asyncio.get_running_loop()
        self._timeout = loop.call_later(REQUEST_TIMEOUT, transport.close)

    def data_received(self, data):
        if self._transport is None or self._transport.is_closing():
            return
        self._buffer += data
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(self._buffer) > MAX_REQUEST_HEAD:
                self._finish(_response("431 Request Header Fields Too Large", "text/plain", b""))
            return
        if end > MAX_REQUEST_HEAD:
            self._finish(_response("431 Request Header Fields Too Large", "text/plain", b""))
            return
        self._finish(respond(self._registry, bytes(self._buffer[:end])))

    def _finish(self, response: bytes):
        self._transport.write(response)
        self._transport.close()

    def connection_lost(self, exc):
        if self._timeout is not None:
            self._timeout.cancel()
        self._transport = None


async def start_exporter(spec: str | ListenSpec | None, registry) -> acceptor.Acceptor | None:
    """Serve `registry` at `spec` on the running loop; None when the spec is off.

    A unix socket path has a stale socket file replaced and gets mode 0660. The caller closes
    the returned server on shutdown (`server.close(); await server.wait_closed()`).
    """
    if isinstance(spec, str):
        spec = parse_listen_spec(spec)
    if spec is None:
        return None
    # our acceptor, not the loop's: it logs (rate-limited) when descriptors run out
    what = f"{spec.describe()} (metrics)"
    server = acceptor.listen(spec, lambda: MetricsProtocol(registry), what, mode=0o660)
    log.info("metrics endpoint on %s", spec.describe())
    return server


def bound_address(server: acceptor.Acceptor) -> tuple[str, int] | str:
    """The first listening address (host, port) or unix path; handy with port 0."""
    sock = server.sockets[0]
    name = sock.getsockname()
    return name if isinstance(name, str) else (name[0], name[1])


class ExportingService:
    """A Dovecot dict service plus its metrics endpoint, for `run_dict_service`.

    The dict server calls `start()` inside its event loop before listening and `close()` after
    shutdown; the endpoint lives and dies with them. `lookup`, `iterate` and `commit` are the
    wrapped service's own bound methods, so the wrapper adds no cost per request.
    """

    def __init__(self, service, spec: str, registry):
        self.service = service
        self.lookup = service.lookup
        self.iterate = service.iterate
        self.commit = service.commit
        self._spec = spec
        self._registry = registry
        self._server = None

    async def start(self):
        start = getattr(self.service, "start", None)
        if start is not None:
            result = start()
            if asyncio.iscoroutine(result) or isinstance(result, asyncio.Future):
                await result
        self._server = await start_exporter(self._spec, self._registry)

    async def close(self):
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        close = getattr(self.service, "close", None)
        if close is not None:
            result = close()
            if asyncio.iscoroutine(result) or isinstance(result, asyncio.Future):
                await result
