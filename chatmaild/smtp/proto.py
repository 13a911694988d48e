"""Sans-I/O SMTP server state machine: bytes in, events and reply bytes out.

The caller feeds received bytes with `receive_data()` (b"" means EOF), pulls events with
`next_event()` until it returns NEED_DATA or PAUSED, answers the events that need a decision
(`MailFrom`, `RcptTo`, `MessageComplete`) with `answer()`, and writes `data_to_send()`.
No sockets, no policy, no logging.

Wire decisions (see docs/fm-server.md):
- Command lines end in CRLF. A line ending in a bare LF gets `500 5.5.2` and is otherwise
  ignored; a command line longer than `max_line_length` gets `500 5.5.2` after it ended, and
  is never buffered beyond that cap.
- DATA ends only at CRLF "." CRLF. Dots are unstuffed. A message that contains a bare LF is
  read to its end and refused with 550 (Postfix never sends one, and forwarding it would let
  a client smuggle an end-of-data marker past the downstream server). Bare CR is data.
- The size cap is enforced while reading: past `max_message_size` the content is dropped and
  the reader only looks for the final dot, then replies 552; the session stays usable.
- EOF inside DATA aborts the transaction (Postfix sends QUIT inside the data stream and
  closes when it gives up on a message): that QUIT is data, and nothing is handed on.
- XFORWARD (Postfix's XFORWARD_README): only when the server is built with attribute names
  to announce (`xforward`); then EHLO says `XFORWARD <names>`, and the command is allowed
  after HELO/EHLO outside a transaction (503 between MAIL and the end of DATA). The first
  XFORWARD of a transaction starts from "all unavailable"; each one overwrites the
  attributes it names, `[UNAVAILABLE]` (or `[TEMPUNAVAIL]`) erases one. Values are xtext.
  The attributes go with the next transaction (`Transaction.xforward`) and are dropped at
  its end (final dot, RSET) and at HELO/EHLO. A bad command changes nothing. Not
  announced: `550 5.7.0` as Postfix answers a client it does not authorize.
- LMTP (RFC 2033, `lmtp=True`): LHLO instead of HELO/EHLO (which get 500), and the final
  dot is answered with one reply per accepted recipient, in RCPT order: `answer()` then takes
  a sequence of replies. Everything else is the SMTP dialogue above.
"""

import enum
import re
from dataclasses import dataclass, field

# An LF without the CR before it; one C-level scan (counting LF and CRLF takes two).
_BARE_LF = re.compile(rb"\n(?<!\r\n)")

# XFORWARD attribute names (Postfix 3.7 smtpd accepts these; its proxy client sends those
# of NAME ADDR PORT HELO PROTO SOURCE that the filter announced) and "not known" values.
XFORWARD_NAMES = frozenset({"NAME", "ADDR", "PORT", "PROTO", "HELO", "IDENT", "SOURCE"})
_XFORWARD_UNKNOWN = frozenset({"[UNAVAILABLE]", "[TEMPUNAVAIL]"})
_XFORWARD_MAX_VALUE = 255  # xtext as sent (XFORWARD_README note 1)
_XTEXT_HEX = re.compile(rb"\+([0-9A-Fa-f]{2})")


class _Sentinel:
    __slots__ = ("name",)

    def __init__(self, name):
        self.name = name

    def __repr__(self):
        return self.name


NEED_DATA = _Sentinel("NEED_DATA")
PAUSED = _Sentinel("PAUSED")


@dataclass(frozen=True, slots=True)
class Reply:
    code: int
    text: str

    def to_bytes(self) -> bytes:
        lines = self.text.split("\n") or [""]
        out = []
        last = len(lines) - 1
        for i, line in enumerate(lines):
            sep = " " if i == last else "-"
            out.append(f"{self.code}{sep}{line.rstrip()}\r\n")
        return "".join(out).encode("utf-8", "surrogateescape")


OK = Reply(250, "2.0.0 Ok")


