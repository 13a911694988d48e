"""Pure decisions: Maildir file names and the expire planner at every boundary."""

import pytest

from chatmaild.housekeeping.expireplan import (
    DAY,
    LARGE_MESSAGE_SIZE,
    ExpirePolicy,
    is_inactive,
    plan_mailbox,
    plan_trim,
)
from chatmaild.housekeeping.maildir import MessageFile, parse_message_name

NOW = 1_700_000_000
POLICY = ExpirePolicy(
    mails_after_days=20, large_after_days=7, inactive_after_days=90, max_mailbox_size=1_000_000
)


@pytest.mark.parametrize(
    "name, size, flags, seen",
    [
        ("1700000000.M12P34.host,S=12345,W=12500:2,S", 12345, "S", True),
        ("1700000000.M12P34.host,S=12345,W=12500:2,", 12345, "", False),
        ("1700000000.M12P34.host,S=12345,W=12500:2,FRST", 12345, "FRST", True),
        ("1700000000.M12P34.host,W=12500,S=99:2,RS", 99, "RS", True),
        ("1700000000.M12P34.host,S=12345,W=12500", 12345, "", False),  # new/: no info
        ("1700000000.M12P34.host:2,S", None, "S", True),  # no S= field
        ("1700000000.M12P34.host,S=12x:2,S", None, "S", True),  # malformed S=
        ("1700000000.M12P34.host,S=:2,S", None, "S", True),
        ("1700000000.M12P34.host,S=١٢:2,", None, "", False),  # non-ASCII digits
        ("weird", None, "", False),
        ("", None, "", False),
        ("1700000000.M1.host,S=5:2,S:2,T", 5, "S:2,T", True),
    ],
)
def test_parse_message_name(name, size, flags, seen):
    parsed = parse_message_name(name)
    assert parsed.size == size
    assert parsed.flags == flags
    assert parsed.seen is seen


def msg(mtime, size=1000, seen=True, folder="cur", name=None):
    return MessageFile(folder, name or f"{mtime}.{size}.{seen}", mtime, size, seen)


@pytest.mark.parametrize(
    "last_login, inactive",
    [
        (None, False),
        (NOW - 90 * DAY, False),  # exactly at the boundary: kept
        (NOW - 90 * DAY - 1, True),
        (NOW - 89 * DAY, False),
        (NOW, False),
    ],
)
def test_inactive_boundary(last_login, inactive):
    assert is_inactive(last_login, NOW, POLICY) is inactive
    plan = plan_mailbox(last_login, [msg(NOW - 30 * DAY)], POLICY, NOW)
    assert plan.remove_mailbox is inactive
    if inactive:
        assert plan.delete == []


@pytest.mark.parametrize(
    "age, deleted", [(20 * DAY, False), (20 * DAY + 1, True), (19 * DAY, False), (400 * DAY, True)]
)
def test_old_mail_boundary(age, deleted):
    for seen in (True, False):
        m = msg(NOW - age, seen=seen)
        plan = plan_mailbox(NOW - DAY, [m], POLICY, NOW)
        assert (plan.old == [m]) is deleted
        assert plan.large == [] and plan.trimmed == []


@pytest.mark.parametrize(
    "size, age, seen, deleted",
    [
        (LARGE_MESSAGE_SIZE, 8 * DAY, True, False),  # exactly 200 KiB: not large
        (LARGE_MESSAGE_SIZE + 1, 8 * DAY, True, True),
        (LARGE_MESSAGE_SIZE + 1, 8 * DAY, False, False),  # unseen large mail stays
        (LARGE_MESSAGE_SIZE + 1, 7 * DAY, True, False),  # exactly 7 days: kept
        (LARGE_MESSAGE_SIZE + 1, 7 * DAY + 1, True, True),
        (10 * LARGE_MESSAGE_SIZE, 6 * DAY, True, False),
    ],
)
def test_large_seen_boundary(size, age, seen, deleted):
    policy = ExpirePolicy(20, 7, 90, max_mailbox_size=10**9)
    m = msg(NOW - age, size=size, seen=seen)
    plan = plan_mailbox(NOW, [m], policy, NOW)
    assert (plan.large == [m]) is deleted
    assert plan.old == []


