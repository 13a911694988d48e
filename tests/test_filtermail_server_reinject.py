"""The reinjection client against an aiosmtpd recording sink and a scripted downstream:
exact bytes, reply mapping, pipelining, and the safety of connection reuse."""

import asyncio

import pytest
from aiosmtplib.errors import SMTPResponseException, SMTPServerDisconnected
from filtermail_scripted_downstream import ScriptedDownstream
from filtermail_server_helpers import closed_port

from chatmaild.smtp.proto import Transaction
from chatmaild.smtp.reinject import Reinjector, ReplyQueueProtocol, dot_stuff, downstream_reply


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


# -- pipelining (RFC 2920) against a scripted downstream ---------------------------------------


@pytest.fixture
async def scripted():
    servers = []

    async def start(**script):
        server = await ScriptedDownstream(**script).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.stop()


async def wait_closed(session, seconds=5.0):
    for _ in range(int(seconds / 0.01)):
        if session.eof:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the reinjector did not close the connection")


TWO = ("bob@chat.example", "carol@chat.example")


async def test_pipelined_envelope_in_one_go(scripted):
    """The downstream holds every reply until DATA: only a pipelining client gets through."""
    down = await scripted(pipelining=True)
    reinjector = Reinjector("127.0.0.1", down.port, timeout=5)
    replies = [await reinjector.send(tx(b"n: %d\r\n.dot\r\n" % i, rcpts=TWO)) for i in range(3)]
    await reinjector.close()
    assert [(r.code, r.text) for r in replies] == [
        (250, "2.0.0 Ok: queued as Q1"),
        (250, "2.0.0 Ok: queued as Q2"),
        (250, "2.0.0 Ok: queued as Q3"),
    ]
    assert reinjector.connections_opened == 1 and reinjector.connections_reused == 2
    (session,) = down.sessions
    await wait_closed(session)
    assert down.messages == [b"n: %d\r\n.dot\r\n" % i for i in range(3)]
    group = ["MAIL FROM:<x@remote.test>", "RCPT TO:<bob@chat.example>"]
    group += ["RCPT TO:<carol@chat.example>", "DATA"]
    assert session.commands == ["EHLO localhost", *group, "RSET", *group, "RSET", *group, "QUIT"]


async def test_pipelined_mail_refused(scripted):
    down = await scripted(replies={"MAIL": "452 4.3.1 Insufficient system storage"})
    reinjector = Reinjector("127.0.0.1", down.port, timeout=5)
    reply = await reinjector.send(tx(rcpts=TWO))
    assert (reply.code, reply.text) == (452, "4.3.1 Insufficient system storage")
    assert reinjector.idle_connections == 0
    (session,) = down.sessions
    await wait_closed(session)
    assert down.messages == [] and session.data_after_354 == []


@pytest.mark.parametrize("data_354_always", [False, True])
async def test_pipelined_one_rcpt_refused(scripted, data_354_always):
    """One refused recipient refuses the message; DATA got 354 for the other recipient (or
    from a broken server after every RCPT failed): the body is never sent, not even a dot."""
    refused = {"carol@chat.example": "550 5.1.1 <carol@chat.example>: User unknown"}
    down = await scripted(refuse_rcpt=refused, data_354_always=data_354_always)
    reinjector = Reinjector("127.0.0.1", down.port, timeout=5)
    rcpts = ("carol@chat.example",) if data_354_always else TWO
    reply = await reinjector.send(tx(rcpts=rcpts))
    assert (reply.code, reply.text) == (550, "5.1.1 <carol@chat.example>: User unknown")
    assert reinjector.idle_connections == 0
    (session,) = down.sessions
    await wait_closed(session)
    assert session.data_after_354 == [b""]  # DATA was open, and nothing came: no QUIT, no dot
    assert session.data_aborted and down.messages == []
    # the next message goes out on a fresh connection
    assert (await reinjector.send(tx(b"next\r\n"))).code == 250
    assert reinjector.connections_opened == 2
    assert down.messages == [b"next\r\n"]
    await reinjector.close()


