"""Accepting connections ourselves, so that running out of file descriptors is seen.

uvloop (libuv) answers EMFILE/ENFILE on accept by silently accepting and closing the waiting
connections; asyncio's own loop logs a traceback per retry. Either way an operator learns
nothing useful. `Acceptor` owns the listening socket: it accepts in batches, hands each
connection to the loop's transport (`connect_accepted_socket`), and when the process or the
system is out of descriptors it sheds the waiting connections (a spare descriptor is freed
to accept and close them, so clients get a prompt close instead of a hang, as libuv does) and
logs one line per `WARN_INTERVAL` with the count, the open descriptors and the limit.

It quacks like the `asyncio.Server` it replaces: `sockets`, `close()`, `wait_closed()`,
`is_serving()`.
"""

import asyncio
import errno
import logging
import os
import resource
import socket
import time

from .daemon import listen_error, remove_stale_socket

log = logging.getLogger("chatmaild.acceptor")

#: accepts per wake-up (one readable event), so one busy listener cannot starve the loop
BATCH = 64
#: at most one "out of descriptors" line per listener per this many seconds
WARN_INTERVAL = 10.0
#: when no connection can be shed, accepting pauses for this long
RETRY_DELAY = 0.5
_EXHAUSTED = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


class RateLimitedWarning:
    """Counts events; `due(now)` is true for the first one and then at most once per
    `interval` s, returning how many happened since the last line. Pure: the clock is given."""

    __slots__ = ("interval", "count", "_last")

    def __init__(self, interval=WARN_INTERVAL):
        self.interval = interval
        self.count = 0
        self._last = None

    def event(self, now, n=1):
        """Record `n` events; the number to report if a line is due now, else None."""
        self.count += n
        if self._last is not None and now - self._last < self.interval:
            return None
        self._last = now
        count, self.count = self.count, 0
        return count


def open_descriptors():
    """How many descriptors this process has open (None where /proc is not readable)."""
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return None


class Acceptor:
    """Accepts on a bound, listening socket `sock` and serves each connection with a protocol
    from `protocol_factory`. `what` names the listener in log lines."""

    def __init__(self, loop, sock, protocol_factory, what):
        self._loop = loop
        self._sock = sock
        self._factory = protocol_factory
        self._what = what
        self._warning = RateLimitedWarning()
        self._spare = _open_spare()
        self._serving = True
        self._paused = False
        self.connections_refused = 0
        sock.setblocking(False)
        loop.add_reader(sock.fileno(), self._on_readable)

    @property
    def sockets(self):
        return (self._sock,) if self._serving else ()

    def is_serving(self):
        return self._serving

    def close(self):
        if not self._serving:
            return
        self._serving = False
        if not self._paused:
            self._loop.remove_reader(self._sock.fileno())
        self._sock.close()
        if self._spare is not None:
            os.close(self._spare)
            self._spare = None

    async def wait_closed(self):
        return None

    # -- accepting ---------------------------------------------------------------------------

    def _on_readable(self):
        for _ in range(BATCH):
            try:
                conn, _ = self._sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:
                continue
            except OSError as e:
                if e.errno in _EXHAUSTED:
                    self._out_of_descriptors(e)
                    return
                log.warning("accept on %s failed: %s", self._what, e.strerror or e)
                return
            self._serve(conn)

    def _serve(self, conn):
        try:
            coro = self._loop.connect_accepted_socket(self._factory, conn)
        except Exception:  # pragma: no cover - a bug; the connection must not leak
            conn.close()
            log.exception("serving a connection on %s failed", self._what)
            return
        task = self._loop.create_task(coro)
        task.add_done_callback(_connection_started)

    def _out_of_descriptors(self, exc):
        shed = self._shed()
        refused = max(shed, 1)
        self.connections_refused += refused
        count = self._warning.event(time.monotonic(), refused)
        if count is not None:
            soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
            log.error(
                "refusing connections on %s: out of file descriptors (%s; %s open, limit"
                " %d); %d refused since the last such line",
                self._what,
                exc.strerror or exc,
                open_descriptors(),
                soft,
                count,
            )
        if shed == 0:
            # nothing could be shed (no spare descriptor): stop polling the socket a while
            self._paused = True
            self._loop.remove_reader(self._sock.fileno())
            self._loop.call_later(RETRY_DELAY, self._resume)

    def _shed(self):
        """Free the spare descriptor, accept and close what waits, take the spare again."""
        if self._spare is None:
            self._spare = _open_spare()
            return 0
        os.close(self._spare)
        self._spare = None
        shed = 0
        try:
            for _ in range(BATCH):
                try:
                    conn, _ = self._sock.accept()
                except OSError:
                    break
                conn.close()
                shed += 1
        finally:
            self._spare = _open_spare()
        return shed

    def _resume(self):
        self._paused = False
        if self._serving:
            self._loop.add_reader(self._sock.fileno(), self._on_readable)


def _open_spare():
    try:
        return os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None


def _connection_started(task):
    if task.cancelled():
        return
    exc = task.exception()
    if exc is not None:
        log.warning("a connection could not be set up: %s", exc)


def tcp_listener(host, port, backlog):
    """A bound, listening TCP socket (SO_REUSEADDR, as asyncio's create_server); `host` is
    an IPv4 or IPv6 address (`::1`, as a ListenSpec gives `[::1]:PORT`) or a name."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.create_server((host, port), family=family, backlog=backlog)


def unix_listener(path, backlog):
    """A bound, listening unix stream socket at `path` (mode from the current umask)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(os.fspath(path))
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    return sock


def start(sock, protocol_factory, what):
    """An `Acceptor` on `sock` in the running loop."""
    return Acceptor(asyncio.get_running_loop(), sock, protocol_factory, what)


def listen(spec, protocol_factory, what, *, mode, backlog=1024):
    """An `Acceptor` on `spec` (a metrics.exporter.ListenSpec): a unix socket replaces a stale
    one and gets `mode`; a failure to listen is a StartupError naming `what`."""
    try:
        if spec.path is not None:
            remove_stale_socket(spec.path)
            sock = unix_listener(spec.path, backlog)
            os.chmod(spec.path, mode)
        else:
            sock = tcp_listener(spec.host, spec.port, backlog)
    except (OSError, ValueError) as e:
        raise listen_error(what, e) from None
    return start(sock, protocol_factory, what)


async def close_http(listener, http, timeout):
    """Stop an aiohttp `web.Server` that `listener` feeds (`start(sock, http, what)`): no new
    connections, idle keep-alive ones close now, requests in progress get `timeout` s."""
    listener.close()
    await asyncio.sleep(0)  # connections accepted just now get their handler first
    http.pre_shutdown()
    await http.shutdown(timeout)
