"""Which addresses already have today's login day on disk: pure bookkeeping, no I/O.

Most logins repeat a login of the same day, and the password file's mtime then is already
that day. Remembering the addresses written (or found) for the newest day seen lets such a
set skip the file system entirely. Only one day is kept: when a newer day arrives, the set
starts over, so the memory is bounded by one day's distinct logins (and by `max_size`).
"""

#: distinct addresses remembered for one day; beyond it the set starts over (each address
#: then costs one stat again, as without the cache)
MAX_SIZE = 500_000


class RecordedDays:
    __slots__ = ("day", "addrs", "max_size")

    def __init__(self, max_size: int = MAX_SIZE):
        self.day = None
        self.addrs = set()
        self.max_size = max_size

    def known(self, addr: str, day: int) -> bool:
        """True if `addr`'s file is known to carry `day` already (nothing to do)."""
        return day == self.day and addr in self.addrs

    def remember(self, addr: str, day: int) -> None:
        """`addr`'s file now carries `day` (written or found so)."""
        current = self.day
        if current is None or day > current:
            self.day = day
            self.addrs = set()
        elif day < current:
            # an older day went to disk (a late set): the newest day no longer holds
            self.addrs.discard(addr)
            return
        addrs = self.addrs
        if len(addrs) >= self.max_size:
            addrs.clear()
        addrs.add(addr)

    def forget(self, addr: str) -> None:
        """Nothing is known of `addr`'s file any more (e.g. it has no account)."""
        self.addrs.discard(addr)
