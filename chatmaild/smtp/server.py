"""asyncio Protocol adapter around the sans-I/O SMTP core.

Every `data_received` feeds the core and handles all ready events in one synchronous pass;
the replies of a chunk go out in one write. MAIL and RCPT decisions are synchronous handler
calls; a finished message runs the handler's coroutine as a task, so one slow reinjection
never holds up other sessions. No parsing and no policy here.

Flow control: reading pauses while the transport's write buffer is over its high-water mark
(the client does not read our replies) and while a message is being decided and more than
`PAUSE_BUFFERED` bytes of further input are waiting.

Deadlines (one `call_later` handle per session, re-armed lazily), so that a peer that
trickles bytes cannot hold a session (and a descriptor) for ever:
- command: a whole command line must arrive within `command_timeout` s of the previous one
  (or of the greeting, or of our reply to a message); bytes of an unfinished line do not
  extend it. `421 4.4.2 Error: timeout exceeded`.
- DATA: the content gets `command_timeout` s plus one second per `min_data_rate` bytes
  received (Postfix's smtpd_min_data_rate idea), so a slow but steady upload passes and a
  trickle does not.
- session: `session_timeout` s from the connection, whatever happens in it.
While a message is being decided (reinjection) the client is not timed.

Shutdown (`SMTPServer.shutdown`): stop listening; a session between transactions gets
`421 4.3.2` at once, a session inside one (MAIL given, message being uploaded or decided)
finishes it, gets its reply, then `421`; whatever is left after the grace period is closed.
"""

import asyncio
import logging
import time

from chatmaild import acceptor

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
    State,
)

log = logging.getLogger(__name__)

PAUSE_BUFFERED = 256 * 1024
DEFAULT_BACKLOG = 1024
# Postfix's smtpd_timeout is 300 s: its proxy connection to us lives no longer idle
DEFAULT_COMMAND_TIMEOUT = 300.0
DEFAULT_SESSION_TIMEOUT = 3600.0
DEFAULT_MIN_DATA_RATE = 500  # bytes/s, as Postfix's smtpd_min_data_rate
# after the grace period, a message whose reinjection is under way gets this much longer:
# cutting it between Postfix's 250 and our reply is what makes a client send it twice
TASK_GRACE = 5.0
TIMEOUT_REPLY = Reply(421, "4.4.2 Error: timeout exceeded")
SESSION_TIMEOUT_REPLY = Reply(421, "4.4.2 Error: session too long")
SHUTDOWN_REPLY = Reply(421, "4.3.2 Service shutting down")
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
        self._session_deadline = 0.0
        self._command_since = 0.0  # when the command being awaited could start
        self._data_since = None  # when DATA content began, None outside DATA
        self._data_bytes = 0
        self._read_paused = False
        self._write_paused = False
        self._closing = False
        self._draining = False  # shutting down: close once between transactions

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
        now = self._loop.time()
        self._command_since = now
        self._session_deadline = now + self.settings.session_timeout
        first = min(self.settings.command_timeout, self.settings.session_timeout)
        self._timer = self._loop.call_later(first, self._on_timer)

    def data_received(self, data):
        if self._data_since is not None:
            self._data_bytes += len(data)
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
        if self._flush():  # a reply: a command was complete, the deadline starts over
            self._progress()
        if not self._closing and self._draining and self._between_transactions():
            self._close_with(SHUTDOWN_REPLY)
        if self._closing:
            if self.transport is not None:
                self.transport.close()
        else:
            self._update_reading()

    def _progress(self):
        """A command got its reply: the command deadline starts over; after `354` the DATA
        deadline starts. (Bytes alone are no progress: a line dropped for its length, or
        one arriving byte by byte, does not extend anything.)"""
        now = self._loop.time()
        self._command_since = now
        if self.conn.state is State.DATA:
            if self._data_since is None:
                self._data_since = now
                self._data_bytes = 0
        else:
            self._data_since = None

    def _between_transactions(self):
        return self.task is None and self.conn.state in (State.INIT, State.READY)

    def _close_with(self, reply):
        self._closing = True
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(reply.to_bytes())
            self.transport.close()

    def _flush(self):
        out = self.conn.data_to_send()
        if out and self.transport is not None and not self.transport.is_closing():
            self.transport.write(out)
        return bool(out)

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
        self._command_since = self._loop.time()
        self._data_since = None
        if self.transport is None:
            return
        self.conn.answer(reply)
        self._process()

    def deadline(self):
        """(when, reply) of the deadline in force now; None while a message is decided."""
        if self.task is not None:
            return None
        settings = self.settings
        if self._data_since is not None:
            allowed = settings.command_timeout + self._data_bytes / settings.min_data_rate
            when = self._data_since + allowed
        else:
            when = self._command_since + settings.command_timeout
        if self._session_deadline <= when:
            return self._session_deadline, SESSION_TIMEOUT_REPLY
        return when, TIMEOUT_REPLY

    def _on_timer(self):
        self._timer = None
        if self.transport is None or self._closing:
            return
        due = self.deadline()
        now = self._loop.time()
        if due is None:
            self._timer = self._loop.call_later(self.settings.command_timeout, self._on_timer)
            return
        when, reply = due
        if now < when:
            self._timer = self._loop.call_later(when - now, self._on_timer)
            return
        peer = self.transport.get_extra_info("peername")
        log.info("closing session from %s: %s", _peer(peer), reply.text)
        self._close_with(reply)

    def begin_shutdown(self) -> bool:
        """For shutdown: close now if between transactions (True), else once the one in
        flight got its reply."""
        if self.transport is None or self.transport.is_closing():
            return True
        self._draining = True
        if self._between_transactions():
            self._close_with(SHUTDOWN_REPLY)
            return True
        return False

    def close_if_idle(self) -> bool:
        """Close at once unless a message is being decided (True when closed)."""
        if self.transport is None or self.transport.is_closing():
            return True
        if self.task is None:
            self._close_with(SHUTDOWN_REPLY)
            return True
        return False


