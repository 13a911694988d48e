"""The dict protocol over a unix stream socket: an asyncio Protocol that routes to a service.

Every complete line of a received chunk is handled in one pass and the replies of that chunk
go out in one write. Replies stay in request order: as soon as one answer is an awaitable,
later answers queue behind it and are flushed when it completes. Transactions live in the
connection that began them (Dovecot reuses ids across connections).

Bounds (`Limits`), checked by one sweep per server every few seconds, not a timer per
connection: at most `max_connections` at once (more are closed at once, with a rate-limited
log line); a connection idle (nothing owed, no transaction open) for `idle_timeout` is
closed; one whose unfinished request line is older than `line_timeout` (a peer trickling
bytes) is closed. Dovecot's dict client closes its connection as soon as it is idle (its
`idle_msecs` defaults to 0), and reconnects without a log line when it finds a connection
closed while idle, so an idle timeout of minutes never disturbs it (docs/dictproxy.md).
"""

import asyncio
import inspect
import logging
import os
from collections import deque

from chatmaild import acceptor, daemon
from chatmaild.daemon import listen_error, remove_stale_socket, stop_event

from . import proto
from .proto import (
    AtomicInc,
    Begin,
    Commit,
    Hello,
    HideLogValues,
    Iterate,
    Lookup,
    Malformed,
    Rollback,
    Set,
    Timestamp,
    Unset,
)

log = logging.getLogger("chatmaild.dictproxy")

#: stop reading from a connection while this many replies wait for awaitables
MAX_PENDING_REPLIES = 1024


class Limits:
    """The bounds of one dict socket (module docstring)."""

    __slots__ = ("max_connections", "idle_timeout", "line_timeout", "sweep_interval")

    def __init__(
        self, max_connections=8192, idle_timeout=600.0, line_timeout=30.0, sweep_interval=5.0
    ):
        self.max_connections = max_connections
        self.idle_timeout = idle_timeout
        self.line_timeout = line_timeout
        self.sweep_interval = sweep_interval


class DictFailure(Exception):
    """Raised by a service to answer a request with a failure (`F`) carrying this message."""


class Transaction:
    """The changes of one dict transaction, handed to `service.commit()` on `C`."""

    __slots__ = ("user", "ops", "timestamp")

    def __init__(self, user: str, ops=None):
        self.user = user
        #: ("S", key, value) | ("U", key) | ("A", key, delta)
        self.ops = [] if ops is None else ops
        self.timestamp = None

    def __repr__(self):
        return f"Transaction(user={self.user!r}, ops={len(self.ops)})"


class _Reply:
    """A reply still being computed; its future resolves to the reply text."""

    __slots__ = ("future",)

    def __init__(self, future):
        self.future = future


#: tasks of awaited answers, held until done: a commit must finish even if its client left
_running = set()


def _task(coro):
    task = asyncio.ensure_future(coro)
    _running.add(task)
    task.add_done_callback(_running.discard)
    return task


async def _await_reply(awaitable, to_reply, failed, what):
    """The reply line of an awaited service result: `to_reply(result)`, or `failed(text)`."""
    try:
        return to_reply(await awaitable)
    except DictFailure as exc:
        return failed(str(exc))
    except Exception:
        log.exception("%s failed", what)
        return failed("internal error")


def _iter_reply(rows, request):
    """Rows (only keys under the requested path) followed by the empty-line terminator."""
    path = request.path
    flags = request.flags
    recurse = flags & proto.ITER_RECURSE
    no_value = flags & proto.ITER_NO_VALUE
    exact = flags & proto.ITER_EXACT_KEY
    limit = request.max_rows
    lines = []
    start = len(path)
    for key, value in rows or ():
        if not key.startswith(path):
            continue
        if exact:
            if key != path:
                continue
        elif not recurse and "/" in key[start:]:
            continue
        lines.append(proto.reply_iter_row(key, "" if no_value else value))
        if limit and len(lines) >= limit:
            break
    lines.append(proto.REPLY_ITER_END)
    return "".join(lines)


