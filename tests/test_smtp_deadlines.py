"""Deadlines and graceful shutdown of the SMTP server, over real sockets (short timeouts).

A peer that trickles bytes must not hold a session: a command line has `command_timeout`
seconds in all, DATA content that plus one second per `min_data_rate` bytes, a session
`session_timeout`. On shutdown an upload in flight completes and gets its reply."""

import asyncio
import time

from filtermail_server_helpers import Client

from chatmaild.smtp.proto import Reply
from chatmaild.smtp.server import Handler, ServerSettings, SMTPServer


class Recorder(Handler):
    def __init__(self):
        self.messages = []

    async def on_message(self, tx):
        self.messages.append(tx.data)
        return Reply(250, "2.0.0 queued")


async def start(handler=None, **settings):
    server = SMTPServer(handler or Recorder(), "127.0.0.1", 0, settings=ServerSettings(**settings))
    return await server.start()


async def trickle(client, data, interval):
    """Send `data` one byte per `interval` s until the server closes; the seconds it took."""
    started = time.monotonic()
    for byte in data:
        if client.reader.at_eof():
            break
        client.writer.write(bytes([byte]))
        try:
            await client.writer.drain()
        except ConnectionError:
            break
        await asyncio.sleep(interval)
    return time.monotonic() - started


async def closed_with(client, timeout=10):
    """The last reply before the server closed the connection."""
    data = await asyncio.wait_for(client.reader.read(), timeout)
    return data.decode().strip().splitlines()[-1]


async def test_a_trickled_command_line_is_cut_by_its_deadline():
    server = await start(command_timeout=0.6)
    client = await Client.connect(server.port)
    started = time.monotonic()
    sender = asyncio.ensure_future(trickle(client, b"NOOP and more and more\r\n" * 10, 0.05))
    assert await closed_with(client) == "421 4.4.2 Error: timeout exceeded"
    assert 0.5 < time.monotonic() - started < 3
    sender.cancel()
    await server.shutdown(grace=0)


async def test_steady_commands_keep_a_session_beyond_the_command_timeout():
    server = await start(command_timeout=0.5)
    client = await Client.connect(server.port)
    for _ in range(6):
        await asyncio.sleep(0.25)
        assert (await client.cmd(b"NOOP"))[0] == 250
    await server.shutdown(grace=0)


async def test_a_trickled_message_is_cut_but_a_steady_upload_passes():
    handler = Recorder()
    server = await start(handler, command_timeout=0.6, min_data_rate=100_000)
    slow = await Client.connect(server.port)
    slow.write(b"MAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\n")
    assert [c for c, _ in await slow.replies(3)] == [250, 250, 354]
    started = time.monotonic()
    sender = asyncio.ensure_future(trickle(slow, b"x" * 1000, 0.05))
    assert await closed_with(slow) == "421 4.4.2 Error: timeout exceeded"
    assert time.monotonic() - started < 3
    sender.cancel()

    # 400 kB in 2 s: four times the deadline of an empty message, but above the minimum rate
    fast = await Client.connect(server.port)
    fast.write(b"MAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\n")
    assert [c for c, _ in await fast.replies(3)] == [250, 250, 354]
    for _ in range(20):
        fast.write(b"y" * 998 + b"\r\n" + b"z" * 19_000 + b"\r\n")
        await asyncio.sleep(0.1)
    fast.write(b".\r\n")
    assert (await fast.reply())[0] == 250
    assert len(handler.messages) == 1
    await server.shutdown(grace=0)


async def test_a_session_has_an_overall_deadline():
    server = await start(command_timeout=5, session_timeout=1.0)
    client = await Client.connect(server.port)
    started = time.monotonic()
    reading = asyncio.ensure_future(closed_with(client))
    while not reading.done() and time.monotonic() - started < 5:
        client.writer.write(b"NOOP\r\n")
        await asyncio.sleep(0.2)
    assert await reading == "421 4.4.2 Error: session too long"
    assert 0.9 < time.monotonic() - started < 3
    await server.shutdown(grace=0)


async def test_shutdown_lets_an_upload_in_flight_finish():
    handler = Recorder()
    server = await start(handler)
    idle = await Client.connect(server.port)
    uploading = await Client.connect(server.port)
    uploading.write(b"MAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\n")
    assert [c for c, _ in await uploading.replies(3)] == [250, 250, 354]
    uploading.write(b"first part\r\n")
    await asyncio.sleep(0.1)

    stopping = asyncio.ensure_future(server.shutdown(grace=10))
    assert (await idle.reply()) == (421, "4.3.2 Service shutting down")
    # no new connection is accepted
    try:
        await asyncio.wait_for(asyncio.open_connection("127.0.0.1", server.port), 2)
        raise AssertionError("a connection was accepted while shutting down")
    except OSError:
        pass
    await asyncio.sleep(0.3)
    assert not stopping.done()
    uploading.write(b"second part\r\n.\r\n")
    assert (await uploading.reply()) == (250, "2.0.0 queued")
    assert (await uploading.reply()) == (421, "4.3.2 Service shutting down")
    await asyncio.wait_for(stopping, 5)
    assert handler.messages == [b"first part\r\nsecond part\r\n"]


async def test_shutdown_closes_what_is_left_after_the_grace_period():
    server = await start()
    stuck = await Client.connect(server.port)
    stuck.write(b"MAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\n")
    assert [c for c, _ in await stuck.replies(3)] == [250, 250, 354]
    started = time.monotonic()
    await server.shutdown(grace=0.5)
    assert time.monotonic() - started < 2
    assert await asyncio.wait_for(stuck.reader.read(), 5) is not None
    assert not server.sessions


async def test_an_endless_overlong_line_is_no_progress():
    """Input dropped for its length (no LF ever) is consumed, but completes no command."""
    server = await start(command_timeout=0.6)
    client = await Client.connect(server.port)
    started = time.monotonic()
    reading = asyncio.ensure_future(closed_with(client))
    # keep writing far beyond the deadline: the server must close while bytes still flow
    # (were dropped input progress, only the idle timer after the last write would close it)
    while not reading.done() and time.monotonic() - started < 30:
        try:
            client.writer.write(b"x" * 2000)
            await client.writer.drain()
        except ConnectionError:
            break
        await asyncio.sleep(0.05)
    assert time.monotonic() - started < 30, "still open after 30 s of overlong input"
    assert await asyncio.wait_for(reading, 5) == "421 4.4.2 Error: timeout exceeded"
    await server.shutdown(grace=0)
