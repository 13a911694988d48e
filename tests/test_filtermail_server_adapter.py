"""The asyncio Protocol adapter with a fake transport: batching, flow control, timeouts,
handler failures, shutdown."""

import asyncio

from filtermail_server_helpers import Client

from chatmaild.smtp import server as smtp_server
from chatmaild.smtp.proto import Reply
from chatmaild.smtp.server import Handler, ServerSettings, SMTPServer, SMTPServerProtocol


class FakeTransport(asyncio.Transport):
    def __init__(self):
        super().__init__()
        self.written = []
        self.closed = False
        self.paused = False

    def write(self, data):
        self.written.append(data)

    def close(self):
        self.closed = True

    def is_closing(self):
        return self.closed

    def abort(self):
        self.closed = True

    def pause_reading(self):
        self.paused = True

    def resume_reading(self):
        self.paused = False


class GatedHandler(Handler):
    def __init__(self):
        self.gate = asyncio.Event()
        self.messages = []

    async def on_message(self, tx):
        await self.gate.wait()
        self.messages.append(tx.data)
        return Reply(250, "2.0.0 done")


class FailingHandler(Handler):
    def on_mail(self, event):
        raise RuntimeError("bug")

    async def on_message(self, tx):
        raise RuntimeError("bug")


def connect(handler, **settings):
    proto = SMTPServerProtocol(handler, ServerSettings(**settings), set())
    transport = FakeTransport()
    proto.connection_made(transport)
    return proto, transport


ENVELOPE = b"EHLO c\r\nMAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\n"


async def test_replies_of_a_chunk_go_out_in_one_write():
    proto, transport = connect(Handler())
    transport.written.clear()
    proto.data_received(b"NOOP\r\nNOOP\r\nHELO c\r\nRSET\r\n")
    assert len(transport.written) == 1
    assert transport.written[0].count(b"\r\n") == 4


async def test_reading_pauses_while_deciding_with_much_input_buffered():
    handler = GatedHandler()
    proto, transport = connect(handler)
    proto.data_received(ENVELOPE + b"x\r\n.\r\n")
    assert proto.task is not None and not transport.paused
    proto.data_received(b"NOOP\r\n" * (smtp_server.PAUSE_BUFFERED // 6 + 1))
    assert transport.paused
    handler.gate.set()
    await proto.task
    assert not transport.paused
    assert handler.messages == [b"x\r\n"]
    out = b"".join(transport.written)
    assert out.count(b"250 2.0.0 Ok\r\n") > 1000  # the queued NOOPs were answered after


async def test_write_backpressure_pauses_reading():
    proto, transport = connect(Handler())
    proto.pause_writing()
    assert transport.paused
    proto.resume_writing()
    assert not transport.paused


async def test_handler_exceptions_become_451():
    proto, transport = connect(FailingHandler())
    transport.written.clear()
    proto.data_received(b"EHLO c\r\nMAIL FROM:<a@x>\r\n")
    assert transport.written[-1].endswith(
        b"\r\n451 4.3.0 Error: internal error, try again later\r\n"
    )
    proto.data_received(b"NOOP\r\n")
    assert transport.written[-1].startswith(b"250 ")


async def test_message_handler_exception_becomes_451():
    class Failing(Handler):
        async def on_message(self, tx):
            raise RuntimeError("bug")

    proto, transport = connect(Failing())
    proto.data_received(ENVELOPE + b"x\r\n.\r\n")
    await proto.task
    assert transport.written[-1].startswith(b"451 4.3.0")
    assert not transport.closed


async def test_eof_mid_data_closes_without_handler():
    handler = GatedHandler()
    proto, transport = connect(handler)
    proto.data_received(ENVELOPE + b"partial\r\nQUIT\r\n")
    proto.eof_received()
    assert transport.closed and proto.task is None


async def test_eof_after_final_dot_still_answers_then_closes():
    handler = GatedHandler()
    proto, transport = connect(handler)
    proto.data_received(ENVELOPE + b"x\r\n.\r\n")
    proto.eof_received()
    assert not transport.closed
    handler.gate.set()
    await proto.task
    assert transport.written[-1] == b"250 2.0.0 done\r\n"
    assert transport.closed


async def test_idle_timeout_over_a_socket():
    server = await SMTPServer(
        Handler(), "127.0.0.1", 0, settings=ServerSettings(idle_timeout=0.2)
    ).start()
    client = await Client.connect(server.port)
    code, text = await client.reply()  # sent by the server on its own
    assert (code, text) == (421, "4.4.2 Error: timeout exceeded")
    assert await client.reader.read() == b""
    await server.shutdown(grace=0)


async def test_shutdown_closes_idle_and_waits_for_busy_sessions():
    handler = GatedHandler()
    server = await SMTPServer(handler, "127.0.0.1", 0).start()
    idle = await Client.connect(server.port)
    busy = await Client.connect(server.port)
    busy.write(b"MAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\nx\r\n.\r\n")
    assert [c for c, _ in await busy.replies(3)] == [250, 250, 354]
    while not any(s.task for s in server.sessions):
        await asyncio.sleep(0.01)
    stopping = asyncio.ensure_future(server.shutdown(grace=10))
    assert (await idle.reply())[0] == 421
    handler.gate.set()
    assert (await busy.reply()) == (250, "2.0.0 done")
    await stopping
    assert handler.messages == [b"x\r\n"]
