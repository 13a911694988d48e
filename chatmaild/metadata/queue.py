"""The persistent push-notification queue: one small JSON file per pending notification.

A file is named after a hash of (address, token), so one device has at most one pending
notification: a new message for a device that is already waiting needs no second push.
It records the first-attempt time, the attempt count and the next due time, so after a
restart every item keeps its place in the back-off schedule. Writes are atomic (temp file +
rename) but not fsync'ed: losing a push on power loss is acceptable, slowing every delivery
is not.

Files left by the previous chatmaild (named by a random hex id, holding ``addr\nstart_ts\ntoken``
or ``addr\ntoken``) are converted on load, so an upgrade loses no queued notification.
"""

import hashlib
import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path

log = logging.getLogger(__name__)

TEMP_SUFFIX = ".tmp"
MAX_ATTEMPTS = 64  # anything larger in a file is corruption


@dataclass(slots=True)
class QueueItem:
    key: str
    addr: str
    token: str
    first_attempt: float
    attempts: int
    due: float

    def to_bytes(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, key: str, data: bytes) -> "QueueItem":
        """Parse a queue file; ValueError when it is not a well-formed item named `key`."""
        doc = json.loads(data)
        if not isinstance(doc, dict):
            raise ValueError("not a JSON object")
        item = cls(
            key=doc.get("key"),
            addr=doc.get("addr"),
            token=doc.get("token"),
            first_attempt=doc.get("first_attempt"),
            attempts=doc.get("attempts"),
            due=doc.get("due"),
        )
        if item.key != key:
            raise ValueError("key does not match the file name")
        if not isinstance(item.addr, str) or not isinstance(item.token, str) or not item.token:
            raise ValueError("addr/token missing")
        for name in ("first_attempt", "due"):
            value = getattr(item, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"{name} is not a number")
        if (
            isinstance(item.attempts, bool)
            or not isinstance(item.attempts, int)
            or not 0 <= item.attempts <= MAX_ATTEMPTS
        ):
            raise ValueError("attempts out of range")
        return item


def parse_legacy(data: bytes) -> tuple[str, int | None, str] | None:
    """(addr, start_ts or None, token) of a previous chatmaild queue file, None if it is not one."""
    try:
        text = data.decode()
    except UnicodeDecodeError:
        return None
    parts = text.split("\n", 2)
    if len(parts) == 3 and parts[1].isdigit():
        addr, start_ts, token = parts[0], int(parts[1]), parts[2]
    elif len(parts) >= 2:
        addr, start_ts, token = parts[0], None, text.split("\n", 1)[1]
    else:
        return None
    if "@" not in addr or not token:
        return None
    return addr, start_ts, token


def item_key(addr: str, token: str) -> str:
    return hashlib.sha256(f"{addr}\0{token}".encode("utf-8", "surrogatepass")).hexdigest()[:32]


def _is_key(name: str) -> bool:
    return len(name) == 32 and all(c in "0123456789abcdef" for c in name)


class QueueDir:
    """File operations of the queue directory (synchronous; each is a few syscalls)."""

    def __init__(self, directory):
        self.dir = Path(directory)
        self._dirname = os.fspath(self.dir)

    def _path(self, key: str) -> str:
        return f"{self._dirname}/{key}"

    def write(self, item: QueueItem) -> None:
        path = self._path(item.key)
        tmp = path + TEMP_SUFFIX
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
        try:
            fd = os.open(tmp, flags, 0o600)
        except FileNotFoundError:
            self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(tmp, flags, 0o600)
        try:
            os.write(fd, item.to_bytes())
        finally:
            os.close(fd)
        os.replace(tmp, path)

    def read(self, key: str, now: float | None = None) -> QueueItem | None:
        """The item, or None when it is gone or corrupt (a corrupt file is removed).

        With `now` given, a file of the previous chatmaild is converted to a new item."""
        path = self._path(key)
        try:
            with open(path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return None
        if now is not None and not data.startswith(b"{"):
            legacy = parse_legacy(data)
            if legacy is not None:
                return self._convert_legacy(key, legacy, now)
        try:
            return QueueItem.from_bytes(key, data)
        except (ValueError, UnicodeDecodeError) as e:
            log.warning("removing corrupt notification queue file %s: %s", path, e)
            self.remove(key)
            return None

    def _convert_legacy(self, old_key, legacy, now) -> QueueItem:
        addr, start_ts, token = legacy
        first = float(start_ts) if start_ts is not None else now
        item = QueueItem(item_key(addr, token), addr, token, min(first, now), 0, now)
        self.write(item)
        if old_key != item.key:
            self.remove(old_key)
        return item

    def exists(self, key: str) -> bool:
        return os.path.exists(self._path(key))

    def remove(self, key: str) -> None:
        try:
            os.unlink(self._path(key))
        except FileNotFoundError:
            pass

    def load(self, now: float) -> list[QueueItem]:
        """Every pending item; stale temp files and corrupt or foreign files are removed,
        files of the previous chatmaild are converted (due `now`)."""
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        items = []
        with os.scandir(self.dir) as entries:
            names = [e.name for e in entries if e.is_file(follow_symlinks=False)]
        for name in names:
            if name.endswith(TEMP_SUFFIX):
                self._unlink_name(name)
            elif not _is_key(name):
                log.warning("removing unexpected file in notification queue: %s", name)
                self._unlink_name(name)
            else:
                item = self.read(name, now)
                if item is not None:
                    items.append(item)
        # a converted legacy file may share its key with another item: keep one per key
        unique = {}
        for item in items:
            old = unique.get(item.key)
            if old is None or item.first_attempt < old.first_attempt:
                unique[item.key] = item
        return list(unique.values())

    def _unlink_name(self, name: str) -> None:
        try:
            os.unlink(f"{self._dirname}/{name}")
        except FileNotFoundError:
            pass
