"""Helpers shared by the metadata tests: a fake clock, a raw dict client, a service builder."""

import asyncio

from chatmaild.config import read_config
from chatmaild.dictproxy.proto import escape, unescape
from chatmaild.mailbox import Mailboxes
from chatmaild.metadata.notifier import Notifier
from chatmaild.metadata.service import MetadataService
from chatmaild.metadata.store import TokenStore
from chatmaild.metadata.turn import TurnCredentials

GUID = "0123456789abcdef0123456789abcdef"
DOMAIN = "chat.example"
ALICE = f"alice1234@{DOMAIN}"
SERVER = f"shared/{GUID}/vendor/vendor.dovecot/pvt/server/vendor/deltachat/"
TOKEN_KEY = f"priv/{GUID}/devicetoken"
MESSAGENEW_KEY = f"priv/{GUID}/messagenew"


class FakeClock:
    def __init__(self, now=1_700_000_000.0):
        self.now = float(now)

    def __call__(self):
        return self.now

    def advance(self, seconds):
        self.now += seconds


def meta_ini(tmp_path, **params):
    """A chatmail.ini for metadata tests: mailboxes, TURN socket and push URL under tmp_path."""
    from conftest import write_ini

    defaults = dict(
        mailboxes_dir=tmp_path / "mailboxes",
        turn_socket_path=tmp_path / "turn.socket",
        notification_url="http://127.0.0.1:9/notify",
        # no local iroh relay to probe: iroh_relay is advertised as it is
        iroh_relay_listen="",
    )
    defaults.update(params)
    return write_ini(tmp_path / "chatmail.ini", mail_domain=DOMAIN, **defaults)


def build(ini_path, clock=None, **notifier_kw):
    """(service, mailboxes, store, notifier) wired like cli.build_service, with `clock`."""
    config = read_config(ini_path)
    clock = clock or FakeClock()
    mailboxes = Mailboxes(config.mailboxes_dir, config.address_domain)
    store = TokenStore(mailboxes, clock=clock)
    notifier = Notifier(
        mailboxes.pending_notifications_dir,
        config.notification_url,
        on_token_gone=store.remove_tokens,
        clock=clock,
        **notifier_kw,
    )
    turn = TurnCredentials(config.turn_socket_path, timeout=1.0)
    service = MetadataService(config, mailboxes, store, notifier, turn)
    return service, mailboxes, store, notifier


class DictClient:
    """Speaks the Dovecot dict protocol like the 2.3 proxy client (one connection)."""

    def __init__(self, reader, writer):
        self.reader = reader
        self.writer = writer
        self.txid = 0

    @classmethod
    async def connect(cls, path):
        reader, writer = await asyncio.open_unix_connection(str(path))
        writer.write(b"H3\t2\t0\t\tmetadata\n")
        return cls(reader, writer)

    async def close(self):
        self.writer.close()
        await self.writer.wait_closed()

    async def readline(self) -> str:
        line = await asyncio.wait_for(self.reader.readline(), 10)
        assert line.endswith(b"\n"), line
        return line[:-1].decode()

    async def lookup(self, key, user=ALICE) -> str:
        self.writer.write(f"L{escape(key)}\t{escape(user)}\n".encode())
        return await self.readline()

    async def lookup_value(self, key, user=ALICE):
        """The unescaped value, None for not found; AssertionError for anything else."""
        reply = await self.lookup(key, user)
        if reply == "N":
            return None
        assert reply.startswith("O"), reply
        return unescape(reply[1:])

    async def commit(self, ops, user=ALICE) -> str:
        """Send B, the ops, C; ops are (key, value) for S or (key,) for U. Returns the reply."""
        self.txid += 1
        tx = self.txid
        lines = [f"B{tx}\t{escape(user)}"]
        for op in ops:
            if len(op) == 2:
                lines.append(f"S{tx}\t{escape(op[0])}\t{escape(op[1])}")
            else:
                lines.append(f"U{tx}\t{escape(op[0])}")
        lines.append(f"C{tx}")
        self.writer.write(("\n".join(lines) + "\n").encode())
        return await self.readline()

    async def iterate(self, path, flags=9, user=ALICE) -> list[str]:
        self.writer.write(f"I{flags}\t0\t{escape(path)}\t{escape(user)}\n".encode())
        rows = []
        while True:
            line = await self.readline()
            if line == "" or line.startswith("\t"):
                return rows
            rows.append(line)
