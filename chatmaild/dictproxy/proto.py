"""Sans-I/O codec of the Dovecot dict protocol (2.3 `proxy:` client).

Bytes go in through `LineReader.feed()`, typed requests come out; replies are built by the
`reply_*` functions as text lines that the caller encodes with `encode_reply()`. Nothing here
knows sockets or services.

Framing (see docs/dictproxy.md and protocols.md A.1): one command per `\\n`-terminated line,
command letter immediately followed by TAB-separated fields, each field escaped with the
`\\x01` byte (`\\x01` -> `\\x01 1`, TAB -> `\\x01 t`, CR -> `\\x01 r`, LF -> `\\x01 n`,
NUL -> `\\x01 0`; any other byte after `\\x01` stands for itself).
"""

import re
from typing import NamedTuple

#: the official server's cap on one client line (DICT_CLIENT_MAX_LINE_LENGTH)
MAX_LINE = 64 * 1024

#: iterate flags (lib-dict/dict.h)
ITER_RECURSE = 0x01
ITER_SORT_BY_KEY = 0x02
ITER_SORT_BY_VALUE = 0x04
ITER_NO_VALUE = 0x08
ITER_EXACT_KEY = 0x10
ITER_ASYNC = 0x20

_ESCAPE_NEEDED = re.compile("[\x00\x01\t\r\n]")
_ESCAPES = {"\x00": "\x010", "\x01": "\x011", "\t": "\x01t", "\r": "\x01r", "\n": "\x01n"}
_UNESCAPE = re.compile("\x01(.?)", re.DOTALL)
_UNESCAPES = {"0": "\x00", "1": "\x01", "t": "\t", "r": "\r", "n": "\n"}


def escape(text: str) -> str:
    """Tab-escape one field for the wire."""
    if _ESCAPE_NEEDED.search(text) is None:
        return text
    return _ESCAPE_NEEDED.sub(lambda m: _ESCAPES[m.group()], text)


def _unescape_one(match):
    char = match.group(1)
    return _UNESCAPES.get(char, char)


def unescape(text: str) -> str:
    """Undo `escape()`: like Dovecot's str_tabunescape (a trailing lone `\\x01` is dropped)."""
    if "\x01" not in text:
        return text
    return _UNESCAPE.sub(_unescape_one, text)


def decode_line(raw: bytes) -> str:
    """Wire bytes to text; bytes that are not UTF-8 survive the round trip (surrogateescape)."""
    return raw.decode("utf-8", "surrogateescape")