class DictConnection(asyncio.Protocol):
    """One client connection. Kept small: no task, no buffers while idle."""

    __slots__ = (
        "_service",
        "_server",
        "_transport",
        "_reader",
        "_txns",
        "_pending",
        "_paused",
        "_eof",
        "_last",
        "_partial_since",
    )

    def __init__(self, service, server):
        self._service = service
        self._server = server
        self._transport = None
        self._reader = proto.LineReader()
        self._txns = None  # txid -> Transaction, created on first B
        self._pending = None  # deque of str | _Reply once an answer had to be awaited
        self._paused = 0  # bit 1: too many awaited replies, bit 2: write buffer full
        self._eof = False
        self._last = 0.0  # loop time of the last request bytes
        self._partial_since = None  # loop time an unfinished line began, None if none

    # -- asyncio callbacks -------------------------------------------------------------------

    def connection_made(self, transport):
        self._transport = transport
        server = self._server
        if len(server.connections) >= server.limits.max_connections:
            transport.abort()
            server.refused(len(server.connections))
            return
        server.connections.add(self)
        self._last = server.loop.time()
        server.ensure_sweeping()

    def connection_lost(self, exc):
        self._server.connections.discard(self)
        self._transport = None
        self._txns = None
        self._pending = None

    def data_received(self, data):
        pending = self._pending
        out = []
        reader = self._reader
        requests = reader.feed(data)
        now = self._last = self._server.loop.time()
        if not reader.buffered:
            self._partial_since = None
        elif requests or self._partial_since is None:
            self._partial_since = now
        for request in requests:
            try:
                reply = _HANDLERS[type(request)](self, request)
            except Exception:  # a bug must cost one request, not the connection
                log.exception("dict request %s failed", type(request).__name__)
                reply = proto.failure_reply(_COMMAND_LETTER[type(request)], "internal error")
            if reply is None:
                continue
            if pending is None:
                if type(reply) is str:
                    out.append(reply)
                    continue
                pending = self._pending = deque()
            pending.append(reply)
            if type(reply) is _Reply:
                reply.future.add_done_callback(self._reply_done)
        if out:
            self._transport.write(proto.encode_reply("".join(out)))
        if pending is not None:
            self._flush_pending()
            if self._pending is not None and len(self._pending) > MAX_PENDING_REPLIES:
                self._set_reading_paused(True, writer=False)

    def pause_writing(self):
        # the client does not read its replies: stop reading its requests until it does
        self._set_reading_paused(True, writer=True)

    def resume_writing(self):
        self._set_reading_paused(False, writer=True)

    def _set_reading_paused(self, paused, writer):
        bit = 2 if writer else 1
        before = self._paused
        self._paused = (before | bit) if paused else (before & ~bit)
        if self._transport is None or bool(before) == bool(self._paused):
            return
        if self._paused:
            self._transport.pause_reading()
        else:
            self._transport.resume_reading()

    def eof_received(self):
        if self._pending:
            self._eof = True
            return True  # half-close: finish writing the replies owed, then close
        return False

    def expired(self, now, limits):
        """Why this connection is to be closed now ("" if it is not)."""
        since = self._partial_since
        if since is not None and now - since > limits.line_timeout:
            return "unfinished request line"
        if self._pending or self._txns or now - self._last <= limits.idle_timeout:
            return ""
        return "idle"

    # -- ordering of awaited replies ---------------------------------------------------------

    def _reply_done(self, future):
        if self._transport is not None:
            self._flush_pending()

    def _flush_pending(self):
        pending = self._pending
        out = []
        while pending:
            head = pending[0]
            if type(head) is _Reply:
                if not head.future.done():
                    break
                out.append(head.future.result())
            else:
                out.append(head)
            pending.popleft()
        if out:
            self._transport.write(proto.encode_reply("".join(out)))
        if not pending:
            self._pending = None
            if self._paused & 1:
                self._set_reading_paused(False, writer=False)
            if self._eof:
                self._transport.close()

    # -- request handling --------------------------------------------------------------------

    def _lookup(self, request):
        try:
            result = self._service.lookup(request.key, request.user)
        except DictFailure as exc:
            return proto.reply_lookup_failed(str(exc))
        except Exception:
            log.exception("lookup failed")
            return proto.reply_lookup_failed("internal error")
        if result is None or type(result) is str:
            return proto.reply_lookup(result)
        if inspect.isawaitable(result):
            return _Reply(
                _task(_await_reply(result, proto.reply_lookup, proto.reply_lookup_failed, "lookup"))
            )
        log.error("lookup returned %s, not a string", type(result).__name__)
        return proto.reply_lookup_failed("internal error")

    def _iterate(self, request):
        try:
            rows = self._service.iterate(request.path, request.user, request.flags)
            if inspect.isawaitable(rows):
                return _Reply(
                    _task(
                        _await_reply(
                            rows,
                            lambda rows: _iter_reply(rows, request),
                            proto.reply_iter_failed,
                            "iteration",
                        )
                    )
                )
            return _iter_reply(rows, request)
        except DictFailure as exc:
            return proto.reply_iter_failed(str(exc))
        except Exception:
            log.exception("iteration failed")
            return proto.reply_iter_failed("internal error")

    def _begin(self, request):
        txns = self._txns
        if txns is None:
            txns = self._txns = {}
        elif request.txid in txns:
            log.warning("transaction %s begun twice on one connection", request.txid)
        txns[request.txid] = Transaction(request.user)

    def _txn(self, txid, command):
        txn = self._txns.get(txid) if self._txns is not None else None
        if txn is None:
            log.warning("%s for unknown transaction %s ignored", command, txid)
        return txn

    def _set(self, request):
        txn = self._txn(request.txid, "S")
        if txn is not None:
            txn.ops.append(("S", request.key, request.value))

    def _unset(self, request):
        txn = self._txn(request.txid, "U")
        if txn is not None:
            txn.ops.append(("U", request.key))

    def _atomic_inc(self, request):
        txn = self._txn(request.txid, "A")
        if txn is not None:
            txn.ops.append(("A", request.key, request.delta))

    def _timestamp(self, request):
        txn = self._txn(request.txid, "T")
        if txn is not None:
            txn.timestamp = (request.secs, request.nsecs)

    def _rollback(self, request):
        if self._txns is None or self._txns.pop(request.txid, None) is None:
            log.warning("R for unknown transaction %s ignored", request.txid)

    def _commit(self, request):
        txn = self._txns.pop(request.txid, None) if self._txns is not None else None
        if txn is None:
            log.warning("C for unknown transaction %s", request.txid)
            return proto.reply_commit_failed("unknown transaction")
        try:
            result = self._service.commit(txn)
        except DictFailure as exc:
            return proto.reply_commit_failed(str(exc))
        except Exception:
            log.exception("commit failed")
            return proto.reply_commit_failed("internal error")
        if type(result) is bool:  # the usual synchronous answer, without the inspect call
            return proto.reply_commit(result)
        if inspect.isawaitable(result):
            return _Reply(
                _task(
                    _await_reply(
                        result,
                        lambda ok: proto.reply_commit(bool(ok)),
                        proto.reply_commit_failed,
                        "commit",
                    )
                )
            )
        return proto.reply_commit(bool(result))

    def _ignore(self, request):
        return None

    def _malformed(self, request):
        # one line per bad request; the content is not logged (it may hold a password)
        log.warning(
            "malformed dict request %r: %s%s",
            request.command,
            request.reason,
            ", answered with failure" if request.reply else "",
        )
        return request.reply


