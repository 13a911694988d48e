"""Bounded admission of deliveries (pure): at most `workers` deliveries (message x domain)
taken in at once, and per destination domain at most `per_destination` running plus `queue`
waiting for one of them. Over either cap the recipients get `421 Transport busy` at once and
Postfix retries them later; nothing waits without bound in memory. (Postfix itself sends at
most `lmtp-filtermail_destination_concurrency_limit` = 100 messages at once, so with the
defaults a single busy domain still never sees the 421.)
"""

DEFAULT_WORKERS = 500
DEFAULT_PER_DESTINATION = 30
DEFAULT_QUEUE = 100


class Admission:
    def __init__(
        self, workers=DEFAULT_WORKERS, per_destination=DEFAULT_PER_DESTINATION, queue=DEFAULT_QUEUE
    ):
        self.workers = workers
        self.per_destination = per_destination  # running at once (deliver.py enforces it)
        self.queue = queue  # waiting beyond those
        self.in_flight = 0
        self._by_domain: dict[str, int] = {}

    def enter(self, domain: str) -> bool:
        """Take a place for one delivery to `domain`; False (nothing taken) when full."""
        count = self._by_domain.get(domain, 0)
        if self.in_flight >= self.workers or count >= self.per_destination + self.queue:
            return False
        self.in_flight += 1
        self._by_domain[domain] = count + 1
        return True

    def leave(self, domain: str) -> None:
        count = self._by_domain[domain] - 1
        if count:
            self._by_domain[domain] = count
        else:
            del self._by_domain[domain]
        self.in_flight -= 1

    def taken(self, domain: str) -> int:
        return self._by_domain.get(domain, 0)