def encode_reply(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


# ---------------------------------------------------------------------------------------------
# requests


class Hello(NamedTuple):
    major: str
    minor: str
    value_type: str
    user: str
    name: str


class Lookup(NamedTuple):
    key: str
    user: str


class Iterate(NamedTuple):
    flags: int
    max_rows: int
    path: str
    user: str


class Begin(NamedTuple):
    txid: str
    user: str


class Set(NamedTuple):
    txid: str
    key: str
    value: str


class Unset(NamedTuple):
    txid: str
    key: str


class AtomicInc(NamedTuple):
    txid: str
    key: str
    delta: int


class Timestamp(NamedTuple):
    txid: str
    secs: int
    nsecs: int


class HideLogValues(NamedTuple):
    txid: str
    hide: bool


class Rollback(NamedTuple):
    txid: str


class Commit(NamedTuple):
    txid: str
    is_async: bool


class Malformed(NamedTuple):
    """A line that is not a valid command; `reply` is the failure line owed, or None."""

    command: str
    reason: str
    reply: str | None


class _Bad(Exception):
    pass


def _int(text, what):
    try:
        return int(text)
    except ValueError:
        raise _Bad(f"{what} is not a number") from None


def _fields(line, count, names):
    fields = line[1:].split("\t")
    if len(fields) < count:
        raise _Bad(f"missing {names[len(fields)]}")
    return fields


def _txid(text):
    if not text:
        raise _Bad("empty transaction id")
    return text


def _parse_hello(line):
    fields = line[1:].split("\t")
    fields += [""] * (5 - len(fields))
    return Hello(fields[0], fields[1], fields[2], unescape(fields[3]), unescape(fields[4]))


def _parse_lookup(line):
    key, sep, rest = line[1:].partition("\t")
    if not key:
        raise _Bad("empty key")
    user = rest.partition("\t")[0] if sep else ""
    return Lookup(unescape(key), unescape(user))


def _parse_iterate(line):
    flags, max_rows, path, *rest = _fields(line, 3, ("flags", "max_rows", "path"))
    return Iterate(
        _int(flags, "flags"),
        _int(max_rows, "max_rows"),
        unescape(path),
        unescape(rest[0]) if rest else "",
    )


def _parse_begin(line):
    txid, sep, rest = line[1:].partition("\t")
    return Begin(_txid(txid), unescape(rest.partition("\t")[0]) if sep else "")


def _parse_set(line):
    txid, key, value, *_ = _fields(line, 3, ("txid", "key", "value"))
    return Set(_txid(txid), unescape(key), unescape(value))


def _parse_unset(line):
    txid, key, *_ = _fields(line, 2, ("txid", "key"))
    return Unset(_txid(txid), unescape(key))


def _parse_atomic_inc(line):
    txid, key, delta, *_ = _fields(line, 3, ("txid", "key", "delta"))
    return AtomicInc(_txid(txid), unescape(key), _int(delta, "delta"))


def _parse_timestamp(line):
    txid, secs, nsecs, *_ = _fields(line, 3, ("txid", "secs", "nsecs"))
    return Timestamp(_txid(txid), _int(secs, "secs"), _int(nsecs, "nsecs"))


def _parse_hide_log_values(line):
    txid, value, *_ = _fields(line, 2, ("txid", "value"))
    return HideLogValues(_txid(txid), value == "yes")


def _parse_rollback(line):
    return Rollback(_txid(line[1:].partition("\t")[0]))


def _parse_commit(line):
    return Commit(_txid(line[1:].partition("\t")[0]), False)


def _parse_async_commit(line):
    return Commit(_txid(line[1:].partition("\t")[0]), True)


_PARSERS = {
    "H": _parse_hello,
    "L": _parse_lookup,
    "I": _parse_iterate,
    "B": _parse_begin,
    "S": _parse_set,
    "U": _parse_unset,
    "A": _parse_atomic_inc,
    "T": _parse_timestamp,
    "V": _parse_hide_log_values,
    "R": _parse_rollback,
    "C": _parse_commit,
    "D": _parse_async_commit,
}


def failure_reply(command: str, message: str) -> str | None:
    """The failure line a client waits for after `command`, or None if it expects no reply."""
    if command == "L" or command == "I":
        return "F" + escape(message) + "\n"
    if command == "C" or command == "D":
        return reply_commit_failed(message)
    return None


def parse_line(line: str):
    """One line (without its `\\n`) to a request, or `Malformed`."""
    command = line[:1]
    parser = _PARSERS.get(command)
    if parser is None:
        reason = "empty line" if not line else "unknown command"
        return Malformed(command, reason, None)
    try:
        return parser(line)
    except _Bad as exc:
        reason = str(exc)
        return Malformed(command, reason, failure_reply(command, reason))


class LineReader:
    """Splits a byte stream into parsed requests, holding at most MAX_LINE bytes of a line.

    A line longer than the cap is dropped up to its `\\n` while reading (memory stays flat)
    and comes out as one `Malformed` request, so the reply stream stays in step.
    """

    __slots__ = ("_buf", "_discarding", "max_line")

    def __init__(self, max_line: int = MAX_LINE):
        self._buf = b""
        self._discarding = None  # command letter of an over-long line being skipped
        self.max_line = max_line

    def feed(self, data: bytes) -> list:
        if self._discarding is not None:
            end = data.find(b"\n")
            if end < 0:
                return []
            command = self._discarding
            self._discarding = None
            requests = [_too_long(command)]
            data = data[end + 1 :]
        else:
            requests = []
        if self._buf:
            data = self._buf + data
            self._buf = b""
        if not data:
            return requests
        lines = data.split(b"\n")
        tail = lines.pop()
        max_line = self.max_line
        for raw in lines:
            if len(raw) > max_line:
                requests.append(_too_long(raw[:1].decode("latin-1")))
                continue
            if raw[-1:] == b"\r":
                raw = raw[:-1]
            requests.append(parse_line(raw.decode("utf-8", "surrogateescape")))
        if tail:
            if len(tail) > max_line:
                self._discarding = tail[:1].decode("latin-1")
            else:
                self._buf = tail
        return requests

    @property
    def buffered(self) -> int:
        return len(self._buf)


def _too_long(command):
    reason = "line too long"
    return Malformed(command, reason, failure_reply(command, reason))


# ---------------------------------------------------------------------------------------------
# replies (text lines including their `\n`)

REPLY_NOT_FOUND = "N\n"
REPLY_COMMIT_OK = "O\n"
REPLY_ITER_END = "\n"


def reply_lookup(value: str | None) -> str:
    if value is None:
        return REPLY_NOT_FOUND
    return "O" + escape(value) + "\n"


def reply_lookup_failed(message: str) -> str:
    return "F" + escape(message) + "\n"


def reply_iter_row(key: str, value: str) -> str:
    return "O" + escape(key) + "\t" + escape(value) + "\n"


def reply_iter_failed(message: str) -> str:
    return "F" + escape(message) + "\n"


def reply_commit(ok: bool, message: str = "commit failed") -> str:
    return REPLY_COMMIT_OK if ok else reply_commit_failed(message)


def reply_commit_failed(message: str) -> str:
    # the text right after the letter is the obsolete txid; the message is the 2nd field
    return "F\t" + escape(message) + "\n"
