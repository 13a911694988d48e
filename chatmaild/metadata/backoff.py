"""The retry schedule of push notifications (pure: no clock, no I/O).

Attempt 0 happens when the notification is queued; after the n-th failed attempt the next one is
due at ``first_attempt + first_delay * factor ** (n - 1)`` (8 s, 64 s, 512 s, 4096 s after the
first attempt with the defaults). Offsets are measured from the first attempt, not from the
failure, so the schedule survives restarts and slow requests unchanged. An offset beyond
``give_up_after`` is clamped to one last attempt exactly at the deadline; after that fails, the
notification is given up. An item found due more than ``late_grace`` after the deadline (the
daemon was down meanwhile) is dropped without that last attempt.
"""

from dataclasses import dataclass

FIRST_DELAY = 8.0
FACTOR = 8.0
GIVE_UP_AFTER = 5 * 3600.0


@dataclass(frozen=True, slots=True)
class RetrySchedule:
    first_delay: float = FIRST_DELAY
    factor: float = FACTOR
    give_up_after: float = GIVE_UP_AFTER
    late_grace: float = 60.0

    def offset(self, attempt: int) -> float:
        """Seconds after the first attempt at which attempt number `attempt` (0-based) is due."""
        if attempt <= 0:
            return 0.0
        delay = self.first_delay
        for _ in range(attempt - 1):
            delay *= self.factor
            if delay >= self.give_up_after:
                break
        return min(delay, self.give_up_after)

    def next_attempt(self, first_attempt: float, failed_attempts: int) -> float | None:
        """When to try again after `failed_attempts` failures, or None to give up."""
        if failed_attempts < 1:
            return first_attempt
        if self.offset(failed_attempts - 1) >= self.give_up_after:
            return None
        return first_attempt + self.offset(failed_attempts)

    def expired(self, first_attempt: float, now: float) -> bool:
        """True when an attempt at `now` would come too late to be worth making."""
        return now > first_attempt + self.give_up_after + self.late_grace
