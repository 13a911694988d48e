"""The HTTP/1.1 side of the relay, before any upgrade: request head in, decision out. No I/O.

Paths (iroh v0.35.0 `server.rs`, `server/http_server.rs`, `http.rs`):
- `GET /relay` (and the legacy `/derp`) with `Upgrade: iroh derp http`: 101 with the same
  Upgrade value, then relay frames. `Upgrade: websocket` (version 13, with a key): 101 with
  `Sec-WebSocket-Accept`, then one relay frame per binary message. Anything else: 400.
- `GET /ping`: 200, empty, `Access-Control-Allow-Origin: *` (latency probes).
- `GET /generate_204`: 204, answering a valid `X-Tailscale-Challenge` (under 64 characters of
  `[A-Za-z0-9._-]`) with `X-Tailscale-Response: response <challenge>` (captive portal check).
- `GET /`, `/index.html`: a short page; `GET /robots.txt`: disallow all. Others: 404.
HEAD is answered like GET without a body; other methods get 405.
"""

import base64
import hashlib
import re
from dataclasses import dataclass

MAX_HEAD = 8192
RELAY_PATHS = ("/relay", "/derp")
RELAY_UPGRADE = "iroh derp http"
WS_UPGRADE = "websocket"
WS_VERSION = "13"
WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
CHALLENGE = re.compile(r"[A-Za-z0-9._-]{1,63}")

INDEX = (
    b"<html><body>\n<h1>Iroh Relay</h1>\n<p>\n"
    b'  This is an <a href="https://iroh.computer/">Iroh</a> Relay server'
    b" (chatmail-iroh-relay).\n</p>\n"
)
ROBOTS = b"User-agent: *\nDisallow: /\n"

# upgrade kinds
RELAY = "relay"
WEBSOCKET = "websocket"


class HttpError(Exception):
    """A request head that cannot be answered normally; `status` is the reply."""

    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status = status


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    path: str
    version: str
    headers: dict  # lower-cased name -> value (the last one wins)

    @property
    def keep_alive(self) -> bool:
        connection = self.headers.get("connection", "").lower()
        if self.version == "HTTP/1.0":
            return "keep-alive" in connection
        return "close" not in connection


@dataclass(frozen=True, slots=True)
class Reply:
    """What to do with one request: `response` bytes to write; `upgrade` is RELAY or
    WEBSOCKET when the connection switches to relay frames after them; `close` ends it."""

    status: int
    response: bytes
    upgrade: str | None = None
    close: bool = False


def split_head(buffer: bytes | bytearray) -> int:
    """Index just past the blank line ending the head, 0 while incomplete; HttpError (431)
    when the head is longer than MAX_HEAD."""
    end = buffer.find(b"\r\n\r\n", 0, MAX_HEAD + 4)
    if end < 0:
        if len(buffer) > MAX_HEAD:
            raise HttpError(431, "request head too large")
        return 0
    return end + 4


def parse_head(head: bytes) -> Request:
    try:
        text = head.decode("latin-1")
    except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes everything
        raise HttpError(400, "undecodable request head") from None
    lines = text.rstrip("\r\n").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or parts[2] not in ("HTTP/1.1", "HTTP/1.0"):
        raise HttpError(400, "bad request line")
    method, target, version = parts
    headers = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise HttpError(400, "bad header line")
        headers[name.lower()] = value.strip()
    if "transfer-encoding" in headers or headers.get("content-length", "0") != "0":
        raise HttpError(400, "request bodies are not accepted")
    path = target.split("?", 1)[0]
    return Request(method, path, version, headers)


STATUS_TEXT = {
    101: "Switching Protocols",
    200: "OK",
    204: "No Content",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    431: "Request Header Fields Too Large",
    503: "Service Unavailable",
}


def response(
    status: int,
    body: bytes = b"",
    headers: tuple = (),
    close: bool = False,
    head_only: bool = False,
) -> bytes:
    lines = [f"HTTP/1.1 {status} {STATUS_TEXT[status]}"]
    lines += [f"{name}: {value}" for name, value in headers]
    if status not in (101, 204):
        lines.append(f"Content-Length: {len(body)}")
    if close:
        lines.append("Connection: close")
    out = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return out if head_only or status in (101, 204) else out + body


def error_reply(error: HttpError) -> Reply:
    body = f"{error}\n".encode()
    return Reply(error.status, response(error.status, body, close=True), close=True)


def ws_accept(key: str) -> str:
    digest = hashlib.sha1(key.encode("latin-1") + WS_GUID).digest()  # noqa: S324 (RFC 6455)
    return base64.b64encode(digest).decode()


def _upgrade(request: Request, full: bool) -> Reply:
    if full:
        return Reply(503, response(503, b"relay full\n", close=True), close=True)
    upgrade = request.headers.get("upgrade", "")
    if upgrade == RELAY_UPGRADE:
        return Reply(101, response(101, headers=(("Upgrade", RELAY_UPGRADE),)), upgrade=RELAY)
    if upgrade.lower() == WS_UPGRADE:
        key = request.headers.get("sec-websocket-key")
        version = request.headers.get("sec-websocket-version")
        if not key:
            return _bad(request, "missing Sec-WebSocket-Key")
        if version != WS_VERSION:
            headers = (("Sec-WebSocket-Version", WS_VERSION),)
            body = b"unsupported WebSocket version\n"
            return Reply(400, response(400, body, headers, close=True), close=True)
        headers = (
            ("Upgrade", WS_UPGRADE),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Accept", ws_accept(key)),
        )
        return Reply(101, response(101, headers=headers), upgrade=WEBSOCKET)
    return _bad(request, "expected Upgrade: iroh derp http or websocket")


def _bad(request: Request, reason: str) -> Reply:
    """A refused upgrade ends the connection (its client meant to stop speaking HTTP)."""
    body = f"{reason}\n".encode()
    return Reply(400, response(400, body, close=True), close=True)


def _generate_204(request: Request, head_only: bool, close: bool) -> Reply:
    challenge = request.headers.get("x-tailscale-challenge", "")
    headers = ()
    if CHALLENGE.fullmatch(challenge):
        headers = (("X-Tailscale-Response", f"response {challenge}"),)
    return Reply(204, response(204, headers=headers, close=close), close=close)


def answer(request: Request, full: bool = False) -> Reply:
    """The reply to one parsed request; `full`: no room for another relay client."""
    if request.method == "GET" and request.path in RELAY_PATHS:
        return _upgrade(request, full)
    close = not request.keep_alive
    if request.method not in ("GET", "HEAD"):
        headers = (("Allow", "GET, HEAD"),)
        return Reply(405, response(405, b"", headers, close=close), close=close)
    head_only = request.method == "HEAD"
    if request.path == "/generate_204":
        return _generate_204(request, head_only, close)
    if request.path == "/ping":
        headers = (("Access-Control-Allow-Origin", "*"),)
        return Reply(200, response(200, b"", headers, close, head_only), close=close)
    if request.path in ("/", "/index.html"):
        headers = (("Content-Type", "text/html; charset=utf-8"),)
        return Reply(200, response(200, INDEX, headers, close, head_only), close=close)
    if request.path == "/robots.txt":
        headers = (("Content-Type", "text/plain"),)
        return Reply(200, response(200, ROBOTS, headers, close, head_only), close=close)
    return Reply(404, response(404, b"Not Found", (), close, head_only), close=close)