_HANDLERS = {
    Lookup: DictConnection._lookup,
    Iterate: DictConnection._iterate,
    Hello: DictConnection._ignore,
    Begin: DictConnection._begin,
    Set: DictConnection._set,
    Unset: DictConnection._unset,
    AtomicInc: DictConnection._atomic_inc,
    Timestamp: DictConnection._timestamp,
    HideLogValues: DictConnection._ignore,
    Rollback: DictConnection._rollback,
    Commit: DictConnection._commit,
    Malformed: DictConnection._malformed,
}


_COMMAND_LETTER = {
    Lookup: "L",
    Iterate: "I",
    Hello: "H",
    Begin: "B",
    Set: "S",
    Unset: "U",
    AtomicInc: "A",
    Timestamp: "T",
    HideLogValues: "V",
    Rollback: "R",
    Commit: "C",
    Malformed: "?",
}


class _ServerState:
    __slots__ = ("connections", "limits", "loop", "what", "_sweeper", "_refusals", "_cuts")

    def __init__(self, limits, loop, what):
        self.connections = set()
        self.limits = limits
        self.loop = loop
        self.what = what
        self._sweeper = None
        self._refusals = acceptor.RateLimitedWarning()
        self._cuts = acceptor.RateLimitedWarning()

    def refused(self, count):
        n = self._refusals.event(self.loop.time())
        if n is not None:
            log.warning(
                "%s: %d connections open, the most allowed: %d new ones closed since the last"
                " such line",
                self.what,
                count,
                n,
            )

    def ensure_sweeping(self):
        if self._sweeper is None:
            self._sweeper = self.loop.call_later(self.limits.sweep_interval, self._sweep)

    def stop_sweeping(self):
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None

    def _sweep(self):
        self._sweeper = None
        now = self.loop.time()
        limits = self.limits
        for conn in list(self.connections):
            why = conn.expired(now, limits)
            if not why:
                continue
            if why != "idle":
                n = self._cuts.event(now)
                if n is not None:
                    log.warning(
                        "%s: closed %d connections with a request line unfinished for %g s",
                        self.what,
                        n,
                        limits.line_timeout,
                    )
            if conn._transport is not None:
                conn._transport.close()
        if self.connections:
            self.ensure_sweeping()


