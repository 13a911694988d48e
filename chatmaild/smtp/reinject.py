"""Reinjection client: hands an accepted transaction to the local Postfix, byte for byte.

Built on aiosmtplib's connection and reply parsing. The message is written with our own dot
stuffing, because aiosmtplib's `data()` rewrites bare CR into CRLF and we promise the
downstream the exact bytes we received.

Connection reuse is safe by construction:
- only a connection whose last transaction ended in a downstream 250 goes back to the pool;
  any 4xx/5xx, timeout, disconnect or unexpected reply closes it;
- a pooled connection is checked before use: it must still be connected (aiosmtplib drops
  the transport when the server closes or sends EOF), not older than `max_idle` seconds,
  and must answer RSET with 250. Only then is MAIL sent;
- if a reused connection fails before MAIL was accepted (the server timed it out at the
  same moment), nothing of the message was sent yet, so it is retried once on a fresh one.
"""

import asyncio
import time
from collections import deque

from aiosmtplib import SMTP, SMTPException

from .proto import Reply, Transaction

DEFAULT_TIMEOUT = 60.0


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
        self._idle: deque[tuple[SMTP, float]] = deque()
        # counters for tests and metrics
        self.connections_opened = 0
        self.connections_reused = 0

    async def send(self, tx: Transaction) -> Reply:
        """Reinject one transaction; never raises. 250 only after downstream 250."""
        try:
            async with asyncio.timeout(self.timeout):
                smtp, reused = self._take_idle()
                if smtp is not None:
                    try:
                        return await self._transact(smtp, tx, reused=True)
                    except _Stale:
                        pass
                smtp = await self._connect()
                return await self._transact(smtp, tx, reused=False)
        except _Downstream as refused:
            return refused.reply
        except TimeoutError:
            return Reply(451, "4.3.0 Error: reinjection timed out")
        except (OSError, SMTPException) as exc:
            return Reply(451, f"4.3.0 Error: reinjection failed: {type(exc).__name__}")

    async def close(self) -> None:
        while self._idle:
            smtp, _ = self._idle.popleft()
            _discard(smtp)

    @property
    def idle_connections(self) -> int:
        return len(self._idle)

    # -- internals ------------------------------------------------------------------------

    def _take_idle(self):
        now = self._clock()
        while self._idle:
            smtp, since = self._idle.pop()
            if smtp.is_connected and now - since <= self.max_idle:
                return smtp, True
            _discard(smtp)
        return None, False

    def _release(self, smtp: SMTP) -> None:
        if smtp.is_connected and len(self._idle) < self.pool_size:
            self._idle.append((smtp, self._clock()))
        else:
            _discard(smtp)

    async def _connect(self) -> SMTP:
        smtp = SMTP(
            hostname=self.host,
            port=self.port,
            local_hostname=self.local_hostname,
            timeout=self.timeout,
            start_tls=False,
            use_tls=False,
        )
        await smtp.connect()
        self.connections_opened += 1
        try:
            reply = await smtp.execute_command(b"EHLO", self.local_hostname.encode())
            if reply.code != 250:
                raise _Downstream(downstream_reply(reply.code, reply.message))
        except BaseException:
            _discard(smtp)
            raise
        return smtp

    async def _transact(self, smtp: SMTP, tx: Transaction, reused: bool) -> Reply:
        ok = False
        try:
            if reused:
                try:
                    reply = await smtp.execute_command(b"RSET")
                    if reply.code != 250:
                        raise _Stale()
                    await self._command(smtp, _mail_command(tx), (250,))
                except (OSError, SMTPException) as exc:
                    raise _Stale() from exc
                self.connections_reused += 1
            else:
                await self._command(smtp, _mail_command(tx), (250,))
            for rcpt in tx.rcpt_tos:
                to = b"TO:<" + rcpt.encode("utf-8", "surrogateescape") + b">"
                await self._command(smtp, (b"RCPT", to), (250, 251))
            await self._command(smtp, (b"DATA",), (354,))
            smtp.protocol.write(dot_stuff(tx.data, tx.unstuffed_dots))
            reply = await smtp.protocol.read_response(timeout=self.timeout)
            if reply.code != 250:
                raise _Downstream(downstream_reply(reply.code, reply.message))
            ok = True
            return Reply(250, reply.message)
        except _Downstream as refused:
            return refused.reply
        finally:
            if ok:
                self._release(smtp)
            else:
                _discard(smtp)

    async def _command(self, smtp: SMTP, args, expected) -> None:
        reply = await smtp.execute_command(*args)
        if reply.code not in expected:
            raise _Downstream(downstream_reply(reply.code, reply.message))


def _mail_command(tx: Transaction) -> tuple:
    args = [b"MAIL", b"FROM:<" + tx.mail_from.encode("utf-8", "surrogateescape") + b">"]
    body = tx.body_type
    if body is not None:
        args.append(b"BODY=" + body.encode("ascii"))
    if tx.smtputf8:
        args.append(b"SMTPUTF8")
    return tuple(args)


def _discard(smtp: SMTP) -> None:
    """Close without waiting: a polite QUIT if still connected, then drop the transport."""
    try:
        if smtp.is_connected:
            smtp.protocol.write(b"QUIT\r\n")
    except (OSError, SMTPException, RuntimeError):
        pass
    smtp.close()