@dataclass(slots=True)
class Transaction:
    """One mail transaction: the envelope as received, and the unstuffed message bytes."""

    helo: str
    mail_from: str
    mail_params: dict
    rcpt_tos: list = field(default_factory=list)
    rcpt_params: list = field(default_factory=list)
    data: bytes = b""
    # how many line-start dots were unstuffed from `data` (None: not known); with 0, no
    # line of `data` starts with "." and it needs no dot stuffing when sent on
    unstuffed_dots: int | None = None
    # XFORWARD attributes in force at MAIL, decoded, unavailable ones left out (None: the
    # client sent no XFORWARD for this transaction)
    xforward: dict | None = None

    @property
    def client_addr(self) -> str | None:
        """XFORWARD ADDR as sent (IPv6 as `IPv6:...`), None when not forwarded."""
        return self.xforward.get("ADDR") if self.xforward else None

    @property
    def smtputf8(self) -> bool:
        return "SMTPUTF8" in self.mail_params

    @property
    def body_type(self) -> str | None:
        value = self.mail_params.get("BODY")
        return value.upper() if value else None


@dataclass(frozen=True, slots=True)
class MailFrom:
    """MAIL FROM passed syntax and size checks; answer with None (250) or a Reply."""

    address: str
    params: dict


@dataclass(frozen=True, slots=True)
class RcptTo:
    """RCPT TO passed syntax checks; answer with None (250) or a Reply."""

    address: str
    params: dict


@dataclass(frozen=True, slots=True)
class MessageComplete:
    """The final dot arrived; answer with the Reply for the client (no default)."""

    transaction: Transaction


@dataclass(frozen=True, slots=True)
class MessageRefused:
    """The protocol itself refused a message (size, bare LF); informational, no answer."""

    transaction: Transaction
    reply: Reply


@dataclass(frozen=True, slots=True)
class ConnectionClosed:
    """The session is over: write what is left, then close. `aborted`: EOF inside DATA."""

    reason: str
    aborted: bool = False


class State(enum.Enum):
    INIT = "INIT"  # greeted, no HELO/EHLO yet
    READY = "READY"  # HELO/EHLO done, no transaction
    MAIL = "MAIL"  # MAIL accepted
    RCPT = "RCPT"  # at least one RCPT accepted
    DATA = "DATA"  # reading message content
    WAIT = "WAIT"  # waiting for answer() to an event
    CLOSED = "CLOSED"


# transaction commands -> the states they are allowed in; elsewhere: 503, state unchanged
_ALLOWED = {
    "MAIL": frozenset({State.READY}),
    "RCPT": frozenset({State.MAIL, State.RCPT}),
    "DATA": frozenset({State.RCPT}),
    "XFORWARD": frozenset({State.READY}),
}

MAX_RECIPIENTS = 1000
MAX_ERRORS = 20


