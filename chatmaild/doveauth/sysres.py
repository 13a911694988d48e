"""Read the machine's load, available memory and free disk space (for creation limits)."""

import os

from .rules import Resources


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