async def test_pipelined_data_refused(scripted):
    down = await scripted(replies={"DATA": "451 4.3.0 Error: queue file write error"})
    reinjector = Reinjector("127.0.0.1", down.port, timeout=5)
    reply = await reinjector.send(tx())
    assert (reply.code, reply.text) == (451, "4.3.0 Error: queue file write error")
    assert reinjector.idle_connections == 0 and down.messages == []


@pytest.mark.parametrize("pipelining", [True, False])
async def test_final_reply_refused(scripted, pipelining):
    down = await scripted(pipelining=pipelining, replies={"DOT": "554 5.7.1 Rejected by policy"})
    reinjector = Reinjector("127.0.0.1", down.port, timeout=5)
    reply = await reinjector.send(tx(b"body\r\n"))
    assert (reply.code, reply.text) == (554, "5.7.1 Rejected by policy")
    assert reinjector.idle_connections == 0
    assert down.messages == [b"body\r\n"]


@pytest.mark.parametrize("verb", ["MAIL", "RCPT", "DATA"])
async def test_pipelined_close_mid_group_on_fresh_connection(scripted, verb):
    down = await scripted(close_on={verb: 1})
    reinjector = Reinjector("127.0.0.1", down.port, timeout=5)
    reply = await reinjector.send(tx())
    assert reply.code == 451 and reply.text.startswith("4.3.0")
    assert reinjector.idle_connections == 0 and down.messages == []


@pytest.mark.parametrize("pipelining", [True, False])
@pytest.mark.parametrize("how", ["close at RSET", "RSET 421", "close at MAIL"])
async def test_reused_connection_failing_before_mail_is_retried(scripted, pipelining, how):
    down = await scripted(pipelining=pipelining)
    reinjector = Reinjector("127.0.0.1", down.port, timeout=5)
    assert (await reinjector.send(tx(b"first\r\n"))).code == 250
    # the reused connection fails; the fresh one sends no RSET and gets a normal MAIL reply
    if how == "close at RSET":
        down.close_on["RSET"] = 1
    elif how == "RSET 421":
        down.replies["RSET"] = "421 4.4.2 scripted.test Error: timeout exceeded"
    else:
        down.close_on["MAIL"] = 1
    reply = await reinjector.send(tx(b"second\r\n"))
    assert (reply.code, reply.text) == (250, "2.0.0 Ok: queued as Q2")
    assert reinjector.connections_opened == 2
    assert [s.messages for s in down.sessions] == [[b"first\r\n"], [b"second\r\n"]]
    # nothing of the second message on the first connection (a pipelined DATA after the
    # failed RSET may have been opened: it saw end-of-file, not even a dot)
    first, *rest = down.sessions[0].data_after_354
    assert first == b"first\r\n.\r\n" and rest in ([], [b""])
    await reinjector.close()


async def test_idle_connection_that_spoke_is_not_reused(scripted):
    """A 421 sent on an idle connection (server about to time it out) retires it."""
    down = await scripted()
    reinjector = Reinjector("127.0.0.1", down.port, timeout=5)
    assert (await reinjector.send(tx())).code == 250
    down.say(0, b"421 4.4.2 scripted.test Error: timeout exceeded\r\n")
    conn = reinjector._idle[0][0]
    for _ in range(500):
        if conn.spoke_while_idle:
            break
        await asyncio.sleep(0.01)
    assert (await reinjector.send(tx(b"second\r\n"))).code == 250
    assert reinjector.connections_opened == 2
    assert down.sessions[0].commands[-1] != "RSET"  # nothing more was sent on the first one
    await reinjector.close()