async def serve_unix(
    path, service, backlog: int = 1024, limits: Limits | None = None
) -> asyncio.AbstractServer:
    """Listen on unix socket `path` (owner-only permissions; a stale socket file is replaced)."""
    path = os.fspath(path)
    remove_stale_socket(path)
    state = _ServerState(limits or Limits(), asyncio.get_running_loop(), path)
    old_umask = os.umask(0o077)
    try:
        sock = acceptor.unix_listener(path, backlog)
    finally:
        os.umask(old_umask)
    server = acceptor.start(sock, lambda: DictConnection(service, state), path)
    _states[server] = state
    return server


#: server -> its state (open connections, limits)
_states = {}


def close_connections(server) -> None:
    """Close every connection of `server` (call after `server.close()`)."""
    state = _states.pop(server, None)
    if state is None:
        return
    state.stop_sweeping()
    for conn in list(state.connections):
        if conn._transport is not None:
            conn._transport.close()


async def _maybe_await(value):
    if inspect.isawaitable(value):
        await value


async def serve_until_signalled(socket_path, service) -> None:
    """Serve until SIGTERM/SIGINT, then stop listening, close connections, remove the socket."""
    stop = stop_event()
    start = getattr(service, "start", None)
    if start is not None:
        await _maybe_await(start())
    try:
        # like systemd's RuntimeDirectory=: the socket's directory is made when missing
        os.makedirs(os.path.dirname(os.path.abspath(socket_path)), exist_ok=True)
        server = await serve_unix(socket_path, service)
    except OSError as e:
        await _close_service(service)
        raise listen_error(socket_path, e) from None
    log.info("listening on %s", socket_path)
    try:
        await stop.wait()
        log.info("shutting down")
    finally:
        server.close()
        close_connections(server)
        try:
            await asyncio.wait_for(server.wait_closed(), 5)
        except TimeoutError:
            pass
        if _running:  # let commits and creations already started finish
            await asyncio.wait(set(_running), timeout=5)
        try:
            os.unlink(socket_path)
        except FileNotFoundError:
            pass
        await _close_service(service)


async def _close_service(service):
    close = getattr(service, "close", None)
    if close is not None:
        await _maybe_await(close())


def run_dict_service(socket_path, service) -> None:
    """Entry point helper: serve `service` on `socket_path` (uvloop if present) until signalled.

    A socket that cannot be created ends the process with one line and exit status 1.
    """
    daemon.run(serve_until_signalled(socket_path, service))
