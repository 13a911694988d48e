"""Device tokens of users, kept in each mailbox's metadata.json through chatmaild.mailbox.

Expired and future-dated tokens are dropped on access: a read that finds some writes the pruned
dict back (rare, so reads stay one open+read+parse). A corrupt metadata.json is logged and
treated as empty; the next token set replaces it.
"""

import time
from collections.abc import Callable

from chatmaild.metadata import tokens as T


class TokenStore:
    def __init__(self, mailboxes, clock: Callable[[], float] = time.time):
        self.mailboxes = mailboxes
        self.clock = clock

    def _read(self, user, now: float) -> dict:
        # chatmaild.mailbox logs a corrupt file and returns {}
        return T.stored_tokens(user.read_metadata(now=now))

    def get_tokens(self, addr: str) -> list[str]:
        """Valid tokens of `addr` (InvalidAddress for a bad address)."""
        user = self.mailboxes.user(addr)
        now = self.clock()
        stored = self._read(user, now)
        if not stored:
            return []
        valid = T.valid_tokens(stored, now)
        if len(valid) != len(stored):
            self._modify(user, lambda tokens, now: None)
        return valid

    def add_token(self, addr: str, token: str) -> bool:
        """Store `token` dated now; False when it was stored less than a day ago (no write)."""
        user = self.mailboxes.user(addr)
        now = self.clock()
        if T.is_recent_registration(self._read(user, now), token, now):
            return False

        def add(tokens, now):
            tokens[token] = int(now)

        self._modify(user, add)
        return True

    def remove_tokens(self, addr: str, token: str | None = None) -> None:
        """Remove `token`, or every token of `addr` when `token` is None."""

        def remove(tokens, now):
            if token is None:
                tokens.clear()
            else:
                tokens.pop(token, None)

        self._modify(self.mailboxes.user(addr), remove)

    def _modify(self, user, change) -> None:
        """Read-modify-write under the mailbox lock; prunes, converts legacy entries."""
        now = self.clock()
        with user.modify_metadata(now=now) as metadata:
            current = T.pruned(T.stored_tokens(metadata), now)
            change(current, now)
            metadata[T.TOKEN_KEY] = current
