"""A scripted downstream SMTP server for the reinjection tests: it answers each command as
told, records exactly what it received, and can misbehave on purpose.

With `pipelining=True` it advertises PIPELINING and holds every reply until DATA (or EHLO,
QUIT, the final dot) arrives, then sends all held replies in one write, as Postfix's smtpd
does when its input is drained. A client that waits for each reply before sending the next
command would hang there, so a passing transaction proves the client pipelined.
With `pipelining=False` it answers each command at once and records how many command lines
arrived in one segment (a lock-step client never sends more than one).
"""

import asyncio
from dataclasses import dataclass, field


@dataclass
class Session:
    commands: list = field(default_factory=list)  # command lines, without CRLF
    messages: list = field(default_factory=list)  # message bytes up to the final dot
    data_after_354: list = field(default_factory=list)  # raw bytes of every open DATA
    data_aborted: bool = False  # EOF inside DATA (no final dot)
    eof: bool = False  # the connection is closed
    max_commands_per_segment: int = 0


class ScriptedDownstream:
    """`replies`: {"MAIL": "452 ...", "DATA": "451 ...", "DOT": "554 ...", "RSET": "421 ..."}
    override the reply to that command; `refuse_rcpt`: {address: reply}; `data_354_always`:
    answer DATA with 354 even after MAIL or every RCPT failed (a broken server);
    `close_on`: {verb: times} closes the connection, without replying, when that command
    arrives (the next `times` occurrences, over all connections)."""

    def __init__(
        self,
        *,
        pipelining=True,
        replies=None,
        refuse_rcpt=None,
        data_354_always=False,
        close_on=None,
    ):
        self.pipelining = pipelining
        self.replies = dict(replies or {})
        self.refuse_rcpt = dict(refuse_rcpt or {})
        self.data_354_always = data_354_always
        self.close_on = dict(close_on or {})
        self.sessions: list[Session] = []
        self.protocols: list[_ScriptedProtocol] = []
        self.server = None
        self.port = None

    async def start(self):
        loop = asyncio.get_running_loop()

        def factory():
            proto = _ScriptedProtocol(self)
            self.protocols.append(proto)
            return proto

        self.server = await loop.create_server(factory, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def stop(self):
        self.server.close()
        for proto in self.protocols:
            if proto.transport is not None:
                proto.transport.close()

    @property
    def messages(self):
        return [m for s in self.sessions for m in s.messages]

    def say(self, index: int, line: bytes):
        """Send an unsolicited line on connection `index` (e.g. a 421 before a timeout)."""
        self.protocols[index].transport.write(line)

    def _should_close(self, verb: str) -> bool:
        times = self.close_on.get(verb, 0)
        if times:
            self.close_on[verb] = times - 1
            return True
        return False


class _ScriptedProtocol(asyncio.Protocol):
    def __init__(self, script: ScriptedDownstream):
        self.script = script
        self.session = Session()
        script.sessions.append(self.session)
        self.transport = None
        self.buffer = b""
        self.held: list[bytes] = []
        self.in_data = False
        self.mail_ok = False
        self.rcpts_ok = 0

    def connection_made(self, transport):
        self.transport = transport
        transport.write(b"220 scripted.test ESMTP\r\n")

    def connection_lost(self, exc):
        self.transport = None
        self.eof_received()

    def eof_received(self):
        self.session.eof = True
        if self.in_data:
            self.session.data_aborted = True
        return False

    def data_received(self, data):
        self.buffer += data
        commands = 0
        while self.transport is not None and not self.transport.is_closing():
            if self.in_data:
                end = self.buffer.find(b"\r\n.\r\n")
                if self.buffer.startswith(b".\r\n"):
                    end = -2
                if end == -1:
                    self.session.data_after_354[-1] = self.buffer
                    break
                message = self.buffer[: end + 2]
                self.buffer = self.buffer[end + 5 :]
                self.session.data_after_354[-1] = message + b".\r\n"
                message = message.replace(b"\r\n..", b"\r\n.")
                self.session.messages.append(message[1:] if message[:2] == b".." else message)
                self.in_data = False
                default = f"250 2.0.0 Ok: queued as Q{len(self.script.messages)}"
                self._reply(self.script.replies.get("DOT", default), flush=True)
                continue
            line, sep, rest = self.buffer.partition(b"\r\n")
            if not sep:
                break
            self.buffer = rest
            commands += 1
            self._command(line.decode("utf-8", "surrogateescape"))
        self.session.max_commands_per_segment = max(self.session.max_commands_per_segment, commands)

    def _reply(self, reply: str, flush: bool):
        self.held.append(reply.encode() + b"\r\n")
        if flush or not self.script.pipelining:
            self.transport.write(b"".join(self.held))
            self.held.clear()

    def _command(self, line: str):
        script = self.script
        self.session.commands.append(line)
        verb = line.split(" ", 1)[0].upper()
        if script._should_close(verb):
            self.transport.close()
            return
        override = script.replies.get(verb)
        if verb == "EHLO":
            ext = "250-PIPELINING\r\n" if script.pipelining else ""
            self._reply(f"250-scripted.test\r\n{ext}250 8BITMIME", flush=True)
        elif verb == "RSET":
            self.mail_ok, self.rcpts_ok = False, 0
            self._reply(override or "250 2.0.0 Ok", flush=False)
        elif verb == "MAIL":
            self.mail_ok = override is None
            self._reply(override or "250 2.1.0 Ok", flush=False)
        elif verb == "RCPT":
            address = line.partition("<")[2].rpartition(">")[0]
            refused = script.refuse_rcpt.get(address)
            if refused is None and self.mail_ok:
                self.rcpts_ok += 1
            self._reply(
                refused or ("250 2.1.5 Ok" if self.mail_ok else "503 5.5.1 need MAIL"), False
            )
        elif verb == "DATA":
            if override:
                self._reply(override, flush=True)
            elif script.data_354_always or (self.mail_ok and self.rcpts_ok):
                self.in_data = True
                self.session.data_after_354.append(b"")
                self._reply("354 End data with <CR><LF>.<CR><LF>", flush=True)
            else:
                self._reply("503 5.5.1 Error: need RCPT command", flush=True)
        elif verb == "QUIT":
            self._reply("221 2.0.0 Bye", flush=True)
            self.transport.close()
        else:
            self._reply("502 5.5.2 Error: command not recognized", flush=False)