async def test_downstream_without_pipelining_gets_one_command_at_a_time(scripted):
    down = await scripted(pipelining=False)
    reinjector = Reinjector("127.0.0.1", down.port, timeout=5)
    for i in range(3):
        assert (await reinjector.send(tx(b"%d\r\n" % i, rcpts=TWO))).code == 250
    await reinjector.close()
    (session,) = down.sessions
    assert session.max_commands_per_segment == 1
    assert down.messages == [b"0\r\n", b"1\r\n", b"2\r\n"]
    assert session.commands.count("RSET") == 2


@pytest.mark.parametrize("pipelining", [True, False])
async def test_lockstep_and_pipelined_refusals_match(scripted, pipelining):
    refused = {"carol@chat.example": "452 4.2.2 <carol@chat.example>: Mailbox full"}
    down = await scripted(pipelining=pipelining, refuse_rcpt=refused)
    reinjector = Reinjector("127.0.0.1", down.port, timeout=5)
    reply = await reinjector.send(tx(rcpts=TWO))
    assert (reply.code, reply.text) == (452, "4.2.2 <carol@chat.example>: Mailbox full")
    assert down.messages == [] and reinjector.idle_connections == 0


@pytest.mark.parametrize("field", ["from", "rcpt"])
async def test_control_character_in_address_is_refused_before_sending(scripted, field):
    down = await scripted()
    reinjector = Reinjector("127.0.0.1", down.port, timeout=5)
    t = tx(rcpts=("bob\r\nRCPT TO:<eve@evil.test>@chat.example",) if field == "rcpt" else TWO)
    if field == "from":
        t.mail_from = "x\r@remote.test"
    reply = await reinjector.send(t)
    assert reply.code == 553
    assert reinjector.connections_opened == 0 and down.sessions == []


# -- ReplyQueueProtocol: every reply of a pipelined group, in order ---------------------------


class FakeTransport:
    def __init__(self):
        self.closed = False

    def is_closing(self):
        return self.closed

    def close(self):
        self.closed = True

    def write(self, data):
        pass

    def get_extra_info(self, key, default=None):
        return default


@pytest.mark.parametrize(
    "chunks",
    [
        [b"250 2.0.0 Ok\r\n250 2.1.0 Ok\r\n250-a\r\n250 b\r\n354 go\r\n"],
        [b"250 2.0.0 Ok\r", b"\n250 2.1", b".0 Ok\r\n250-a\r\n", b"250 b\r\n354 go\r\n"],
        [bytes([c]) for c in b"250 2.0.0 Ok\r\n250 2.1.0 Ok\r\n250-a\r\n250 b\r\n354 go\r\n"],
    ],
)
async def test_reply_queue_protocol_keeps_every_reply(chunks):
    protocol = ReplyQueueProtocol(asyncio.get_running_loop())
    protocol.connection_made(FakeTransport())
    reading = asyncio.ensure_future(protocol.read_response())
    await asyncio.sleep(0)
    for chunk in chunks:
        protocol.data_received(chunk)
    replies = [await reading] + [await protocol.read_response() for _ in range(3)]
    assert [(r.code, r.message) for r in replies] == [
        (250, "2.0.0 Ok"),
        (250, "2.1.0 Ok"),
        (250, "a\nb"),
        (354, "go"),
    ]


async def test_reply_queue_protocol_errors():
    protocol = ReplyQueueProtocol(asyncio.get_running_loop())
    transport = FakeTransport()
    protocol.connection_made(transport)
    protocol.data_received(b"250 ok\r\nnonsense\r\n")
    assert (await protocol.read_response()).code == 250
    with pytest.raises(SMTPResponseException):
        await protocol.read_response()
    assert transport.closed
    protocol = ReplyQueueProtocol(asyncio.get_running_loop())
    protocol.connection_made(FakeTransport())
    protocol.data_received(b"221 bye\r\n")
    protocol.eof_received()
    protocol.connection_lost(None)
    assert (await protocol.read_response()).code == 221
    with pytest.raises(SMTPServerDisconnected):
        await protocol.read_response()