class ServerConnection:
    def __init__(
        self,
        hostname: str = "localhost",
        max_message_size: int = 31457280,
        max_line_length: int = 1000,
        max_recipients: int = MAX_RECIPIENTS,
        max_errors: int = MAX_ERRORS,
        xforward: tuple[str, ...] = (),
        lmtp: bool = False,
    ):
        if xforward and not XFORWARD_NAMES.issuperset(xforward):
            raise ValueError(f"unknown XFORWARD attributes in {xforward}")
        self.hostname = hostname
        self.max_message_size = max_message_size
        self.max_line_length = max_line_length
        self.max_recipients = max_recipients
        self.max_errors = max_errors
        self.lmtp = lmtp
        self.state = State.INIT
        self.transaction: Transaction | None = None
        self._helo = ""
        self._xforward_announced = bool(xforward)
        self._xforward: dict | None = None  # attributes for the next transaction
        self._in = bytearray()
        self._out: list[bytes] = []
        self._events: list = []
        self._pending = None  # event awaiting answer()
        self._resume_state = None  # state to enter after the answer
        self._eof = False
        self._discarding = False  # inside an over-long command line
        self._errors = 0
        # DATA reader
        self._pieces: list[bytes] = []
        self._unstuffed = 0
        self._size = 0
        self._skip = 0
        self._oversize = False
        self._ehlo_reply = Reply(
            250,
            "\n".join(
                [
                    hostname,
                    "PIPELINING",
                    f"SIZE {max_message_size}",
                    *([f"XFORWARD {' '.join(xforward)}"] if xforward else []),
                    "8BITMIME",
                    "SMTPUTF8",
                ]
            ),
        )

    # -- public API ---------------------------------------------------------------

    def greeting(self) -> None:
        kind = "LMTP chatmaild transport" if self.lmtp else "ESMTP chatmaild filtermail"
        self._reply(Reply(220, f"{self.hostname} {kind}"))

    def receive_data(self, data: bytes) -> None:
        if not data:
            self._eof = True
        elif not self._eof and self.state is not State.CLOSED:
            self._in += data

    @property
    def buffered(self) -> int:
        """Bytes received and not processed yet (for flow control)."""
        return len(self._in)

    def data_to_send(self) -> bytes:
        out = b"".join(self._out)
        self._out.clear()
        return out

    def next_event(self):
        while True:
            if self._events:
                return self._events.pop(0)
            if self.state is State.CLOSED:
                return NEED_DATA
            if self._pending is not None:
                return PAUSED
            if self.state is State.DATA:
                progressed = self._read_data()
            else:
                progressed = self._read_command()
            if not progressed:
                if self._eof:
                    aborted = self.state is State.DATA
                    self._close()
                    return ConnectionClosed("EOF in DATA" if aborted else "EOF", aborted)
                return NEED_DATA

    def answer(self, reply=None) -> None:
        """Answer the waiting event: None (250) or a Reply; in LMTP mode a finished message
        takes a sequence of Replies, one per recipient of the transaction (one Reply: the same
        for each)."""
        event = self._pending
        if event is None:
            raise RuntimeError("no event is waiting for an answer")
        if isinstance(event, MessageComplete):
            replies = self._message_replies(event.transaction, reply)
            self._pending = None
            for one in replies:
                self._reply(one)
            self._reset_transaction()
            # an LMTP 421 is one recipient's (e.g. "Transport busy"): the session goes on
            if not self.lmtp and replies[0].code == 421:
                self._close()
                self._events.append(ConnectionClosed("421"))
            return
        self._pending = None
        if reply is None or 200 <= reply.code < 300:
            self._reply(reply or OK)
            if isinstance(event, MailFrom):
                self.transaction = Transaction(
                    self._helo, event.address, event.params, xforward=self._xforward
                )
                self.state = State.MAIL
            else:
                self.transaction.rcpt_tos.append(event.address)
                self.transaction.rcpt_params.append(event.params)
                self.state = State.RCPT
        else:
            self._reply(reply)
            self.state = self._resume_state
        if reply is not None and reply.code == 421:
            self._close()
            self._events.append(ConnectionClosed("421"))

    def _message_replies(self, transaction: Transaction, reply) -> tuple:
        if reply is None:
            raise ValueError("a message needs an explicit reply")
        if not self.lmtp:
            if not isinstance(reply, Reply):
                raise TypeError("an SMTP message takes one Reply")
            return (reply,)
        if isinstance(reply, Reply):  # the same reply for every recipient
            return (reply,) * len(transaction.rcpt_tos)
        replies = tuple(reply)
        if len(replies) != len(transaction.rcpt_tos):
            raise ValueError(
                f"LMTP needs {len(transaction.rcpt_tos)} replies, one per recipient,"
                f" not {len(replies)}"
            )
        return replies

    # -- helpers --------------------------------------------------------------------

    def _reply(self, reply: Reply) -> None:
        self._out.append(reply.to_bytes())

    def _close(self) -> None:
        self.state = State.CLOSED
        self._in.clear()
        self._pieces = []

    def _wait(self, event, resume_state) -> None:
        self._pending = event
        self._resume_state = resume_state
        self.state = State.WAIT
        self._events.append(event)

    def _reset_transaction(self) -> None:
        self.transaction = None
        self._xforward = None
        self.state = State.READY if self._helo else State.INIT

    def _error(self, reply: Reply) -> None:
        self._errors += 1
        self._reply(reply)
        if self._errors >= self.max_errors:
            self._reply(Reply(421, "4.7.0 Error: too many errors"))
            self._close()
            self._events.append(ConnectionClosed("too many errors"))

    # -- command lines ----------------------------------------------------------------

    def _read_command(self) -> bool:
        buf = self._in
        if self._discarding:
            # inside an over-long line: drop input up to and including its LF
            i = buf.find(b"\n")
            if i < 0:
                buf.clear()
                return False
            del buf[: i + 1]
            self._discarding = False
            self._error(Reply(500, "5.5.2 Error: line too long"))
            return True
        i = buf.find(b"\n", 0, self.max_line_length)
        if i < 0:
            if len(buf) >= self.max_line_length:
                self._discarding = True
                return True
            return False
        line = bytes(buf[: i + 1])
        del buf[: i + 1]
        if i == 0 or line[-2] != 0x0D:
            self._error(Reply(500, "5.5.2 Error: bare <LF> received, lines must end in CRLF"))
            return True
        self._command(line[:-2])
        return True

    def _command(self, line: bytes) -> None:
        verb, _, arg = line.partition(b" ")
        try:
            name = verb.decode("ascii").upper()
        except UnicodeDecodeError:
            name = ""
        method = _COMMANDS.get(name)
        if method is None:
            self._error(Reply(500, "5.5.2 Error: command not recognized"))
            return
        allowed = _ALLOWED.get(name)
        if allowed is not None and self.state not in allowed:
            self._reply(self._out_of_order(name))
            return
        method(self, arg.strip(b" "))

    def _out_of_order(self, name: str) -> Reply:
        if name == "XFORWARD" and self.state is not State.INIT:
            return Reply(503, "5.5.1 Error: MAIL transaction in progress")
        if self.state is State.INIT:
            return Reply(503, "5.5.1 Error: send HELO/EHLO first")
        if name == "MAIL":
            return Reply(503, "5.5.1 Error: nested MAIL command")
        if self.state is State.MAIL:
            return Reply(503, "5.5.1 Error: need RCPT command")
        return Reply(503, "5.5.1 Error: need MAIL command")

    def _cmd_helo(self, arg: bytes, ehlo: bool = False, lhlo: bool = False) -> None:
        if lhlo != self.lmtp:
            want = "LHLO" if self.lmtp else "EHLO or HELO"
            self._error(Reply(500, f"5.5.1 Error: command not recognized, use {want}"))
            return
        if not arg:
            verb = "LHLO" if lhlo else "EHLO" if ehlo else "HELO"
            self._error(Reply(501, f"5.5.4 Syntax: {verb} hostname"))
            return
        self._helo = arg.decode("utf-8", "surrogateescape")
        self.transaction = None
        self._xforward = None
        self.state = State.READY
        self._reply(self._ehlo_reply if ehlo or lhlo else Reply(250, self.hostname))

    def _cmd_ehlo(self, arg: bytes) -> None:
        self._cmd_helo(arg, ehlo=True)

    def _cmd_lhlo(self, arg: bytes) -> None:
        self._cmd_helo(arg, lhlo=True)

    def _cmd_mail(self, arg: bytes) -> None:
        parsed = _parse_path(arg, b"FROM:")
        if parsed is None:
            self._error(Reply(501, "5.5.4 Syntax: MAIL FROM:<address>"))
            return
        address, params = parsed
        size = params.get("SIZE")
        if size is not None:
            if not size.isdigit():
                self._error(Reply(501, "5.5.4 Bad SIZE parameter syntax"))
                return
            if int(size) > self.max_message_size:
                self._reply(Reply(552, "5.3.4 Message size exceeds fixed limit"))
                return
        body = params.get("BODY", "7BIT")
        if body is None or body.upper() not in ("7BIT", "8BITMIME"):
            self._error(Reply(501, "5.5.4 Bad BODY parameter syntax"))
            return
        self._wait(MailFrom(address, params), State.READY)

    def _cmd_rcpt(self, arg: bytes) -> None:
        parsed = _parse_path(arg, b"TO:")
        if parsed is None or not parsed[0]:
            self._error(Reply(501, "5.5.4 Syntax: RCPT TO:<address>"))
            return
        if len(self.transaction.rcpt_tos) >= self.max_recipients:
            self._reply(Reply(452, "4.5.3 Error: too many recipients"))
            return
        self._wait(RcptTo(*parsed), self.state)

    def _cmd_data(self, arg: bytes) -> None:
        if arg:
            self._error(Reply(501, "5.5.4 Syntax: DATA"))
            return
        self._reply(Reply(354, "End data with <CR><LF>.<CR><LF>"))
        self.state = State.DATA
        self._pieces = []
        self._unstuffed = 0
        self._size = 0
        self._oversize = False
        # the body starts at the beginning of a line: a virtual CRLF lets the reader find
        # a final dot or a stuffed dot on the first line; it is skipped when stored
        self._in[0:0] = b"\r\n"
        self._skip = 2

    def _cmd_rset(self, arg: bytes) -> None:
        if arg:
            self._error(Reply(501, "5.5.4 Syntax: RSET"))
            return
        self._reset_transaction()
        self._reply(OK)

    def _cmd_noop(self, arg: bytes) -> None:
        self._reply(OK)

    def _cmd_quit(self, arg: bytes) -> None:
        self._reply(Reply(221, "2.0.0 Bye"))
        self._close()
        self._events.append(ConnectionClosed("QUIT"))

    def _cmd_vrfy(self, arg: bytes) -> None:
        if not arg:
            self._error(Reply(501, "5.5.4 Syntax: VRFY address"))
            return
        self._reply(Reply(252, "2.0.0 Cannot VRFY user, but will accept message"))

    def _cmd_help(self, arg: bytes) -> None:
        self._reply(Reply(214, "2.0.0 Commands: EHLO HELO MAIL RCPT DATA RSET NOOP QUIT VRFY"))

    def _cmd_xforward(self, arg: bytes) -> None:
        if not self._xforward_announced:
            self._error(Reply(550, "5.7.0 Error: insufficient authorization"))
            return
        parsed = parse_xforward(arg)
        if isinstance(parsed, Reply):
            self._error(parsed)
            return
        attrs = {} if self._xforward is None else self._xforward.copy()
        for name, value in parsed:
            if value is None:
                attrs.pop(name, None)
            else:
                attrs[name] = value
        self._xforward = attrs
        self._reply(OK)

    def _cmd_not_implemented(self, arg: bytes) -> None:
        self._error(Reply(502, "5.5.1 Error: command not implemented"))

    # -- DATA -----------------------------------------------------------------------------

    def _read_data(self) -> bool:
        """Consume message content; True when the final dot was reached."""
        buf = self._in
        n = len(buf)
        pos = 0
        done = False
        while True:
            i = _find_dot_line(buf, pos)
            if i < 0:
                # keep the last two bytes: they may start a CRLF "." split across reads
                end = max(pos, n - 2)
                self._store(buf, pos, end)
                pos = end
                break
            if n < i + 4 or (buf[i + 3] == 0x0D and n < i + 5):
                # cannot tell yet whether this dot line is the end
                self._store(buf, pos, i)
                pos = i
                break
            if buf[i + 3] == 0x0D and buf[i + 4] == 0x0A:
                self._store(buf, pos, i + 2)
                pos = i + 5
                done = True
                break
            # a dot-stuffed line: keep the CRLF, drop the dot
            self._store(buf, pos, i + 2)
            self._unstuffed += 1
            pos = i + 3
        if pos:
            del buf[:pos]
        if done:
            self._finish_data()
        return done

    def _store(self, buf: bytearray, start: int, end: int) -> None:
        if self._skip and end > start:
            skipped = min(self._skip, end - start)
            start += skipped
            self._skip -= skipped
        if end <= start:
            return
        self._size += end - start
        if self._oversize:
            return
        if self._size > self.max_message_size:
            self._oversize = True
            self._pieces = []
            return
        self._pieces.append(buf[start:end])  # one copy; joined into bytes at the end

    def _finish_data(self) -> None:
        tx = self.transaction
        data = b"".join(self._pieces)
        self._pieces = []
        refusal = None
        if self._oversize:
            refusal = Reply(552, "5.3.4 Error: message file too big")
        elif _BARE_LF.search(data) is not None:
            refusal = Reply(550, "5.6.0 Error: bare <LF> in message data")
        if refusal is not None:
            self._reply(refusal)
            self._reset_transaction()
            self._events.append(MessageRefused(tx, refusal))
            return
        tx.data = data
        tx.unstuffed_dots = self._unstuffed
        self._wait(MessageComplete(tx), State.READY)


