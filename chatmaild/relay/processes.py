"""The processes a relay starts and stops by pid: is it alive, is it still ours, stop it.

Shared by the relay (its daemons, OpenDKIM, Postfix', Dovecot's and nginx's masters) and
the test network's resolver. A pid is only signalled while its command line still names
what we started there, so a pid reused by another process is left alone.
"""

import contextlib
import os
import signal
import time
from pathlib import Path


def pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of ours is not alive.
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
            return False
    return True


def cmdline(pid):
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def read_pid(path):
    """The pid in a pid file, or None (missing, unreadable or not a number)."""
    try:
        return int(Path(path).read_text())
    except (OSError, ValueError):
        return None


def wait_exit(pid, timeout):
    """Wait up to `timeout` s for `pid` to end, SIGKILL it if it did not; True when it
    ended by itself. (A zombie child of ours counts as ended and is reaped.)"""
    deadline = time.monotonic() + timeout
    while pid_alive(pid):
        if time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            return False
        time.sleep(0.02)
    return True


def terminate(pid, hint):
    """SIGTERM to `pid` if it is alive and its command line contains `hint`; True if sent."""
    if pid is None or not pid_alive(pid) or hint not in cmdline(pid):
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    return True


def stop(pid, hint, timeout):
    """`terminate`, then wait up to `timeout` s (SIGKILL after) and reap a child of ours.

    None when nothing was signalled (gone, or not ours); else True if it ended by itself,
    False if it had to be killed.
    """
    if not terminate(pid, hint):
        return None
    ended = wait_exit(pid, timeout)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)
    return ended
