"""chatmail-web's HTTP over a real unix socket (aiohttp): requests whole, byte by byte and
pipelined; HTTP/1.0 keep-alive; every refusal is an answer and one log line, and the
server keeps serving."""

import asyncio
import json
import logging

import pytest

from chatmaild.config import read_config
from chatmaild.doveauth.rules import Resources
from chatmaild.metrics.exporter import ListenSpec
from chatmaild.web.app import WebApp
from chatmaild.web.server import MAX_BODY, serve

IDLE = Resources(load_1m=0.1, available_memory=10**10, free_disk=10**12)
POST = b"POST /new HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
GET = b"GET /cgi-bin/newemail.py?x=1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"


def _responses(data):
    """[(status line, {lower-case header: value}, body)] of Content-Length framed answers."""
    out = []
    while data:
        head, _, rest = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {k.lower(): v for k, _, v in (x.partition(": ") for x in lines[1:])}
        length = int(headers["content-length"])
        out.append((lines[0], headers, rest[:length]))
        data = rest[length:]
    return out


@pytest.fixture
async def web(ini_path, tmp_path):
    app = WebApp(read_config(ini_path), read_resources=lambda _: IDLE)
    path = tmp_path / "web.socket"
    server, http = await serve(app, ListenSpec(path=path))
    try:
        yield app, path
    finally:
        server.close()
        await http.shutdown(1)


async def _talk(path, chunks, timeout=10):
    """Send `chunks` one by one, read until the server closes."""
    reader, writer = await asyncio.open_unix_connection(str(path))
    for chunk in chunks:
        writer.write(chunk)
        await writer.drain()
    data = await asyncio.wait_for(reader.read(), timeout)
    writer.close()
    return data


@pytest.mark.parametrize("split", ["whole", "bytewise"])
async def test_pipelined_requests_whole_and_byte_by_byte(web, split):
    app, path = web
    data = POST + GET
    chunks = [data] if split == "whole" else [data[i : i + 1] for i in range(len(data))]
    first, second = _responses(await _talk(path, chunks))
    assert first[0] == "HTTP/1.1 200 OK" and "connection" not in first[1]
    assert second[0] == "HTTP/1.1 200 OK" and second[1]["connection"] == "close"
    assert first[1]["content-type"] == "application/json"
    assert first[1]["cache-control"] == "no-store"
    assert json.loads(first[2])["email"] != json.loads(second[2])["email"]
    assert app.handed_out == 2


async def test_http10_keep_alive_only_when_asked(web):
    _, path = web
    (answer,) = _responses(await _talk(path, [b"POST /new HTTP/1.0\r\n\r\n"]))
    assert answer[0].endswith(" 200 OK")
    asked = b"POST /new HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
    answers = _responses(await _talk(path, [asked, b"POST /new HTTP/1.0\r\n\r\n"]))
    assert [a[0].split()[1] for a in answers] == ["200", "200"]


async def test_routes_and_methods(web):
    _, path = web
    req = b"%s %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    ((status, _, _),) = _responses(await _talk(path, [req % (b"GET", b"/other")]))
    assert status == "HTTP/1.1 404 Not Found"
    ((status, headers, _),) = _responses(await _talk(path, [req % (b"PUT", b"/new")]))
    assert status == "HTTP/1.1 405 Method Not Allowed" and headers["allow"] == "POST, GET"


@pytest.mark.parametrize(
    "data, status",
    [
        (b"GET / HTTP/1.1 x\r\nHost: x\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nno colon\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: x\r\n folded: x\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", 400),
        (b"POST /new HTTP/1.1\r\n\r\n", 400),  # HTTP/1.1 without Host (RFC 9112 3.2)
        (b"GET / HTTP/1.1\r\nHost: x\r\nX: " + b"a" * 9000 + b"\r\n\r\n", 400),
        (f"POST /new HTTP/1.1\r\nHost: x\r\nContent-Length: {MAX_BODY + 1}\r\n\r\n".encode(), 413),
    ],
)
async def test_malformed_or_oversized_requests_get_an_answer_and_a_close(web, caplog, data, status):
    app, path = web
    caplog.set_level(logging.DEBUG, logger="chatmaild.web")
    # the oversized body is never sent: the server answers at once, then closes
    answer = await _talk(path, [data], timeout=20)
    assert answer.startswith(f"HTTP/1.1 {status} ".encode()), answer[:80]
    assert b"\r\nConnection: close\r\n" in answer.partition(b"\r\n\r\n")[0] + b"\r\n"
    assert app.handed_out == 0
    records = [r for r in caplog.records if r.name == "chatmaild.web" and r.levelno >= logging.INFO]
    assert not any(r.exc_info for r in caplog.records), "no traceback for a client's error"
    assert len([r for r in records if "listening" not in r.getMessage()]) <= 1
    # and the server still serves
    ((ok, _, _),) = _responses(await _talk(path, [GET]))
    assert ok == "HTTP/1.1 200 OK"