def _find_dot_line(buf: bytearray, pos: int) -> int:
    """Offset of the next CRLF "." at or after `pos`, or -1.

    Looks for the dot first: a one-byte search skips dotless data (base64 bodies) at memory
    speed, ten times faster than the three-byte search. After a few dots inside lines
    (text full of dots) it falls back to the three-byte search.
    """
    dot = buf.find(b".", pos + 2)
    for _ in range(4):
        if dot < 0:
            return -1
        if buf[dot - 1] == 0x0A and buf[dot - 2] == 0x0D:
            return dot - 2
        dot = buf.find(b".", dot + 1)
    if dot < 0:
        return -1
    return buf.find(b"\r\n.", dot - 2)


_COMMANDS = {
    "HELO": ServerConnection._cmd_helo,
    "EHLO": ServerConnection._cmd_ehlo,
    "LHLO": ServerConnection._cmd_lhlo,
    "MAIL": ServerConnection._cmd_mail,
    "RCPT": ServerConnection._cmd_rcpt,
    "DATA": ServerConnection._cmd_data,
    "RSET": ServerConnection._cmd_rset,
    "NOOP": ServerConnection._cmd_noop,
    "QUIT": ServerConnection._cmd_quit,
    "VRFY": ServerConnection._cmd_vrfy,
    "HELP": ServerConnection._cmd_help,
    "XFORWARD": ServerConnection._cmd_xforward,
    "EXPN": ServerConnection._cmd_not_implemented,
    "STARTTLS": ServerConnection._cmd_not_implemented,
    "AUTH": ServerConnection._cmd_not_implemented,
    "BDAT": ServerConnection._cmd_not_implemented,
    "TURN": ServerConnection._cmd_not_implemented,
    "ETRN": ServerConnection._cmd_not_implemented,
}


