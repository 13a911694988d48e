"""Syslog framing: datagrams and log-file lines to `LogRecord(tag, pid, msg)`. Pure, no I/O.

Accepted forms (what rsyslog, journald and log files produce):
- RFC 3164 `<PRI>Mmm dd hh:mm:ss [HOST ]TAG[PID]: MSG` (journald's ForwardToSyslog omits HOST),
- RFC 5424 `<PRI>1 TIMESTAMP HOST APP PROCID MSGID SD MSG` (app `postfix/smtpd`, procid `123`),
- the same without `<PRI>` (syslog files, `journalctl -o short` / `short-iso`),
- anything else as a bare line: `LogRecord("", "", line)`.
"""

import re
from dataclasses import dataclass

MAX_LINE = 65536

_PRI = r"(?:<(?P<pri>\d{1,3})>)?"
_TS3164 = r"(?:[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d|\d{4}-\d\d-\d\dT\S+)"
_RFC3164 = re.compile(
    _PRI
    + _TS3164
    + r" (?:(?P<host>\S+) )??(?P<tag>[^\s\[\]:]+)(?:\[(?P<pid>\d+)\])?: ?(?P<msg>.*)",
    re.DOTALL,
)
_RFC5424 = re.compile(
    r"<(?P<pri>\d{1,3})>1 \S+ \S+ (?P<app>\S+) (?P<procid>\S+) \S+ "
    r"(?P<sd>-|(?:\[(?:[^\]\\]|\\.)*\])+)(?: (?P<msg>.*))?",
    re.DOTALL,
)


@dataclass(frozen=True, slots=True)
class LogRecord:
    tag: str  # program, e.g. "postfix/smtpd", "dovecot", "doveauth"; "" for a bare line
    pid: str
    msg: str

    @property
    def text(self) -> str:
        """The line as a syslog file shows it after the host: `tag[pid]: msg`."""
        if not self.tag:
            return self.msg
        if self.pid:
            return f"{self.tag}[{self.pid}]: {self.msg}"
        return f"{self.tag}: {self.msg}"


def parse_line(line: str) -> LogRecord | None:
    """One syslog line (PRI optional) or bare line; None if the PRI is present but invalid."""
    line = line.rstrip("\r\n")
    if line.startswith("<"):
        m = _RFC5424.fullmatch(line)
        if m is not None:
            if int(m["pri"]) > 191:
                return None
            msg = m["msg"] or ""
            if msg.startswith("\ufeff"):
                msg = msg[1:]
            procid = m["procid"]
            app = m["app"]
            return LogRecord("" if app == "-" else app, "" if procid == "-" else procid, msg)
    m = _RFC3164.fullmatch(line)
    if m is not None:
        if m["pri"] is not None and int(m["pri"]) > 191:
            return None
        return LogRecord(m["tag"], m["pid"] or "", m["msg"])
    if line.startswith("<"):
        pri, sep, rest = line[1:].partition(">")
        if not sep or not pri.isdigit() or len(pri) > 3 or int(pri) > 191:
            return None
        return LogRecord("", "", rest)
    return LogRecord("", "", line)


def parse_datagram(data: bytes) -> list[LogRecord] | None:
    """The records in one datagram, or None if it is malformed (not UTF-8, NUL, bad PRI, empty).

    A datagram normally carries one message; several newline-separated bare lines are split.
    """
    if not data or len(data) > MAX_LINE or b"\x00" in data:
        return None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    text = text.rstrip("\r\n")
    if not text.strip():
        return None
    if text.startswith("<"):
        # one syslog message; a multi-line MSG stays one record
        record = parse_line(text)
        return None if record is None else [record]
    records = []
    for line in text.split("\n"):
        if not line.strip():
            continue
        record = parse_line(line)
        if record is None:
            return None
        records.append(record)
    return records
