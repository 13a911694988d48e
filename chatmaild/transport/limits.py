"""Bounded admission of deliveries (pure): a cap on all deliveries in flight and one per
destination domain. Over either cap the recipients get `421 Transport busy` at once and
Postfix retries them later; nothing waits without bound in memory.
"""

DEFAULT_WORKERS = 500
DEFAULT_PER_DESTINATION = 30


class Admission:
    def __init__(self, workers=DEFAULT_WORKERS, per_destination=DEFAULT_PER_DESTINATION):
        self.workers = workers
        self.per_destination = per_destination
        self.in_flight = 0
        self._by_domain: dict[str, int] = {}

    def enter(self, domain: str) -> bool:
        """Take a slot for one delivery to `domain`; False (nothing taken) when full."""
        count = self._by_domain.get(domain, 0)
        if self.in_flight >= self.workers or count >= self.per_destination:
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
