"""What every daemon entry point shares: the event loop, and a clean refusal to start.

A daemon that cannot listen (port taken, socket directory missing, no permission) raises
`StartupError` with one line; `run()` prints it and exits with status 1, so an operator sees
`error: cannot listen on 127.0.0.1:10080: Address already in use`, not a traceback.

`run()` also raises the soft limit of open files to the hard one: systemd starts services
with a soft limit of 1024 whatever `LimitNOFILE=` allows, and every connection is a file.
"""

import asyncio
import errno
import os
import resource
import signal
import stat
import sys


def stop_event() -> asyncio.Event:
    """An event that SIGTERM or SIGINT sets: what a daemon waits on before it shuts down."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    return stop


class StartupError(Exception):
    """A daemon cannot start; the message is one line for the operator."""


def listen_error(what, exc):
    """StartupError for an OSError raised while binding `what`."""
    reason = exc.strerror or str(exc) if isinstance(exc, OSError) else str(exc)
    return StartupError(f"cannot listen on {what}: {reason}")


def remove_stale_socket(path):
    """A unix socket left at `path` by an earlier run goes; any other file there is an error
    (FileExistsError, an OSError, so `listen_error` words it), never removed."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise FileExistsError(errno.EEXIST, "exists and is not a socket", os.fspath(path))
    os.unlink(path)


def loop_factory():
    """uvloop's event loop when installed, else asyncio's default."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency
        return None
    return uvloop.new_event_loop


def raise_nofile_limit():
    """Soft limit of open files := hard limit; returns the (soft, hard) now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):  # pragma: no cover - e.g. hard above the kernel's nr_open
            return soft, hard
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def run(main_coroutine):
    """Run `main_coroutine` to completion; a StartupError becomes one stderr line, exit 1."""
    raise_nofile_limit()
    try:
        with asyncio.Runner(loop_factory=loop_factory()) as runner:
            return runner.run(main_coroutine)
    except StartupError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(1) from None
