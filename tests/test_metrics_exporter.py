import asyncio
import socket

import pytest
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from chatmaild.daemon import StartupError
from chatmaild.metrics.exporter import (
    ListenSpec,
    bound_address,
    parse_listen_spec,
    parse_request_head,
    respond,
    start_exporter,
)
from chatmaild.metrics.scrape import samples, scrape


@pytest.mark.parametrize(
    "spec, expected",
    [
        ("", None),
        ("  ", None),
        ("127.0.0.1:9100", ListenSpec(host="127.0.0.1", port=9100)),
        ("[::1]:9100", ListenSpec(host="::1", port=9100)),
        ("localhost:0", ListenSpec(host="localhost", port=0)),
        (
            "unix:/run/x/metrics.sock",
            ListenSpec(path=__import__("pathlib").Path("/run/x/metrics.sock")),
        ),
    ],
)
def test_parse_listen_spec(spec, expected):
    assert parse_listen_spec(spec) == expected


@pytest.mark.parametrize(
    "spec",
    [
        "9100",
        "127.0.0.1",
        "127.0.0.1:port",
        "127.0.0.1:70000",
        "unix:rel.sock",
        "::1:9100",
        ":9100",
    ],
)
def test_parse_listen_spec_refuses(spec):
    with pytest.raises(ValueError):
        parse_listen_spec(spec)


def test_parse_request_head():
    req = parse_request_head(b"GET /metrics HTTP/1.1\r\nHost: x\r\naccept: text/plain\r\nX: y")
    assert (req.method, req.target, req.accept) == ("GET", "/metrics", "text/plain")
    assert parse_request_head(b"GET /metrics") is None
    assert parse_request_head(b"GET /metrics HTTP/1.1\r\nno colon here") is None
    assert parse_request_head(b"\x00\x01\x02") is None


def _registry():
    reg = CollectorRegistry()
    c = Counter("demo_things", "Things", ["kind"], registry=reg)
    c.labels("a").inc(3)
    return reg


@pytest.mark.parametrize(
    "head, status",
    [
        (b"GET /metrics HTTP/1.1\r\nHost: x", b"200"),
        (b"GET /metrics?name[]=x HTTP/1.0", b"200"),
        (b"HEAD /metrics HTTP/1.1", b"200"),
        (b"POST /metrics HTTP/1.1", b"405"),
        (b"GET /other HTTP/1.1", b"404"),
        (b"garbage", b"400"),
    ],
)
def test_respond_status(head, status):
    response = respond(_registry(), head)
    assert response.split(b" ")[1] == status


def test_respond_head_has_no_body():
    response = respond(_registry(), b"HEAD /metrics HTTP/1.1")
    assert response.endswith(b"\r\n\r\n")
    assert b"Content-Length: 0" not in response


def test_accept_negotiation():
    reg = _registry()
    om = respond(
        reg, b"GET /metrics HTTP/1.1\r\nAccept: application/openmetrics-text; version=1.0.0"
    )
    plain = respond(reg, b"GET /metrics HTTP/1.1\r\nAccept: text/plain")
    assert b"Content-Type: application/openmetrics-text" in om
    assert om.endswith(b"# EOF\n")
    assert b"Content-Type: text/plain; version=0.0.4" in plain
    assert b"# EOF" not in plain
    assert b'demo_things_total{kind="a"} 3.0' in plain


async def test_serves_openmetrics_over_tcp():
    reg = _registry()
    server = await start_exporter("127.0.0.1:0", reg)
    try:
        addr = bound_address(server)
        got = await asyncio.to_thread(samples, addr)
        assert got[("demo_things_total", (("kind", "a"),))] == 3.0
        Counter("demo_more", "More", registry=reg).inc()
        got = await asyncio.to_thread(samples, addr)
        assert got[("demo_more_total", ())] == 1.0
        ctype, body = await asyncio.to_thread(scrape, addr, "text/plain")
        assert ctype.startswith("text/plain; version=0.0.4")
    finally:
        server.close()
        await server.wait_closed()


async def test_serves_over_ipv6_loopback():
    server = await start_exporter("[::1]:0", _registry())
    try:
        host, port = bound_address(server)
        assert host == "::1"
        got = await asyncio.to_thread(samples, (host, port))
        assert got[("demo_things_total", (("kind", "a"),))] == 3.0
    finally:
        server.close()
        await server.wait_closed()


async def test_serves_openmetrics_over_unix_socket(tmp_path):
    path = tmp_path / "m.sock"
    path.touch()  # a stale non-socket file is refused, a stale socket is replaced
    with pytest.raises(StartupError, match="exists and is not a socket"):
        await start_exporter(f"unix:{path}", _registry())
    path.unlink()
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))
    stale.close()
    server = await start_exporter(f"unix:{path}", _registry())
    try:
        ctype, body = await asyncio.to_thread(scrape, f"unix:{path}")
        assert ctype.startswith("application/openmetrics-text")
        families = {f.name for f in text_string_to_metric_families(body.decode())}
        assert "demo_things" in families
        assert oct(path.stat().st_mode & 0o777) == "0o660"
    finally:
        server.close()
        await server.wait_closed()


async def test_off_spec_starts_nothing():
    assert await start_exporter("", _registry()) is None


async def test_oversized_and_split_requests(tmp_path):
    server = await start_exporter("127.0.0.1:0", _registry())
    host, port = bound_address(server)
    try:
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(b"GET /metrics HTTP/1.1\r\nX: " + b"a" * 10000)
        await writer.drain()
        data = await reader.read()
        assert data.startswith(b"HTTP/1.1 431")
        writer.close()
        # byte by byte still works
        reader, writer = await asyncio.open_connection(host, port)
        for b in b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n":
            writer.write(bytes([b]))
            await writer.drain()
        data = await reader.read()
        assert data.startswith(b"HTTP/1.1 200")
        assert b"demo_things_total" in data
        writer.close()
    finally:
        server.close()
        await server.wait_closed()
