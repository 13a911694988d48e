"""Bounds of a dict socket over real unix sockets: idle connections, trickled lines, a cap on
connections; and the EMFILE path of the acceptor (a daemon out of descriptors logs it)."""

import asyncio
import logging
import time

import pytest
from dictproxy_helpers import dict_connect as connect
from dictproxy_helpers import dict_served

from chatmaild.acceptor import RateLimitedWarning
from chatmaild.dictproxy.server import Limits


class Echo:
    def lookup(self, key, user):
        return "v:" + key

    def iterate(self, path, user, flags):
        return []

    def commit(self, txn):
        return True


@pytest.fixture
async def limited(tmp_path):
    path = tmp_path / "dict.socket"
    limits = Limits(max_connections=5, idle_timeout=0.6, line_timeout=0.4, sweep_interval=0.1)
    async with dict_served(path, Echo(), limits=limits):
        yield path


async def closed_within(reader, seconds):
    try:
        return await asyncio.wait_for(reader.read(), seconds) == b""
    except ConnectionError:  # closed with a reset
        return True


async def test_an_idle_connection_is_closed_a_busy_one_is_not(limited):
    idle_r, _ = await connect(limited)
    busy_r, busy_w = await connect(limited)
    started = time.monotonic()
    for _ in range(10):  # 1.5 s of steady lookups: well past the idle timeout
        busy_w.write(b"Lshared/k\t\n")
        assert await asyncio.wait_for(busy_r.readline(), 2) == b"Ov:shared/k\n"
        await asyncio.sleep(0.15)
    assert idle_r.at_eof() or await closed_within(idle_r, 1)
    assert time.monotonic() - started > 0.6
    busy_w.close()


async def test_an_open_transaction_keeps_its_connection(limited):
    reader, writer = await connect(limited)
    writer.write(b"B1\t\n")
    await asyncio.sleep(1.2)
    writer.write(b"Sl\tshared/k\tv\nC1\n")
    assert await asyncio.wait_for(reader.readline(), 2) == b"O\n"
    writer.close()


async def test_a_trickled_request_line_is_cut(limited, caplog):
    caplog.set_level(logging.WARNING)
    reader, writer = await connect(limited)
    started = time.monotonic()
    reading = asyncio.ensure_future(reader.read())
    for byte in b"Lshared/a-very-long-key-sent-slowly-one-byte-at-a-time\t\n":
        if reading.done():
            break
        try:
            writer.write(bytes([byte]))
        except ConnectionError:  # closed by the server before the read noticed
            break
        await asyncio.sleep(0.05)
    try:
        assert await asyncio.wait_for(reading, 2) == b""
    except ConnectionError:  # the close was seen by a write first
        pass
    assert 0.35 < time.monotonic() - started < 1.5
    assert "request line unfinished" in caplog.text


async def test_connections_above_the_cap_are_closed_at_once(limited, caplog):
    caplog.set_level(logging.WARNING)
    held = [await connect(limited) for _ in range(5)]
    extra_r, extra_w = await connect(limited)
    assert await closed_within(extra_r, 2)
    assert "the most allowed" in caplog.text
    reader, writer = held[0]
    writer.write(b"Lshared/k\t\n")
    assert await asyncio.wait_for(reader.readline(), 2) == b"Ov:shared/k\n"
    for _, w in held:
        w.close()


def test_rate_limited_warning_reports_counts_once_per_interval():
    w = RateLimitedWarning(interval=10)
    assert w.event(100.0) == 1
    assert w.event(101.0) is None
    assert w.event(105.0, 3) is None
    assert w.event(110.5) == 5
    assert w.event(111.0) is None
