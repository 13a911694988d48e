"""A small sans-I/O HTTP/1.1 server codec: bytes in, requests out; responses to bytes.

Enough for what nginx sends to an upstream: request line, headers, a Content-Length body.
Bounded: a head over 16 KiB is 431, a body over 64 KiB is 413; chunked bodies are refused
(501) since nginx buffers request bodies and sends a Content-Length. A malformed request is
an `HttpError` carrying the status to answer before closing.
"""

from http import HTTPStatus
from typing import NamedTuple

MAX_HEAD = 16 * 1024
MAX_BODY = 64 * 1024
_END = b"\r\n\r\n"


class HttpError(Exception):
    def __init__(self, status: int, why: str):
        super().__init__(why)
        self.status = status


class Request(NamedTuple):
    method: str
    target: str
    version: str
    headers: dict  # lower-cased name -> value (the last one wins)
    body: bytes

    @property
    def path(self):
        return self.target.split("?", 1)[0]

    @property
    def keep_alive(self):
        conn = self.headers.get("connection", "").lower()
        if self.version == "HTTP/1.0":
            return conn == "keep-alive"
        return conn != "close"


def _parse_head(head: bytes):
    try:
        text = head.decode("latin-1")
    except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes any byte
        raise HttpError(400, "undecodable head") from None
    lines = text.split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or parts[2] not in ("HTTP/1.1", "HTTP/1.0") or not parts[1]:
        raise HttpError(400, f"bad request line {lines[0][:80]!r}")
    headers = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise HttpError(400, f"bad header line {line[:80]!r}")
        headers[name.lower()] = value.strip()
    return parts[0], parts[1], parts[2], headers


def _body_length(headers):
    if "transfer-encoding" in headers:
        raise HttpError(501, "transfer-encoding not supported")
    value = headers.get("content-length", "0")
    if not value.isdigit():
        raise HttpError(400, f"bad content-length {value[:20]!r}")
    length = int(value)
    if length > MAX_BODY:
        raise HttpError(413, "body too large")
    return length


class RequestParser:
    """Feed bytes, get the complete requests (pipelined ones too) in order."""

    def __init__(self):
        self._buf = bytearray()
        self._searched = 0  # no head end before this offset: drip-fed input stays linear
        self._pending = None  # (method, target, version, headers, body length) after the head

    def feed(self, data: bytes) -> list[Request]:
        self._buf += data
        out = []
        while True:
            if self._pending is None:
                end = self._buf.find(_END, self._searched)
                if end < 0:
                    if len(self._buf) > MAX_HEAD:
                        raise HttpError(431, "request head too large")
                    self._searched = max(0, len(self._buf) - len(_END) + 1)
                    return out
                if end > MAX_HEAD:
                    raise HttpError(431, "request head too large")
                method, target, version, headers = _parse_head(bytes(self._buf[:end]))
                self._pending = (method, target, version, headers, _body_length(headers))
                del self._buf[: end + len(_END)]
                self._searched = 0
            method, target, version, headers, length = self._pending
            if len(self._buf) < length:
                return out
            body = bytes(self._buf[:length])
            del self._buf[:length]
            self._pending = None
            out.append(Request(method, target, version, headers, body))


def response(
    status: int,
    body: bytes = b"",
    content_type="text/plain; charset=utf-8",
    keep_alive=True,
    headers=(),
) -> bytes:
    """The bytes of one HTTP/1.1 response."""
    lines = [
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}",
        f"Content-Type: {content_type}",
        f"Content-Length: {len(body)}",
        "Cache-Control: no-store",
    ]
    lines += [f"{name}: {value}" for name, value in headers]
    if not keep_alive:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
