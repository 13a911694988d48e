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

import json
import logging
from importlib import resources

from chatmaild.metadata import tokens as T
from chatmaild.metadata.keys import Entry, parse_key

log = logging.getLogger(__name__)

MAX_SMTP_RECIPIENTS = 1000
TURN_PORT = 3478


def load_appversions() -> str:
    """The packaged appversions document as one line of JSON."""
    text = resources.files("chatmaild.metadata").joinpath("appversions.json").read_text()
    return json.dumps(json.loads(text), separators=(",", ":"))


class CommitRefused(Exception):
    pass


class MetadataService:
    def __init__(self, config, mailboxes, store, notifier, turn, appversions=None):
        self.config = config
        self.mailboxes = mailboxes
        self.store = store
        self.notifier = notifier
        self.turn = turn
        self.appversions = appversions if appversions is not None else load_appversions()
        self._invalid_address_error = _invalid_address_error()

    # -- lookups --

    def lookup(self, key: str, user: str):
        entry = parse_key(key)
        if entry is None:
            return None
        kind, name = entry
        if kind is Entry.DEVICETOKEN:
            try:
                tokens = self.store.get_tokens(user)
            except self._invalid_address_error as e:
                log.warning("devicetoken lookup refused for user %r: %s", user, e)
                raise _dict_failure("invalid user") from None
            return " ".join(tokens) if tokens else None
        if kind is Entry.SERVER:
            return self._server_value(name)
        return None

    def _server_value(self, name: str):
        if name == "irohrelay":
            return self.config.iroh_relay or None
        if name == "maxsmtprecipients":
            return str(MAX_SMTP_RECIPIENTS)
        if name == "appversions":
            return self.appversions
        if name == "turn":
            return self._turn_value()
        return None

    async def _turn_value(self):
        credentials = await self.turn.fetch()
        if credentials is None:
            return None
        return f"{self.config.mail_domain}:{TURN_PORT}:{credentials}"

    def iterate(self, path: str, user: str, flags: int):
        return ()

    # -- transactions --

    def commit(self, txn) -> bool:
        try:
            actions = self._plan(txn.user, txn.ops)
        except CommitRefused as e:
            log.warning("metadata commit for %r refused: %s", txn.user, e)
            return False
        for action in actions:
            try:
                action()
            except self._invalid_address_error as e:
                log.warning("metadata commit for %r refused: %s", txn.user, e)
                return False
            except OSError as e:
                log.error("metadata commit for %r failed: %s", txn.user, e)
                return False
        return True

    def _plan(self, user: str, ops) -> list:
        """Check every op, return the callables that apply them (CommitRefused if one is bad)."""
        actions = []
        checked_user = None
        for op in ops:
            verb, key = op[0], op[1]
            entry = parse_key(key)
            if entry is None:
                continue
            kind, _ = entry
            if kind is Entry.SERVER:
                raise CommitRefused(f"server entry {key} is read-only")
            if checked_user is None:
                try:
                    checked_user = self.mailboxes.check_address(user)
                except self._invalid_address_error as e:
                    raise CommitRefused(f"invalid user: {e}") from None
            if kind is Entry.DEVICETOKEN:
                if verb == "S":
                    token = op[2]
                    problem = T.token_problem(token)
                    if problem:
                        raise CommitRefused(f"devicetoken not stored: {problem}")
                    actions.append(lambda t=token: self.store.add_token(checked_user, t))
                elif verb == "U":
                    actions.append(lambda: self.store.remove_tokens(checked_user))
                else:
                    raise CommitRefused(f"unsupported operation {verb} on {key}")
            elif kind is Entry.MESSAGENEW:
                if verb == "S":
                    actions.append(lambda: self._notify(checked_user))
        return actions

    def _notify(self, addr: str) -> None:
        for token in self.store.get_tokens(addr):
            self.notifier.enqueue(addr, token)


def _invalid_address_error():
    from chatmaild.mailbox import InvalidAddress

    return InvalidAddress


def _dict_failure(msg: str):
    from chatmaild.dictproxy import DictFailure

    return DictFailure(msg)
