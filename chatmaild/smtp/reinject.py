"""Reinjection client: hands an accepted transaction to the local Postfix, byte for byte.

Built on aiosmtplib's SMTPProtocol (transport, flow control, reply parsing, EOF and
connection-loss handling). The message is written with our own dot stuffing, because
aiosmtplib's `data()` rewrites bare CR into CRLF and we promise the downstream the exact
bytes we received.

When the downstream advertised PIPELINING (RFC 2920; Postfix does), RSET (on a reused
connection), MAIL, every RCPT and DATA go out in one write and their replies are read in
order; then the message and its final dot go out in a second write. That is two round trips
per message instead of five. Without PIPELINING the commands go one at a time.

Connection reuse is safe by construction:
- only a connection whose last transaction ended in a downstream 250 goes back to the pool;
  any 4xx/5xx, timeout, disconnect or unexpected reply closes it;
- a pooled connection is checked before use: it must still be connected (the transport is
  dropped when the server closes or sends EOF), not older than `max_idle` seconds, must not
  have sent anything while idle (a `421` before an idle timeout), and must answer RSET with
  250. Only then does the transaction count as started;
- if a reused connection fails before MAIL was accepted (the server timed it out at the
  same moment), nothing of the message was sent yet, so it is retried once on a fresh one;
- the message is written only after MAIL, every RCPT and DATA were accepted. When a
  pipelined command was refused, the connection is closed without a word more: a DATA that
  the server answered with 354 anyway sees end-of-file instead of a final dot, so the
  server queues nothing.
"""

import asyncio
import re
import time
from collections import deque

from aiosmtplib import SMTPConnectResponseError, SMTPException, SMTPResponse
from aiosmtplib.errors import SMTPResponseException, SMTPServerDisconnected
from aiosmtplib.esmtp import parse_esmtp_extensions
from aiosmtplib.protocol import MAX_RESPONSE_LENGTH, SMTPProtocol

from .proto import Reply, Transaction

DEFAULT_TIMEOUT = 60.0

# CR, LF and other controls in an address would inject commands into our command stream
_CONTROL = re.compile(rb"[\x00-\x1f\x7f]")
BAD_ADDRESS = Reply(553, "5.1.3 Error: control character in envelope address")


class _Downstream(Exception):
    """The downstream refused (4xx/5xx) or answered something unexpected."""

    def __init__(self, reply: Reply):
        self.reply = reply


class _Stale(Exception):
    """A reused connection failed before the transaction started."""


def downstream_reply(code: int, text: str) -> Reply:
    """Map a negative downstream reply to the reply for our client (same class, same text)."""
    if 400 <= code < 600:
        return Reply(code, text)
    return Reply(451, f"4.3.0 Error: unexpected reinjection reply {code} {text}".strip())


def dot_stuff(data: bytes, unstuffed_dots: int | None = None) -> bytes:
    """Message bytes (no bare LF, ending in CRLF or empty) -> DATA payload with final dot.

    `unstuffed_dots` is what the receiving side counted (`Transaction.unstuffed_dots`): with
    0 no line starts with a dot, and the search through the whole message is skipped.
    """
    if unstuffed_dots == 0 and not data.startswith(b"."):
        stuffed = data
    else:
        stuffed = data.replace(b"\r\n.", b"\r\n..")
        if stuffed.startswith(b"."):
            stuffed = b"." + stuffed
    if stuffed and not stuffed.endswith(b"\r\n"):
        stuffed += b"\r\n"
    return stuffed + b".\r\n"