@pytest.mark.parametrize("folder", ["new", ".DeltaChat/new", ".Trash/new"])
def test_unfetched_large_mail_is_kept_by_the_large_rule(folder):
    """A file in new/ was never fetched: the large rule spares it whatever its flags say;
    the general age rule still removes it."""
    policy = ExpirePolicy(20, 7, 90, max_mailbox_size=10**9)
    size = LARGE_MESSAGE_SIZE + 1
    name = f"1700000000.M1P2.host,S={size},W={size}:2,S"
    assert parse_message_name(name).seen
    week_old = msg(NOW - 8 * DAY, size=size, folder=folder, name=name)
    assert week_old.unfetched
    plan = plan_mailbox(NOW, [week_old], policy, NOW)
    assert plan.delete == []
    month_old = msg(NOW - 21 * DAY, size=size, folder=folder, name=name)
    plan = plan_mailbox(NOW, [month_old], policy, NOW)
    assert plan.old == [month_old] and plan.large == []


@pytest.mark.parametrize("folder", ["cur", ".DeltaChat/cur", ".newsletters/cur"])
def test_fetched_large_seen_mail_goes_by_the_large_rule(folder):
    policy = ExpirePolicy(20, 7, 90, max_mailbox_size=10**9)
    m = msg(NOW - 8 * DAY, size=LARGE_MESSAGE_SIZE + 1, folder=folder)
    assert not m.unfetched
    plan = plan_mailbox(NOW, [m], policy, NOW)
    assert plan.large == [m] and plan.old == []


def test_large_is_200_kib():
    assert LARGE_MESSAGE_SIZE == 204800


def test_trim_exactly_at_70_percent_keeps_everything():
    # quota 1,000,000 -> target 700,000
    messages = [msg(NOW - (10 - i) * DAY, size=100_000, seen=False) for i in range(7)]
    assert plan_mailbox(NOW, messages, POLICY, NOW).trimmed == []


def test_trim_one_byte_over_70_percent_removes_oldest():
    messages = [msg(NOW - (10 - i) * DAY, size=100_000, seen=False) for i in range(7)]
    messages.append(msg(NOW - 2 * DAY, size=1, seen=False))
    plan = plan_mailbox(NOW, messages, POLICY, NOW)
    assert plan.trimmed == [messages[0]]  # the oldest, and only as much as needed


def test_trim_goes_oldest_first_until_under_target():
    sizes = [300_000, 300_000, 300_000, 300_000]
    messages = [msg(NOW - (5 - i) * DAY, size=s, seen=False) for i, s in enumerate(sizes)]
    plan = plan_mailbox(NOW, list(reversed(messages)), POLICY, NOW)
    assert plan.trimmed == messages[:2]  # 1.2 MB -> 600 KB <= 700 KB


@pytest.mark.parametrize("age, trimmed", [(DAY, False), (DAY + 1, True), (DAY - 1, False)])
def test_trim_never_touches_last_24_hours(age, trimmed):
    big = msg(NOW - age, size=900_000, seen=False)
    recent = msg(NOW - 60, size=100, seen=False)
    plan = plan_mailbox(NOW, [big, recent], POLICY, NOW)
    assert (plan.trimmed == [big]) is trimmed
    assert recent not in plan.trimmed


def test_trim_counts_only_what_the_rules_left():
    # an old 600 KB message goes by rule 2; the 650 KB left are under the target
    old = msg(NOW - 30 * DAY, size=600_000)
    rest = [msg(NOW - 3 * DAY, size=650_000, seen=False)]
    plan = plan_mailbox(NOW, [old, *rest], POLICY, NOW)
    assert plan.old == [old] and plan.trimmed == []


def test_plan_trim_without_protection_may_take_recent_mail():
    messages = [msg(NOW - i, size=100) for i in range(10)]
    chosen = plan_trim(messages, 500)
    assert len(chosen) == 5
    assert all(m.mtime <= min(x.mtime for x in messages if x not in chosen) for m in chosen)


def test_plan_trim_under_target_is_empty():
    assert plan_trim([msg(NOW, size=10)], 10) == []
    assert plan_trim([], 0) == []
