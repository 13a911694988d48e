"""The cached health probe behind `irohrelay`, against real sockets and a fake clock."""

import asyncio
import logging

import pytest
from metadata_helpers import SERVER, DictClient, FakeClock, build, meta_ini

from chatmaild.dictproxy import serve_unix
from chatmaild.dictproxy.server import close_connections
from chatmaild.metadata.probe import HttpProbe, status_ok


@pytest.mark.parametrize(
    "line, ok",
    [
        (b"HTTP/1.1 200 OK\r\n", True),
        (b"HTTP/1.0 200\r\n", True),
        (b"HTTP/1.1 204 No Content\r\n", False),
        (b"HTTP/1.1 502 Bad Gateway\r\n", False),
        (b"SSH-2.0-OpenSSH\r\n", False),
        (b"", False),
        (b"HTTP/2 200\r\n", False),
    ],
)
def test_status_ok(line, ok):
    assert status_ok(line) is ok


class Http:
    """A local HTTP server answering `status` (or hanging) and counting requests."""

    def __init__(self, status=b"200 OK", hang=False):
        self.status, self.hang, self.requests = status, hang, 0

    async def __aenter__(self):
        self.server = await asyncio.start_server(self._answer, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc):
        self.server.close()

    async def _answer(self, reader, writer):
        self.requests += 1
        request = await reader.readuntil(b"\r\n\r\n")
        assert request.startswith(b"GET /ping HTTP/1.1\r\n")
        if self.hang:
            await asyncio.sleep(5)
        writer.write(b"HTTP/1.1 " + self.status + b"\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        writer.close()


async def test_probe_caches_for_ttl_and_shares_one_probe():
    clock = FakeClock()
    async with Http() as http:
        probe = HttpProbe("iroh relay", "127.0.0.1", http.port, ttl=5, clock=clock)
        assert probe.cached() is None
        results = await asyncio.gather(*(probe.check() for _ in range(10)))
        assert results == [True] * 10 and http.requests == 1
        assert probe.cached() is True
        clock.advance(4.9)
        assert probe.cached() is True
        clock.advance(0.2)
        assert probe.cached() is None


async def test_probe_down_states_and_one_log_line_per_change(caplog):
    clock = FakeClock()
    async with Http(status=b"502 Bad Gateway") as http:
        probe = HttpProbe("iroh relay", "127.0.0.1", http.port, clock=clock)
        with caplog.at_level(logging.INFO, logger="chatmaild.metadata.probe"):
            for _ in range(3):
                assert await probe.check() is False
            http.status = b"200 OK"
            assert await probe.check() is True
            assert await probe.check() is True
    with caplog.at_level(logging.INFO, logger="chatmaild.metadata.probe"):
        for _ in range(2):
            assert await probe.check() is False  # nothing listens any more: refused
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 3, lines  # one line per change: down, up, down
    assert "no 200 answer" in lines[0] and "answers" in lines[1]
    assert "ConnectionRefusedError" in lines[2]


async def test_probe_over_a_unix_socket(tmp_path):
    async def answer(reader, writer):
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\n\r\n")
        writer.close()

    path = tmp_path / "iroh.socket"
    server = await asyncio.start_unix_server(answer, path=str(path))
    try:
        probe = HttpProbe.for_listen("iroh relay", f"unix:{path}")
        assert probe.where == f"unix:{path}/ping"
        assert await probe.check() is True
    finally:
        server.close()
    tcp = HttpProbe.for_listen("iroh relay", "127.0.0.1:3340")
    assert (tcp.host, tcp.port) == ("127.0.0.1", 3340)


async def test_probe_timeout_is_bounded():
    async with Http(hang=True) as http:
        probe = HttpProbe("iroh relay", "127.0.0.1", http.port, timeout=0.2)
        loop = asyncio.get_running_loop()
        start = loop.time()
        assert await probe.check() is False
        assert loop.time() - start < 1.0


async def test_irohrelay_lookup_over_the_dict_socket_follows_the_probe(tmp_path):
    service, *_ = build(meta_ini(tmp_path))
    async with Http() as http:
        service.iroh_probe = HttpProbe("iroh relay", "127.0.0.1", http.port, ttl=0)
        server = await serve_unix(tmp_path / "s", service)
        client = await DictClient.connect(tmp_path / "s")
        try:
            assert await client.lookup_value(SERVER + "irohrelay") == "https://chat.example"
            http.status = b"503 Service Unavailable"
            assert await client.lookup(SERVER + "irohrelay") == "N"
            # other keys on the same connection keep answering
            assert await client.lookup_value(SERVER + "maxsmtprecipients") == "1000"
        finally:
            await client.close()
            server.close()
            close_connections(server)
