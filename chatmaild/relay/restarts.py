"""When to restart a daemon that died: exponential back-off, reset by a stable run. Pure.

The local relay's supervisor (supervise.py) asks `Backoff` how long to wait before the next
start. The first restart comes quickly (a crash is usually a one-off); a daemon that keeps
dying waits longer each time, up to `MAX_DELAY`, so a broken daemon neither spins the CPU
nor floods its log. A run that lasted `STABLE_AFTER` seconds starts the sequence over.
"""

FIRST_DELAY = 0.5
MAX_DELAY = 30.0
FACTOR = 2.0
STABLE_AFTER = 30.0


class Backoff:
    def __init__(self, first=FIRST_DELAY, maximum=MAX_DELAY, stable_after=STABLE_AFTER):
        self.first = first
        self.maximum = maximum
        self.stable_after = stable_after
        self.failures = 0  # consecutive short runs

    def next_delay(self, ran_for):
        """Seconds to wait before restarting a daemon whose last run lasted `ran_for` s."""
        if ran_for >= self.stable_after:
            self.failures = 0
        delay = min(self.first * FACTOR**self.failures, self.maximum)
        self.failures += 1
        return delay