def _peer(peer):
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return str(peer)


class ServerSettings:
    def __init__(
        self,
        hostname: str = "localhost",
        max_message_size: int = 31457280,
        command_timeout: float = DEFAULT_COMMAND_TIMEOUT,
        xforward: tuple[str, ...] = (),
        session_timeout: float = DEFAULT_SESSION_TIMEOUT,
        min_data_rate: float = DEFAULT_MIN_DATA_RATE,
        idle_timeout: float | None = None,  # the older name of command_timeout
        lmtp: bool = False,
    ):
        self.hostname = hostname
        self.max_message_size = max_message_size
        self.command_timeout = command_timeout if idle_timeout is None else idle_timeout
        self.session_timeout = session_timeout
        self.min_data_rate = min_data_rate
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
        sock = acceptor.tcp_listener(self.host, self.port, self.backlog)
        self.port = sock.getsockname()[1]
        self.server = acceptor.start(
            sock,
            lambda: SMTPServerProtocol(self.handler, self.settings, self.sessions),
            f"{self.host}:{self.port}",
        )
        return self

    async def shutdown(self, grace: float = 10.0) -> None:
        """Stop listening; sessions between transactions close at once, a transaction in
        flight (upload or decision) may finish within `grace` s; then the rest is closed
        (a reinjection under way gets `TASK_GRACE` s more)."""
        if self.server is not None:
            self.server.close()
        deadline = time.monotonic() + grace
        for session in list(self.sessions):
            session.begin_shutdown()
        while self.sessions and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        cut = [s for s in list(self.sessions) if not s.close_if_idle()]
        deadline = time.monotonic() + TASK_GRACE
        while cut and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            cut = [s for s in cut if s.task is not None]
        left = list(self.sessions)
        if left:
            log.warning("%d sessions still open after the grace period: closed", len(left))
        for session in left:
            if session.task is not None:
                session.task.cancel()
            if session.transport is not None:
                session.transport.abort()
        if self.server is not None:
            await self.server.wait_closed()
