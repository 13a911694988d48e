"""The supervisor's restart back-off (chatmaild/relay/restarts.py)."""

from chatmaild.relay.restarts import Backoff


def test_short_runs_back_off_exponentially_up_to_the_cap():
    backoff = Backoff(first=0.5, maximum=4.0, stable_after=30.0)
    assert [backoff.next_delay(1.0) for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]


def test_a_stable_run_starts_over():
    backoff = Backoff(first=0.5, maximum=30.0, stable_after=30.0)
    for _ in range(4):
        backoff.next_delay(0.1)
    assert backoff.next_delay(29.9) == 8.0
    assert backoff.next_delay(30.0) == 0.5
    assert backoff.next_delay(0.1) == 1.0
