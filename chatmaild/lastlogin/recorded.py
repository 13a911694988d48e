"""Which addresses were seen carrying today's login day on disk: pure bookkeeping, no I/O.

Most logins repeat a login of the same day, and the password file's mtime then is already
that day. Remembering the addresses whose file a stat found carrying the newest day seen lets
such a set skip the file system entirely. Only what a stat confirmed is remembered, not our
own writes: a utime may have hit a file that was replaced right after (`User.create` replaces
an empty password file) or that someone set back, and the next set's stat still sees that.
Only one day is kept: when a newer day arrives the set starts over, so the memory is bounded
by one day's distinct logins (and by `max_size`).
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
        """A stat found `addr`'s file carrying `day`."""
        current = self.day
        if current is None or day > current:
            self.day = day
            self.addrs = set()
        elif day < current:  # a late set of an older day: nothing to learn about today
            self.addrs.discard(addr)
            return
        addrs = self.addrs
        if len(addrs) >= self.max_size:
            addrs.clear()
        addrs.add(addr)

    def forget(self, addr: str) -> None:
        """`addr`'s file was just written, or is missing: the next set looks at the disk."""
        self.addrs.discard(addr)
