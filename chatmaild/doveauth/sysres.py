"""Read the machine's load, available memory and free disk space (for creation limits)."""

import os
import time

from .rules import Resources

# A reading is reused for this long: the load average itself moves every 5 s, memory and
# disk slowly, and at a thousand creations a second a fresh reading each (/proc/meminfo
# parsed in Python) was a measurable share of the work.
MAX_AGE = 1.0


def load_1m() -> float | None:
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


def available_memory(meminfo="/proc/meminfo") -> int | None:
    try:
        with open(meminfo, "rb") as f:
            for line in f:
                if line.startswith(b"MemAvailable:"):
                    fields = line.split()
                    return int(fields[1]) * (1024 if fields[2:3] == [b"kB"] else 1)
    except (OSError, ValueError, IndexError):
        return None
    return None


def free_disk(path) -> int | None:
    """Bytes available to unprivileged users on the file system holding `path` (or a parent)."""
    path = os.path.abspath(path)
    while True:
        try:
            st = os.statvfs(path)
            return st.f_bavail * st.f_frsize
        except FileNotFoundError:
            parent = os.path.dirname(path)
            if parent == path:
                return None
            path = parent
        except OSError:
            return None


def read_resources(mailboxes_dir) -> Resources:
    return Resources(load_1m(), available_memory(), free_disk(mailboxes_dir))


class CachedResources:
    """`read_resources`, read again only when the last reading is `max_age` seconds old.

    Called from several worker threads: at worst two of them read at once, and either
    reading is a right one.
    """

    def __init__(self, read=read_resources, max_age=MAX_AGE, clock=time.monotonic):
        self._read = read
        self._max_age = max_age
        self._clock = clock
        self._last = None  # (taken at, mailboxes_dir, Resources)

    def __call__(self, mailboxes_dir) -> Resources:
        now = self._clock()
        last = self._last
        if last is not None and last[1] == mailboxes_dir and now - last[0] < self._max_age:
            return last[2]
        resources = self._read(mailboxes_dir)
        self._last = (now, mailboxes_dir, resources)
        return resources
