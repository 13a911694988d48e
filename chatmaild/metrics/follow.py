"""Following a growing log file, like `tail -F`, for chatmail-logmetrics `--follow FILE`.

Where no syslog daemon runs (the private test relay writes Postfix's `maillog_file`,
Dovecot's `log_path` and our daemons' output to files), logmetrics reads the files instead of
datagrams. `FileFollower.poll()` reads what was appended since the last call and hands every
complete line to `feed`:

- a file that exists when following starts is read from its end (its old lines were counted
  by an earlier run, or belong to `--replay`); a file that appears later is read from its start;
- truncation (size below the read position) restarts at offset 0;
- rotation (the path now names another file): the rest of the old file is read first, then
  the new file from its start; a path that vanished keeps the old file open until a new one
  appears;
- reads are bounded per poll (`max_bytes`), so one huge burst cannot hold the event loop;
  the rest is read at the next poll;
- a line longer than `max_line` is dropped whole and reported to `drop`.

Polling (not inotify) keeps it in the standard library and works on any file system; the
service polls every `interval` seconds.
"""

import asyncio
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

CHUNK = 65536
MAX_BYTES_PER_POLL = 1024 * 1024
MAX_LINE = 65536
POLL_INTERVAL = 0.25


class FileFollower:
    def __init__(
        self,
        path,
        feed,
        drop=lambda: None,
        from_start=False,
        max_bytes=MAX_BYTES_PER_POLL,
        max_line=MAX_LINE,
    ):
        self.path = Path(path)
        self.feed = feed
        self.drop = drop
        self.max_bytes = max_bytes
        self.max_line = max_line
        self.file = None
        self.ino = None
        self.pending = b""
        self.skipping = False  # inside an overlong line: discard up to its newline
        self.lines = 0
        self.error = None  # the last reason the file could not be opened (logged once)
        self._open(at_end=not from_start)

    def _open(self, at_end):
        try:
            f = open(self.path, "rb")
        except OSError as exc:
            if not isinstance(exc, FileNotFoundError) and exc.strerror != self.error:
                log.warning("cannot follow %s: %s", self.path, exc.strerror)
            self.error = exc.strerror
            return False
        self.error = None
        st = os.fstat(f.fileno())
        if at_end:
            f.seek(0, os.SEEK_END)
        self.file, self.ino = f, (st.st_dev, st.st_ino)
        self.pending, self.skipping = b"", False
        return True

    def close(self):
        if self.file is not None:
            self.file.close()
            self.file = None

    def _path_identity(self):
        try:
            st = os.stat(self.path)
        except OSError:
            return None, 0
        return (st.st_dev, st.st_ino), st.st_size

    def poll(self) -> int:
        """Read what is new (at most `max_bytes`); returns the number of lines fed."""
        before = self.lines
        if self.file is None:
            if not self._open(at_end=False):
                return 0
        budget = self.max_bytes
        identity, size = self._path_identity()
        if identity == self.ino and size < self.file.tell():
            self.file.seek(0)  # truncated in place (e.g. logrotate copytruncate)
            self.pending, self.skipping = b"", False
        budget -= self._read(budget)
        if identity is not None and identity != self.ino and budget > 0:
            # Rotated: the old file was read to its end above (unless the budget ran out,
            # then the next poll continues there); switch to the new one from its start.
            if self._at_eof():
                self._flush_partial()
                self.close()
                if self._open(at_end=False):
                    self._read(budget)
        return self.lines - before

    def _at_eof(self):
        pos = self.file.tell()
        return os.fstat(self.file.fileno()).st_size <= pos

    def _read(self, budget) -> int:
        got = 0
        while got < budget:
            data = self.file.read(min(CHUNK, budget - got))
            if not data:
                break
            got += len(data)
            self._split(data)
        return got

    def _split(self, data):
        buf = self.pending + data
        start = 0
        while True:
            nl = buf.find(b"\n", start)
            if nl < 0:
                break
            line = buf[start:nl]
            start = nl + 1
            if self.skipping:
                self.skipping = False
                continue
            self._line(line)
        rest = buf[start:]
        if len(rest) > self.max_line:
            if not self.skipping:
                self.drop()
            self.skipping = True
            rest = b""
        self.pending = rest

    def _line(self, line):
        line = line.rstrip(b"\r")
        if len(line) > self.max_line:
            self.drop()
            return
        if line:
            self.lines += 1
            self.feed(line)

    def _flush_partial(self):
        """A rotated-away file's last line may lack its newline: it is complete now."""
        if self.pending and not self.skipping:
            self._line(self.pending)
        self.pending, self.skipping = b"", False


async def follow(follower: FileFollower, interval=POLL_INTERVAL):
    """Poll `follower` until cancelled; an error is logged and retried, never fatal."""
    try:
        while True:
            try:
                follower.poll()
            except OSError as exc:
                log.warning("%s: %s", follower.path, exc)
                follower.close()
            await asyncio.sleep(interval)
    finally:
        follower.close()
