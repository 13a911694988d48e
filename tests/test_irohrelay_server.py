"""chatmail-iroh-relay over real sockets: Python clients of the iroh 0.35 relay protocol
(chatmaild.irohrelay.client) against the server on 127.0.0.1, and the daemon itself."""

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from chatmaild.irohrelay import frames as fr
from chatmaild.irohrelay import handshake as hs
from chatmaild.irohrelay import websocket as ws
from chatmaild.irohrelay.client import RelayClient
from chatmaild.irohrelay.server import Limits, RelayServer


class Running:
    def __init__(self, server, listener):
        self.server = server
        self.listener = listener
        self.port = listener.sockets[0].getsockname()[1]

    async def client(self, **kwargs):
        return await RelayClient.connect("127.0.0.1", self.port, **kwargs)

    async def registered(self, *clients, timeout=5.0):
        """Wait until the relay has registered every client's key (the handshake has no
        reply on success)."""
        deadline = time.monotonic() + timeout
        while not all(c.key in self.server.router.clients for c in clients):
            assert time.monotonic() < deadline, "clients not registered"
            await asyncio.sleep(0.01)
        return clients

    @property
    def stats(self):
        return self.server.stats

    @property
    def routed(self):
        return self.server.router.stats


@contextlib.asynccontextmanager
async def serving(**limits):
    """A relay with `limits` on 127.0.0.1 for the block; then its listener and every
    connection are closed."""
    server = RelayServer(Limits(**limits))
    loop = asyncio.get_running_loop()
    listener = await loop.create_server(server.protocol, "127.0.0.1", 0)
    try:
        yield Running(server, listener)
    finally:
        listener.close()
        server.close_all()


@pytest.fixture
async def relay():
    async with serving(ping_interval=60, write_timeout=2.0) as running:
        yield running


async def pair(relay):
    a, b = await relay.client(), await relay.client()
    await relay.registered(a, b)
    return a, b


async def test_forwarding_both_ways(relay):
    a, b = await pair(relay)
    a.send_packet(b.key, b"hello b")
    assert await b.recv_packet() == (a.key, b"hello b")
    big = os.urandom(fr.MAX_PACKET_SIZE)
    b.send_packet(a.key, big)
    assert await a.recv_packet() == (b.key, big)
    for n in range(100):
        a.send_packet(b.key, n.to_bytes(2, "big") * 600)
    for n in range(100):
        assert await b.recv_packet() == (a.key, n.to_bytes(2, "big") * 600)
    assert relay.stats.packets_out == 102
    assert relay.stats.bytes_out == 7 + len(big) + 100 * 1200


async def test_packet_for_an_unknown_key_is_dropped_and_the_sender_stays(relay):
    a, b = await pair(relay)
    a.send_packet(bytes(32), b"nobody")
    a.send_packet(b.key, b"after")
    assert await b.recv_packet() == (a.key, b"after")
    assert relay.routed.dropped_no_peer == 1


async def test_ping_gets_pong_at_once(relay):
    a = await relay.client()
    a.ping(b"12345678")
    assert await a.recv_frame(timeout=2) == (fr.PONG, b"12345678")


async def test_ping_of_wrong_length_closes(relay):
    a = await relay.client()
    await relay.registered(a)
    a.send_raw(fr.encode(fr.PING, b"123"))
    assert await a.closed() == []
    assert relay.stats.protocol_errors == 1


async def test_keepalive_notepreferred_and_unknown_types_are_ignored(relay):
    a, b = await pair(relay)
    a.send_raw(fr.encode(fr.KEEP_ALIVE) + fr.encode(fr.NOTE_PREFERRED, b"\x01"))
    a.send_raw(fr.encode(99, b"future"))
    a.send_packet(b.key, b"still here")
    assert await b.recv_packet() == (a.key, b"still here")


async def test_bad_signature_closes_with_health(relay):
    key = Ed25519PrivateKey.generate()
    c = await relay.client(handshake=False)
    payload = bytearray(hs.client_info_payload(key))
    payload[60] ^= 1
    c.send_raw(fr.encode(fr.CLIENT_INFO, bytes(payload)))
    assert await c.closed() == [(fr.HEALTH, b"invalid signature")]
    assert hs.public_key(key) not in relay.server.router.clients
    assert relay.stats.refused_handshake == 1