def parse_xforward(arg: bytes) -> list[tuple[str, str | None]] | Reply:
    """`NAME=value ...` -> [(NAME, decoded value or None for unavailable)], or the 501.

    Names are case-insensitive; values are xtext (RFC 1891: `+XX` for a byte). A decoded
    byte outside printable ASCII becomes `?` (Postfix neuters such characters too), so a
    value is one printable token; an ADDR so changed is simply no IP address.
    """
    words = arg.split()
    if not words:
        return Reply(501, "5.5.4 Syntax: XFORWARD attribute=value...")
    out = []
    for word in words:
        key, eq, raw = word.partition(b"=")
        if not eq or not raw:
            return Reply(501, "5.5.4 Error: attribute=value expected")
        name = key.decode("latin-1").upper()
        if name not in XFORWARD_NAMES:
            return Reply(501, f"5.5.4 Bad XFORWARD attribute name: {_token(name[:64])}")
        if len(raw) > _XFORWARD_MAX_VALUE:
            return Reply(501, f"5.5.4 Error: {name} value too long")
        value = xtext_decode(raw)
        if value is None:
            return Reply(501, f"5.5.4 Bad {name} syntax")
        out.append((name, None if value.upper() in _XFORWARD_UNKNOWN else value))
    return out


def xtext_decode(raw: bytes) -> str | None:
    """RFC 1891 xtext -> text (bytes outside `!`..`~` as `?`); None if a `+` is not `+XX`."""
    if b"+" in raw:
        if raw.count(b"+") != len(_XTEXT_HEX.findall(raw)):
            return None
        raw = _XTEXT_HEX.sub(lambda m: bytes.fromhex(m[1].decode()), raw)
    return _token(raw.decode("latin-1"))


