"""The metadata dict service: answers Dovecot's lookups and commits (no sockets, no parsing).

Keys are those of SPEC 5.3 (see keys.py). Decisions worth knowing:
- A user without valid tokens gets "not found", never an empty value.
- Unset of ``devicetoken`` (SETMETADATA NIL) carries no value, so it removes all of the user's
  tokens; the other devices register theirs again at their next login.
- A transaction is checked whole before anything is applied: an unacceptable set (bad address,
  empty or over-long token, a write to a server entry) fails the commit and changes nothing.
- Sets and unsets of keys this service does not know are accepted and ignored, as before.
- Iterations return no rows (Dovecot still gets its terminator from the dict server).
"""

import asyncio
import json
import logging
from importlib import resources

from chatmaild.dictproxy import DictFailure
from chatmaild.mailbox import InvalidAddress
from chatmaild.metadata import tokens as T
from chatmaild.metadata.keys import Entry, parse_key
from chatmaild.metrics.metadata import MetadataMetrics

log = logging.getLogger(__name__)

MAX_SMTP_RECIPIENTS = 1000


def load_appversions() -> str:
    """The packaged appversions document as one line of JSON."""
    text = resources.files("chatmaild.metadata").joinpath("appversions.json").read_text()
    return json.dumps(json.loads(text), separators=(",", ":"))


class CommitRefused(Exception):
    pass


class MetadataService:
    def __init__(
        self,
        config,
        mailboxes,
        store,
        notifier,
        turn,
        appversions=None,
        metrics=None,
        iroh_probe=None,
    ):
        self.config = config
        self.metrics = metrics if metrics is not None else MetadataMetrics()
        self._lookup_devicetoken = self.metrics.lookup["devicetoken"]
        self._lookup_other = self.metrics.lookup["other"]
        self._tokens_stored = self.metrics.tokens_stored
        self.mailboxes = mailboxes
        self.store = store
        self.notifier = notifier
        self.turn = turn
        # HttpProbe of the local iroh relay; None: iroh_relay is advertised unprobed
        self.iroh_probe = iroh_probe
        self.appversions = appversions if appversions is not None else load_appversions()
        self._notifier_task = None

    # -- lifetime (called by chatmaild.dictproxy.server around serving) --

    def start(self) -> None:
        """Resume the persistent queue and start sending (needs a running loop)."""
        self.notifier.load()
        self._notifier_task = asyncio.create_task(self.notifier.run())

    async def close(self) -> None:
        if self._notifier_task is not None:
            self._notifier_task.cancel()
            await asyncio.gather(self._notifier_task, return_exceptions=True)
            self._notifier_task = None

    # -- lookups --

    def lookup(self, key: str, user: str):
        entry = parse_key(key)
        if entry is None:
            self._lookup_other.inc()
            return None
        kind, name = entry
        if kind is Entry.DEVICETOKEN:
            self._lookup_devicetoken.inc()
            try:
                tokens = self.store.get_tokens(user)
            except InvalidAddress as e:
                log.warning("devicetoken lookup refused for user %r: %s", user, e)
                raise DictFailure("invalid user") from None
            return " ".join(tokens) if tokens else None
        if kind is Entry.SERVER:
            self.metrics.lookup_key(name)
            return self._server_value(name)
        self._lookup_other.inc()
        return None

    def _server_value(self, name: str):
        if name == "irohrelay":
            return self._iroh_value()
        if name == "maxsmtprecipients":
            return str(MAX_SMTP_RECIPIENTS)
        if name == "appversions":
            return self.appversions
        if name == "turn":
            return self._turn_value()
        return None

    def _iroh_value(self):
        """The iroh relay URL while the relay answers, else not found (an awaitable only
        when a probe is due)."""
        url = self.config.iroh_relay or None
        if url is None or self.iroh_probe is None:
            return url
        up = self.iroh_probe.cached()
        if up is None:
            return self._iroh_value_probed(url)
        return url if up else None

    async def _iroh_value_probed(self, url):
        return url if await self.iroh_probe.check() else None

    async def _turn_value(self):
        credentials = await self.turn.fetch()
        if credentials is None:
            return None
        return f"{self.config.mail_domain}:{self.config.turn_port}:{credentials}"

    def iterate(self, path: str, user: str, flags: int):
        return ()

    # -- transactions --

    def commit(self, txn) -> bool:
        try:
            addr, actions = self._plan(txn.user, txn.ops)
        except CommitRefused as e:
            log.warning("metadata commit for %r refused: %s", txn.user, e)
            return False
        try:
            for action, arg in actions:
                if action == "add":
                    self.store.add_token(addr, arg)
                    self._tokens_stored.inc()
                elif action == "clear":
                    self.store.remove_tokens(addr)
                elif action == "notify":
                    self._notify(addr)
        except OSError as e:
            log.error("metadata commit for %r failed: %s", txn.user, e)
            return False
        return True

    def _plan(self, user: str, ops) -> tuple[str | None, list[tuple[str, str | None]]]:
        """Check every op first: (checked address, actions), or CommitRefused if one is bad."""
        actions = []
        addr = None
        for op in ops:
            verb, key = op[0], op[1]
            entry = parse_key(key)
            if entry is None:
                continue
            kind, _ = entry
            if kind is Entry.SERVER:
                raise CommitRefused(f"server entry {key} is read-only")
            if addr is None:
                try:
                    addr = self.mailboxes.check_address(user)
                except InvalidAddress as e:
                    raise CommitRefused(f"invalid user: {e}") from None
            if kind is Entry.DEVICETOKEN:
                if verb == "S":
                    problem = T.token_problem(op[2])
                    if problem:
                        raise CommitRefused(f"devicetoken not stored: {problem}")
                    actions.append(("add", op[2]))
                elif verb == "U":
                    actions.append(("clear", None))
                else:
                    raise CommitRefused(f"unsupported operation {verb} on {key}")
            elif kind is Entry.MESSAGENEW and verb == "S":
                actions.append(("notify", None))
        return addr, actions

    def _notify(self, addr: str) -> None:
        for token in self.store.get_tokens(addr):
            self.notifier.enqueue(addr, token)