async def test_wrong_version_closes_with_health(relay):
    c = await relay.client(version=2)
    assert await c.closed() == [(fr.HEALTH, b"unexpected client version 2, expected 3")]
    assert len(relay.server.router) == 0


async def test_first_frame_not_client_info_closes(relay):
    c = await relay.client(handshake=False)
    c.send_raw(fr.send_packet(bytes(32), b"x"))
    frames = await c.closed()
    assert frames == [(fr.HEALTH, b"expected ClientInfo, got SendPacket")]


async def test_oversized_frame_closes(relay):
    a, b = await pair(relay)
    a.send_raw(bytes([fr.SEND_PACKET]) + (fr.MAX_FRAME_SIZE + 1).to_bytes(4, "big"))
    assert await a.closed() == []
    await asyncio.sleep(0.05)
    assert a.key not in relay.server.router.clients
    assert relay.stats.protocol_errors == 1


async def test_oversized_packet_closes(relay):
    a, b = await pair(relay)
    a.send_packet(b.key, bytes(fr.MAX_PACKET_SIZE + 1))
    assert await a.closed() == []
    assert relay.stats.packets_out == 0


async def test_oversized_frame_before_the_handshake_closes(relay):
    c = await relay.client(handshake=False)
    c.send_raw(bytes([fr.CLIENT_INFO]) + (fr.MAX_FRAME_SIZE + 1).to_bytes(4, "big"))
    assert await c.closed() == []


async def test_duplicate_key_replaces_the_first_connection(relay):
    key = Ed25519PrivateKey.generate()
    first = await relay.client(private_key=key)
    b = await relay.client()
    await relay.registered(first, b)
    old = relay.server.router.clients[first.key]
    second = await relay.client(private_key=key)
    deadline = time.monotonic() + 5
    while relay.server.router.clients[first.key] is old:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)
    assert await first.closed() == []
    b.send_packet(second.key, b"to the new one")
    assert await second.recv_packet() == (b.key, b"to the new one")
    assert relay.routed.replaced == 1 and len(relay.server.router) == 2


async def test_node_gone_when_a_sender_leaves(relay):
    a, b = await pair(relay)
    a.send_packet(b.key, b"hi")
    assert await b.recv_packet() == (a.key, b"hi")
    a.close()
    assert await b.recv_frame() == (fr.NODE_GONE, a.key)


async def test_a_client_that_stops_reading_does_not_stall_the_others():
    async with serving(ping_interval=60, write_timeout=1.0, write_high_water=16 * 1024) as relay:
        a, b = await pair(relay)
        # the stuck client: a small receive buffer, and it never reads
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", relay.port))
        sock.setblocking(False)
        stuck_key = Ed25519PrivateKey.generate()
        sock.send(b"GET /relay HTTP/1.1\r\nUpgrade: iroh derp http\r\n\r\n")
        sock.send(hs.client_info(stuck_key))
        stuck = hs.public_key(stuck_key)
        deadline = time.monotonic() + 5
        while stuck not in relay.server.router.clients:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)
        payload = os.urandom(1200)
        started = time.monotonic()
        for round_ in range(20):
            for _ in range(200):
                a.send_packet(stuck, payload)
            a.send_packet(b.key, round_.to_bytes(4, "big"))
            await a.drain()
            assert await b.recv_packet(timeout=2) == (a.key, round_.to_bytes(4, "big"))
        assert time.monotonic() - started < 5
        assert relay.routed.dropped_queue_full > 0
        deadline = time.monotonic() + 5  # then the write timeout ends the stuck client
        while stuck in relay.server.router.clients:
            assert time.monotonic() < deadline, "stuck client never ended"
            await asyncio.sleep(0.05)
        assert relay.stats.write_timeouts == 1
        sock.close()


