"""Keyed GCRA rate limiter with an injected clock and bounded memory.

GCRA (generic cell rate algorithm) keeps one number per key, the theoretical arrival time
(TAT). With emission interval T = 60 s / per_minute, a request at `now` is allowed when
max(TAT, now) + T - now <= burst * T, and then TAT becomes max(TAT, now) + T. So `burst`
requests pass back to back, then one every T seconds.

A key whose TAT is not after `now` behaves exactly like a key never seen, so it can be
forgotten. Keys live in an insertion-ordered dict, moved to the end when updated; since a
TAT is at most burst * T after the key's last update, the keys at the front are the first
to expire. Each check drops expired keys from the front: O(1) amortized, and the dict only
holds keys updated in the last burst * T seconds.
"""

import time
from collections import OrderedDict
from collections.abc import Callable, Hashable


class RateLimiter:
    def __init__(self, per_minute: float, burst: int, clock: Callable[[], float] = time.monotonic):
        if per_minute <= 0:
            raise ValueError(f"per_minute must be positive, not {per_minute!r}")
        self.interval = 60.0 / per_minute
        self.burst = max(int(burst), 1)
        self.tolerance = self.interval * self.burst
        self.clock = clock
        self._tats: OrderedDict[Hashable, float] = OrderedDict()

    def allow(self, key: Hashable) -> bool:
        """Count one request for `key`; True when it is within the rate."""
        now = self.clock()
        tats = self._tats
        self._expire(now)
        tat = tats.get(key, now)
        new_tat = (tat if tat > now else now) + self.interval
        if new_tat - now > self.tolerance:
            return False
        tats[key] = new_tat
        tats.move_to_end(key)
        return True

    def _expire(self, now: float):
        tats = self._tats
        while tats:
            key = next(iter(tats))
            if tats[key] > now:
                return
            del tats[key]

    def __len__(self) -> int:
        return len(self._tats)
