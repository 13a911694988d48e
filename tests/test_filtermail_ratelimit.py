"""The keyed GCRA limiter, under a fake clock."""

import pytest

from chatmaild.filtermail.ratelimit import RateLimiter


class FakeClock:
    def __init__(self, now=1000.0):
        self.now = now

    def __call__(self):
        return self.now


def test_burst_then_refusal():
    clock = FakeClock()
    limiter = RateLimiter(per_minute=60, burst=10, clock=clock)
    assert [limiter.allow("a") for _ in range(12)] == [True] * 10 + [False] * 2


def test_refusals_do_not_consume_budget():
    clock = FakeClock()
    limiter = RateLimiter(per_minute=60, burst=2, clock=clock)
    assert [limiter.allow("a") for _ in range(2)] == [True, True]
    for _ in range(100):
        assert not limiter.allow("a")
    clock.now += 1.0
    assert limiter.allow("a")
    assert not limiter.allow("a")


def test_sustained_rate_after_burst():
    clock = FakeClock()
    limiter = RateLimiter(per_minute=60, burst=3, clock=clock)
    for _ in range(3):
        assert limiter.allow("a")
    assert not limiter.allow("a")
    # One more each emission interval (1 s), never two.
    for _ in range(20):
        clock.now += 1.0
        assert limiter.allow("a")
        assert not limiter.allow("a")


@pytest.mark.parametrize(
    "name, wait, allowed",
    [
        ("half-interval", 0.5, 0),
        ("one-interval", 1.0, 1),
        ("three-intervals", 3.0, 3),
        ("full-recovery", 10.0, 10),
        ("long-idle", 3600.0, 10),
    ],
)
def test_recovery_after_time_passes(name, wait, allowed):
    clock = FakeClock()
    limiter = RateLimiter(per_minute=60, burst=10, clock=clock)
    while limiter.allow("a"):
        pass
    clock.now += wait
    got = 0
    while limiter.allow("a"):
        got += 1
    assert got == allowed


def test_keys_are_independent():
    clock = FakeClock()
    limiter = RateLimiter(per_minute=6, burst=1, clock=clock)
    assert limiter.allow("a")
    assert not limiter.allow("a")
    assert limiter.allow("b")
    clock.now += 9.9
    assert not limiter.allow("a")
    clock.now += 0.1
    assert limiter.allow("a")


def test_memory_bounded_with_many_distinct_keys():
    clock = FakeClock()
    limiter = RateLimiter(per_minute=60, burst=10, clock=clock)
    peak = 0
    for i in range(100_000):
        clock.now += 0.01  # 100 new senders per second
        assert limiter.allow(f"user{i}@chat.example")
        peak = max(peak, len(limiter))
    # A key lives at most burst * interval = 10 s: about 1000 keys at 100 keys/s.
    assert peak <= 1001
    clock.now += 11
    limiter.allow("last@chat.example")
    assert len(limiter) == 1


def test_expired_key_behaves_like_fresh_key():
    clock = FakeClock()
    limiter = RateLimiter(per_minute=60, burst=5, clock=clock)
    for _ in range(5):
        assert limiter.allow("a")
    clock.now += 5.0
    assert limiter.allow("other")  # sweeps "a"
    assert len(limiter) == 1
    assert [limiter.allow("a") for _ in range(6)] == [True] * 5 + [False]


def test_burst_below_one_still_allows_one():
    limiter = RateLimiter(per_minute=60, burst=0, clock=FakeClock())
    assert limiter.allow("a")
    assert not limiter.allow("a")


@pytest.mark.parametrize("per_minute", [0, -1])
def test_invalid_rate(per_minute):
    with pytest.raises(ValueError):
        RateLimiter(per_minute=per_minute, burst=10)