async def test_server_pings_a_silent_client_and_ends_it_without_pong():
    async with serving(ping_interval=0.2, ping_jitter=(0.0, 0.05), pong_timeout=0.3) as relay:
        a = await relay.client()
        frame_type, data = await a.recv_frame(timeout=3)
        assert frame_type == fr.PING and len(data) == 8
        a.send_raw(fr.pong(data))
        frame_type, data = await a.recv_frame(timeout=3)
        assert frame_type == fr.PING  # answered: still connected, pinged again
        assert await a.closed(timeout=3) == []  # not answered: ended
        assert relay.stats.pongs_missed == 1


async def test_handshake_timeout():
    async with serving(handshake_timeout=0.3) as relay:
        c = await relay.client(handshake=False)
        assert await c.closed(timeout=3) == []
        assert relay.stats.refused_handshake == 1


async def test_client_limit_answers_503():
    async with serving(max_clients=1) as relay:
        first = await relay.client()
        with pytest.raises(ConnectionError, match="503"):
            await relay.client()
        assert relay.stats.refused_full == 1
        first.close()


async def http(relay, request: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
    writer.write(request)
    data = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    return data


async def test_http_paths_with_keep_alive_and_pipelining(relay):
    data = await http(
        relay,
        b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n"
        b"GET /generate_204 HTTP/1.1\r\nX-Tailscale-Challenge: c.1-2_3\r\n\r\n"
        b"GET /robots.txt HTTP/1.1\r\n\r\n"
        b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n",
    )
    assert data.startswith(b"HTTP/1.1 200 OK\r\nAccess-Control-Allow-Origin: *\r\n")
    assert b"HTTP/1.1 204 No Content\r\nX-Tailscale-Response: response c.1-2_3\r\n" in data
    assert b"Disallow: /" in data and data.endswith(b"</p>\n")


async def test_relay_without_upgrade_is_400_and_bad_head_is_400(relay):
    assert (await http(relay, b"GET /relay HTTP/1.1\r\n\r\n")).startswith(b"HTTP/1.1 400")
    assert (await http(relay, b"BLAH\r\n\r\n")).startswith(b"HTTP/1.1 400")


async def test_upgrade_request_and_client_info_in_one_segment(relay):
    b = await relay.client()
    key = Ed25519PrivateKey.generate()
    reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
    writer.write(
        b"GET /derp HTTP/1.1\r\nUpgrade: iroh derp http\r\n\r\n"
        + hs.client_info(key)
        + fr.send_packet(b.key, b"eager")
    )
    await relay.registered(b)
    assert await b.recv_packet() == (hs.public_key(key), b"eager")
    writer.close()


async def test_websocket_client(relay):
    b = await relay.client()
    key = Ed25519PrivateKey.generate()
    reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
    writer.write(
        b"GET /relay HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101") and b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" in head
    mask = os.urandom(4)
    info = hs.client_info_payload(key)
    writer.write(ws.mask_frame(ws.OP_BINARY, bytes([fr.CLIENT_INFO]) + info, mask))
    msg = bytes([fr.SEND_PACKET]) + b.key + b"over websocket"
    writer.write(ws.mask_frame(ws.OP_BINARY, msg, mask))
    await relay.registered(b)
    assert await b.recv_packet() == (hs.public_key(key), b"over websocket")
    b.send_packet(hs.public_key(key), b"back")
    expected = bytes([fr.RECV_PACKET]) + b.key + b"back"
    data = await asyncio.wait_for(reader.readexactly(2 + len(expected)), 5)
    assert data == bytes([0x82, len(expected)]) + expected
    writer.write(ws.mask_frame(ws.OP_BINARY, bytes([fr.PING]) + b"abcdefgh", mask))
    data = await asyncio.wait_for(reader.readexactly(11), 5)
    assert data == bytes([0x82, 9, fr.PONG]) + b"abcdefgh"
    assert relay.stats.accepts_websocket == 1
    writer.write(ws.mask_frame(ws.OP_CLOSE, b"\x03\xe8", mask))
    assert await asyncio.wait_for(reader.read(), 5) == bytes([0x88, 2]) + b"\x03\xe8"
    writer.close()


# -- the daemon ---------------------------------------------------------------------------


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_daemon_serves_relay_and_metrics(tmp_path):
    port, metrics_port = _free_port(), _free_port()
    ini = tmp_path / "chatmail.ini"
    ini.write_text(
        "[params]\nmail_domain = chat.example\n"
        f"iroh_relay_listen = 127.0.0.1:{port}\nmetrics_irohrelay = 127.0.0.1:{metrics_port}\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "chatmaild.irohrelay", str(ini)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", metrics_port), timeout=1).close()
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline
                time.sleep(0.1)

        async def talk():
            a = await RelayClient.connect("127.0.0.1", port)
            b = await RelayClient.connect("127.0.0.1", port)
            a.ping(b"pingpong")
            assert await a.recv_frame() == (fr.PONG, b"pingpong")  # a is registered
            b.ping(b"pingpong")
            assert await b.recv_frame() == (fr.PONG, b"pingpong")
            for _ in range(10):
                a.send_packet(b.key, bytes(1000))
            for _ in range(10):
                assert await b.recv_packet() == (a.key, bytes(1000))
            a.close()
            b.close()

        asyncio.run(talk())
        url = f"http://127.0.0.1:{metrics_port}/metrics"
        text = urllib.request.urlopen(url, timeout=5).read().decode()
        assert "chatmail_irohrelay_packets_forwarded_total 10.0" in text
        assert "chatmail_irohrelay_bytes_forwarded_total 10000.0" in text
        assert 'chatmail_irohrelay_accepts_total{framing="relay"} 2.0' in text
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=10)
    lines = out.decode().splitlines()
    connected = [line for line in lines if " connected (relay)" in line]
    gone = [line for line in lines if " gone after " in line]
    assert len(connected) == 2 and len(gone) == 2, lines
    assert proc.returncode in (0, -15)