def _token(text: str) -> str:
    """One printable ASCII word: anything else (space, control, non-ASCII) becomes `?`."""
    if text.isascii() and text.isprintable() and " " not in text:
        return text  # the usual case, three C-level scans
    return "".join(c if "!" <= c <= "~" else "?" for c in text)


def _parse_path(arg: bytes, keyword: bytes):
    """`FROM:<addr> PARAMS` -> (address, {PARAM: value-or-None}), or None on bad syntax.

    Angle brackets are optional (Postfix accepts a bare address unless configured strictly,
    and forwards the client's line verbatim). Quoted local parts may hold `>` and spaces.
    """
    if arg[: len(keyword)].upper() != keyword:
        return None
    rest = arg[len(keyword) :].lstrip(b" ")
    if rest.startswith(b"<"):
        end = _closing_bracket(rest)
        if end < 0:
            return None
        path = rest[1:end]
        rest = rest[end + 1 :]
        if rest and not rest.startswith(b" "):
            return None
    else:
        path, _, rest = rest.partition(b" ")
    if b":" in path and path.startswith(b"@"):
        path = path.split(b":", 1)[1]  # obsolete source route
    params = {}
    for word in rest.split():
        key, eq, value = word.partition(b"=")
        try:
            name = key.decode("ascii").upper()
        except UnicodeDecodeError:
            return None
        if not name:
            return None
        params[name] = value.decode("utf-8", "surrogateescape") if eq else None
    return path.decode("utf-8", "surrogateescape"), params


def _closing_bracket(rest: bytes) -> int:
    quoted = False
    i = 1
    n = len(rest)
    while i < n:
        c = rest[i]
        if c == 0x5C and quoted:  # backslash escape inside a quoted string
            i += 2
            continue
        if c == 0x22:
            quoted = not quoted
        elif c == 0x3E and not quoted:
            return i
        i += 1
    return -1
