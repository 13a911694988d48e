"""The reinjection client against an aiosmtpd recording sink: exact bytes, reply mapping,
and the safety of connection reuse."""

import asyncio

import pytest
from filtermail_server_helpers import RecordingSink, closed_port

from chatmaild.smtp.proto import Transaction
from chatmaild.smtp.reinject import Reinjector, dot_stuff, downstream_reply


@pytest.fixture
async def sink():
    sink = await RecordingSink().start()
    yield sink
    sink.release.set()
    await sink.stop()


@pytest.fixture
async def reinjector(sink):
    reinjector = Reinjector("127.0.0.1", sink.port, timeout=10)
    yield reinjector
    await reinjector.close()


def tx(data=b"s: x\r\n\r\nbody\r\n", rcpts=("bob@chat.example",), params=None):
    t = Transaction("c.test", "x@remote.test", params or {})
    t.rcpt_tos.extend(rcpts)
    t.data = data
    return t


@pytest.mark.parametrize(
    "data,stuffed",
    [
        (b"", b".\r\n"),
        (b"a\r\n", b"a\r\n.\r\n"),
        (b".a\r\n", b"..a\r\n.\r\n"),
        (b"a\r\n.\r\n..\r\n", b"a\r\n..\r\n...\r\n.\r\n"),
        (b"a\r.b\r\n", b"a\r.b\r\n.\r\n"),  # bare CR is not a line end
        (b"no final crlf", b"no final crlf\r\n.\r\n"),
    ],
)
def test_dot_stuff(data, stuffed):
    assert dot_stuff(data) == stuffed


def test_downstream_reply_mapping():
    assert downstream_reply(550, "5.1.1 no").code == 550
    assert downstream_reply(421, "4.4.2 bye").code == 421
    odd = downstream_reply(354, "go ahead")
    assert odd.code == 451 and odd.text.startswith("4.3.0")


async def test_reuse_after_success(sink, reinjector):
    for i in range(3):
        reply = await reinjector.send(tx(b"n: %d\r\n\r\n" % i))
        assert reply.code == 250
    assert reinjector.connections_opened == 1
    assert reinjector.connections_reused == 2
    assert len({m.peer for m in sink.messages}) == 1


async def test_failed_transaction_closes_connection(sink, reinjector):
    assert (await reinjector.send(tx())).code == 250
    refused = await reinjector.send(tx(rcpts=("bob@chat.example", "nouser@chat.example")))
    assert refused.code == 550
    assert reinjector.idle_connections == 0
    assert (await reinjector.send(tx(b"after\r\n"))).code == 250
    assert reinjector.connections_opened == 2
    first, second = sink.messages
    assert first.peer != second.peer
    assert second.data == b"after\r\n"


async def test_tempfail_at_data_closes_connection(sink, reinjector):
    reply = await reinjector.send(tx(rcpts=("tempdata@chat.example",)))
    assert (reply.code, reply.text) == (451, "4.3.5 Server configuration problem")
    assert reinjector.idle_connections == 0


async def test_server_closed_idle_connection_is_replaced(sink, reinjector):
    assert (await reinjector.send(tx())).code == 250
    sink.close_connections()
    # wait until the client side has seen the close, then send again
    for _ in range(200):
        if not reinjector._idle[0][0].is_connected:
            break
        await asyncio.sleep(0.01)
    assert (await reinjector.send(tx(b"second\r\n"))).code == 250
    assert reinjector.connections_opened == 2
    assert [m.data for m in sink.messages][-1] == b"second\r\n"


async def test_connection_closed_in_the_race_window_is_retried(sink, reinjector):
    """The server closes just as we reuse: RSET fails, the message goes on a fresh one."""
    assert (await reinjector.send(tx())).code == 250
    sink.close_connections()  # the client has not noticed yet
    assert reinjector._idle[0][0].is_connected
    assert (await reinjector.send(tx(b"raced\r\n"))).code == 250
    assert reinjector.connections_opened == 2
    assert [m.data for m in sink.messages] == [b"s: x\r\n\r\nbody\r\n", b"raced\r\n"]


async def test_idle_connection_too_old_is_not_reused(sink):
    now = [0.0]
    reinjector = Reinjector("127.0.0.1", sink.port, max_idle=30, clock=lambda: now[0])
    assert (await reinjector.send(tx())).code == 250
    now[0] = 31.0
    assert (await reinjector.send(tx())).code == 250
    assert reinjector.connections_opened == 2
    await reinjector.close()


async def test_timeout_gives_451_and_discards(sink):
    reinjector = Reinjector("127.0.0.1", sink.port, timeout=0.5)
    reply = await reinjector.send(tx(rcpts=("hold@chat.example",)))
    assert reply.code == 451 and reply.text.startswith("4.3.0")
    assert reinjector.idle_connections == 0
    sink.release.set()
    await reinjector.close()


async def test_unreachable_gives_451():
    reinjector = Reinjector("127.0.0.1", closed_port(), timeout=5)
    reply = await reinjector.send(tx())
    assert reply.code == 451 and reply.text.startswith("4.3.0")


async def test_pool_keeps_at_most_pool_size_idle(sink):
    reinjector = Reinjector("127.0.0.1", sink.port, pool_size=2)
    replies = await asyncio.gather(*(reinjector.send(tx(b"%d\r\n" % i)) for i in range(6)))
    assert [r.code for r in replies] == [250] * 6
    assert reinjector.idle_connections == 2
    assert reinjector.connections_opened == 6
    await reinjector.close()
    assert reinjector.idle_connections == 0