class ReplyQueueProtocol(SMTPProtocol):
    """aiosmtplib's protocol, keeping every reply of a pipelined command group.

    The stock SMTPProtocol parses one reply per received segment and ignores data arriving
    while a parsed reply waits to be picked up: right for one command at a time, but the
    replies to a pipelined group usually arrive together in one segment. Here every complete
    reply is parsed (with aiosmtplib's parser) into `replies` as it arrives, and
    `read_response` takes them in order. Replies that arrive while no command is pending
    stay in `replies` too, so the pool can see that an idle connection spoke (`421`).
    """

    def __init__(self, loop=None):
        super().__init__(loop=loop)
        self.replies: deque[SMTPResponse] = deque()
        self._error: SMTPException | None = None

    def data_received(self, data: bytes) -> None:
        if self._response_waiter is None or self._error is not None:
            return
        buffer = self._buffer
        buffer.extend(data)
        try:
            while (reply := self._read_response_from_buffer()) is not None:
                self.replies.append(reply)
            if len(buffer) > MAX_RESPONSE_LENGTH:
                raise SMTPResponseException(-1, "Response too long")
        except SMTPException as exc:
            self._error = exc
            del buffer[:]
            if self.transport is not None:
                self.transport.close()
        waiter = self._response_waiter
        if (self.replies or self._error is not None) and not waiter.done():
            waiter.set_result(None)

    async def read_response(self, timeout: float | None = None) -> SMTPResponse:
        """The next reply, in order; waits (up to `timeout`) when none has arrived yet."""
        while True:
            if self.replies:
                return self.replies.popleft()
            if self._error is not None:
                raise self._error
            waiter = self._response_waiter
            if waiter is None:
                raise SMTPServerDisconnected("Connection lost")
            try:
                if timeout is None:
                    await waiter
                else:
                    await asyncio.wait_for(waiter, timeout)
            finally:
                if self.transport is None:
                    self._response_waiter = None
                elif self._response_waiter is waiter:
                    self._response_waiter = self._loop.create_future()


class Connection:
    """One downstream SMTP connection after its greeting and EHLO."""

    __slots__ = ("protocol", "pipelining")

    def __init__(self, protocol: ReplyQueueProtocol, pipelining: bool):
        self.protocol = protocol
        self.pipelining = pipelining

    @classmethod
    async def open(cls, host: str, port: int, local_hostname: str) -> "Connection":
        loop = asyncio.get_running_loop()
        protocol = ReplyQueueProtocol(loop)
        await loop.create_connection(lambda: protocol, host, port)
        try:
            greeting = await protocol.read_response()
            if greeting.code != 220:
                raise SMTPConnectResponseError(greeting.code, greeting.message)
            reply = await protocol.execute_command(b"EHLO", local_hostname.encode())
            if reply.code != 250:
                raise _Downstream(downstream_reply(reply.code, reply.message))
        except BaseException:
            if protocol.transport is not None:
                protocol.transport.close()
            raise
        extensions, _ = parse_esmtp_extensions(reply.message)
        return cls(protocol, "pipelining" in extensions)

    @property
    def is_connected(self) -> bool:
        return self.protocol.is_connected

    @property
    def spoke_while_idle(self) -> bool:
        return bool(self.protocol.replies) or self.protocol._error is not None

    def close(self, polite: bool = True) -> None:
        """Close without waiting. `polite`: say QUIT first (never while DATA may be open)."""
        transport = self.protocol.transport
        if transport is None or transport.is_closing():
            return
        if polite:
            transport.write(b"QUIT\r\n")
        transport.close()


class Reinjector:
    def __init__(
        self,
        host: str,
        port: int,
        *,
        local_hostname: str = "localhost",
        pool_size: int = 8,
        timeout: float = DEFAULT_TIMEOUT,
        max_idle: float = 30.0,
        clock=time.monotonic,
    ):
        self.host = host
        self.port = port
        self.local_hostname = local_hostname
        self.pool_size = pool_size
        self.timeout = timeout
        self.max_idle = max_idle
        self._clock = clock
        self._idle: deque[tuple[Connection, float]] = deque()
        # counters for tests and metrics
        self.connections_opened = 0
        self.connections_reused = 0

    async def send(self, tx: Transaction) -> Reply:
        """Reinject one transaction; never raises. 250 only after downstream 250."""
        envelope = envelope_commands(tx)
        if envelope is None:
            return BAD_ADDRESS
        try:
            async with asyncio.timeout(self.timeout):
                conn = self._take_idle()
                if conn is not None:
                    try:
                        return await self._transact(conn, tx, envelope, reused=True)
                    except _Stale:
                        pass
                conn = await self._connect()
                return await self._transact(conn, tx, envelope, reused=False)
        except _Downstream as refused:
            return refused.reply
        except TimeoutError:
            return Reply(451, "4.3.0 Error: reinjection timed out")
        except (OSError, SMTPException) as exc:
            return Reply(451, f"4.3.0 Error: reinjection failed: {type(exc).__name__}")

    async def close(self) -> None:
        while self._idle:
            conn, _ = self._idle.popleft()
            conn.close()

    @property
    def idle_connections(self) -> int:
        return len(self._idle)

    # -- internals ------------------------------------------------------------------------

    def _take_idle(self) -> Connection | None:
        now = self._clock()
        while self._idle:
            conn, since = self._idle.pop()
            if conn.is_connected and not conn.spoke_while_idle and now - since <= self.max_idle:
                return conn
            conn.close()
        return None

    def _release(self, conn: Connection) -> None:
        if conn.is_connected and len(self._idle) < self.pool_size:
            self._idle.append((conn, self._clock()))
        else:
            conn.close()

    async def _connect(self) -> Connection:
        conn = await Connection.open(self.host, self.port, self.local_hostname)
        self.connections_opened += 1
        return conn

    async def _transact(self, conn: Connection, tx: Transaction, envelope, reused: bool) -> Reply:
        ok = False
        try:
            if conn.pipelining:
                await _pipelined_envelope(conn.protocol, envelope, reused)
            else:
                await _lockstep_envelope(conn.protocol, envelope, reused)
            if reused:
                self.connections_reused += 1
            protocol = conn.protocol
            protocol.write(dot_stuff(tx.data, tx.unstuffed_dots))
            reply = await protocol.read_response()
            if reply.code != 250:
                raise _Downstream(downstream_reply(reply.code, reply.message))
            ok = True
            return Reply(250, reply.message)
        except _Downstream as refused:
            return refused.reply
        finally:
            if ok:
                self._release(conn)
            else:
                # a pipelined DATA may have been answered 354 after a refusal: no QUIT then,
                # the server must see end-of-file inside DATA and queue nothing
                conn.close(polite=not conn.pipelining)


