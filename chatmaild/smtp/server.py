"""asyncio Protocol adapter around the sans-I/O SMTP core.

Every `data_received` feeds the core and handles all ready events in one synchronous pass;
the replies of a chunk go out in one write. MAIL and RCPT decisions are synchronous handler
calls; a finished message runs the handler's coroutine as a task, so one slow reinjection
never holds up other sessions. No parsing and no policy here.

Flow control: reading pauses while the transport's write buffer is over its high-water mark
(the client does not read our replies) and while a message is being decided and more than
`PAUSE_BUFFERED` bytes of further input are waiting. Idle sessions get `421` after
`idle_timeout` seconds (one `call_later` handle per session, re-armed lazily).
"""

import asyncio
import logging
import time

from .proto import (
    NEED_DATA,
    PAUSED,
    ConnectionClosed,
    MailFrom,
    MessageComplete,
    MessageRefused,
    RcptTo,
    Reply,
    ServerConnection,
)

log = logging.getLogger(__name__)

PAUSE_BUFFERED = 256 * 1024
DEFAULT_BACKLOG = 1024
DEFAULT_IDLE_TIMEOUT = 300.0
_running: set = set()  # strong references to message tasks until they finish
INTERNAL_ERROR = Reply(451, "4.3.0 Error: internal error, try again later")


class Handler:
    """Policy hooks; the defaults accept everything and reply 554 to a message."""

    def on_mail(self, event: MailFrom) -> Reply | None:
        return None

    def on_rcpt(self, event: RcptTo, transaction) -> Reply | None:
        return None

    def on_refused(self, event: MessageRefused) -> None:
        pass

    async def on_message(self, transaction):
        """The Reply for the client; an LMTP server returns one Reply per recipient."""
        return Reply(554, "5.3.0 Error: no message handler")


class SMTPServerProtocol(asyncio.Protocol):
    def __init__(self, handler: Handler, settings: "ServerSettings", sessions: set):
        self.handler = handler
        self.settings = settings
        self.sessions = sessions
        self.transport = None
        self.conn = None
        self.task = None
        self._loop = asyncio.get_running_loop()
        self._timer = None
        self._last_activity = 0.0
        self._read_paused = False
        self._write_paused = False
        self._closing = False

    # -- asyncio callbacks -------------------------------------------------------------

    def connection_made(self, transport):
        self.transport = transport
        self.sessions.add(self)
        self.conn = ServerConnection(
            hostname=self.settings.hostname,
            max_message_size=self.settings.max_message_size,
            xforward=self.settings.xforward,
            lmtp=self.settings.lmtp,
        )
        self.conn.greeting()
        transport.write(self.conn.data_to_send())
        self._last_activity = self._loop.time()
        self._timer = self._loop.call_later(self.settings.idle_timeout, self._on_timer)

    def data_received(self, data):
        self._last_activity = self._loop.time()
        self.conn.receive_data(data)
        self._process()

    def eof_received(self):
        self.conn.receive_data(b"")
        self._process()
        return True  # we close the transport ourselves once pending work is done

    def connection_lost(self, exc):
        self.sessions.discard(self)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.transport = None
        # a running message task continues: its reinjection may already be under way

    def pause_writing(self):
        self._write_paused = True
        self._update_reading()

    def resume_writing(self):
        self._write_paused = False
        self._update_reading()

    # -- core driving ------------------------------------------------------------------

    def _process(self):
        conn = self.conn
        handler = self.handler
        while not self._closing:
            event = conn.next_event()
            if event is NEED_DATA:
                break
            if event is PAUSED:
                break
            kind = type(event)
            if kind is MailFrom or kind is RcptTo:
                try:
                    if kind is MailFrom:
                        reply = handler.on_mail(event)
                    else:
                        reply = handler.on_rcpt(event, conn.transaction)
                except Exception:
                    log.exception("smtp handler failed")
                    reply = INTERNAL_ERROR
                conn.answer(reply)
            elif kind is MessageComplete:
                self.task = self._loop.create_task(self._run_message(event.transaction))
                _running.add(self.task)
                self.task.add_done_callback(_running.discard)
            elif kind is MessageRefused:
                try:
                    handler.on_refused(event)
                except Exception:
                    log.exception("smtp handler failed")
            elif kind is ConnectionClosed:
                self._closing = True
        self._flush()
        if self._closing:
            if self.transport is not None:
                self.transport.close()
        else:
            self._update_reading()

    def _flush(self):
        out = self.conn.data_to_send()
        if out and self.transport is not None and not self.transport.is_closing():
            self.transport.write(out)

    def _update_reading(self):
        if self.transport is None or self.transport.is_closing():
            return
        want_pause = self._write_paused or (
            self.task is not None and self.conn.buffered > PAUSE_BUFFERED
        )
        if want_pause and not self._read_paused:
            self._read_paused = True
            self.transport.pause_reading()
        elif not want_pause and self._read_paused:
            self._read_paused = False
            self.transport.resume_reading()

    async def _run_message(self, transaction):
        try:
            reply = await self.handler.on_message(transaction)
        except Exception:
            log.exception("smtp message handler failed")
            reply = INTERNAL_ERROR
        self.task = None
        self._last_activity = self._loop.time()
        if self.transport is None:
            return
        self.conn.answer(reply)
        self._process()

    def _on_timer(self):
        self._timer = None
        if self.transport is None:
            return
        timeout = self.settings.idle_timeout
        idle = self._loop.time() - self._last_activity
        if self.task is not None or idle < timeout:
            delay = timeout if self.task is not None else timeout - idle
            self._timer = self._loop.call_later(delay, self._on_timer)
            return
        self.transport.write(Reply(421, "4.4.2 Error: timeout exceeded").to_bytes())
        self.transport.close()

    def close_if_idle(self) -> bool:
        """For shutdown: close at once unless a message is being decided."""
        if self.transport is None or self.transport.is_closing():
            return True
        if self.task is None:
            self.transport.write(Reply(421, "4.3.2 Service shutting down").to_bytes())
            self.transport.close()
            return True
        return False