def _daemon_run_to_exit(tmp_path, params):
    """Run the daemon on an ini of mail_domain x.org plus `params` until it exits."""
    ini = tmp_path / "chatmail.ini"
    ini.write_text(f"[params]\nmail_domain = x.org\n{params}")
    return subprocess.run(
        [sys.executable, "-m", "chatmaild.irohrelay", str(ini)],
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_daemon_refuses_a_taken_port(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = _daemon_run_to_exit(tmp_path, f"iroh_relay_listen = 127.0.0.1:{port}\n")
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr


@pytest.mark.parametrize(
    "key, value",
    [("iroh_relay_listen", "3340"), ("iroh_relay_max_clients", "many"), ("metrics_irohrelay", "x")],
)
def test_daemon_refuses_bad_ini_values(tmp_path, key, value):
    result = _daemon_run_to_exit(tmp_path, f"{key} = {value}\n")
    assert result.returncode == 2
    assert key in result.stderr and repr(value) in result.stderr


async def test_garbage_in_every_state_ends_only_that_connection(relay, caplog):
    """Random bytes as HTTP, as the first frame and inside a relay session: each connection
    is answered or closed, nothing raises in the server, and it keeps forwarding."""
    import random

    rng = random.Random(18)
    a, b = await pair(relay)
    for n in range(30):
        garbage = rng.randbytes(rng.randrange(1, 3000))
        reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
        if n % 3 == 1:
            writer.write(b"GET /relay HTTP/1.1\r\nUpgrade: iroh derp http\r\n\r\n")
        elif n % 3 == 2:
            key = Ed25519PrivateKey.generate()
            writer.write(b"GET /relay HTTP/1.1\r\nUpgrade: iroh derp http\r\n\r\n")
            writer.write(hs.client_info(key))
        writer.write(garbage)
        writer.write_eof()
        try:
            await asyncio.wait_for(reader.read(), 5)
        except (TimeoutError, ConnectionError):
            pass  # garbage that looks like an unfinished frame waits; closed below
        writer.close()
    a.send_packet(b.key, b"still forwarding")
    assert await b.recv_packet() == (a.key, b"still forwarding")
    assert not [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")]