async def _pipelined_envelope(protocol: ReplyQueueProtocol, envelope, reused: bool) -> None:
    """RSET (reused), MAIL, RCPT..., DATA in one write; check the replies in order."""
    mail, rcpts = envelope
    if reused:
        try:
            protocol.write(b"".join((b"RSET\r\n", mail, *rcpts, b"DATA\r\n")))
            if (await protocol.read_response()).code != 250:
                raise _Stale()
            _expect(await protocol.read_response(), 250)
        except (OSError, SMTPException) as exc:
            raise _Stale() from exc
    else:
        protocol.write(b"".join((mail, *rcpts, b"DATA\r\n")))
        _expect(await protocol.read_response(), 250)
    for _ in rcpts:
        reply = await protocol.read_response()
        if reply.code != 250 and reply.code != 251:
            raise _Downstream(downstream_reply(reply.code, reply.message))
    _expect(await protocol.read_response(), 354)


async def _lockstep_envelope(protocol: ReplyQueueProtocol, envelope, reused: bool) -> None:
    """The same, one command per round trip, for a downstream without PIPELINING."""
    mail, rcpts = envelope
    if reused:
        try:
            protocol.write(b"RSET\r\n")
            if (await protocol.read_response()).code != 250:
                raise _Stale()
            protocol.write(mail)
            _expect(await protocol.read_response(), 250)
        except (OSError, SMTPException) as exc:
            raise _Stale() from exc
    else:
        protocol.write(mail)
        _expect(await protocol.read_response(), 250)
    for rcpt in rcpts:
        protocol.write(rcpt)
        reply = await protocol.read_response()
        if reply.code != 250 and reply.code != 251:
            raise _Downstream(downstream_reply(reply.code, reply.message))
    protocol.write(b"DATA\r\n")
    _expect(await protocol.read_response(), 354)


def _expect(reply: SMTPResponse, code: int) -> None:
    if reply.code != code:
        raise _Downstream(downstream_reply(reply.code, reply.message))


def envelope_commands(tx: Transaction) -> tuple[bytes, list[bytes]] | None:
    """(MAIL line, [RCPT lines]) with CRLF, or None if an address holds a control character."""
    sender = tx.mail_from.encode("utf-8", "surrogateescape")
    mail = b"MAIL FROM:<" + sender + b">"
    body = tx.body_type
    if body is not None:
        mail += b" BODY=" + body.encode("ascii", "replace")
    if tx.smtputf8:
        mail += b" SMTPUTF8"
    rcpts = [b"RCPT TO:<" + r.encode("utf-8", "surrogateescape") + b">\r\n" for r in tx.rcpt_tos]
    if _CONTROL.search(mail) or any(_CONTROL.search(r, 0, len(r) - 2) for r in rcpts):
        return None
    return mail + b"\r\n", rcpts