class ServerSettings:
    def __init__(
        self,
        hostname: str = "localhost",
        max_message_size: int = 31457280,
        idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
        xforward: tuple[str, ...] = (),
        lmtp: bool = False,
    ):
        self.hostname = hostname
        self.max_message_size = max_message_size
        self.idle_timeout = idle_timeout
        self.xforward = xforward  # XFORWARD attribute names to announce; () = none
        self.lmtp = lmtp  # LMTP (RFC 2033): LHLO, one reply per recipient after DATA


class SMTPServer:
    """A listening SMTP server: `await start()`, `await shutdown(grace)`."""

    def __init__(
        self,
        handler: Handler,
        host: str,
        port: int,
        *,
        settings: ServerSettings | None = None,
        backlog: int = DEFAULT_BACKLOG,
    ):
        self.handler = handler
        self.host = host
        self.port = port
        self.settings = settings or ServerSettings()
        self.backlog = backlog
        self.sessions: set[SMTPServerProtocol] = set()
        self.server: asyncio.Server | None = None

    async def start(self) -> "SMTPServer":
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(
            lambda: SMTPServerProtocol(self.handler, self.settings, self.sessions),
            self.host,
            self.port,
            backlog=self.backlog,
            reuse_address=True,
        )
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def shutdown(self, grace: float = 10.0) -> None:
        """Stop listening, close idle sessions, let running messages finish for `grace` s."""
        if self.server is not None:
            self.server.close()
        deadline = time.monotonic() + grace
        while True:
            busy = [s for s in list(self.sessions) if not s.close_if_idle()]
            if not busy or time.monotonic() >= deadline:
                break
            await asyncio.sleep(0.05)
        for session in list(self.sessions):
            if session.task is not None:
                session.task.cancel()
            if session.transport is not None:
                session.transport.abort()
        if self.server is not None:
            await self.server.wait_closed()
