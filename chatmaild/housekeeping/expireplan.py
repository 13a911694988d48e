"""What chatmail-expire removes from one mailbox: a pure decision over file facts and `now`.

Rules, applied in this order (all comparisons strict, so a file or login exactly at a
boundary is kept):
1. inactive account: the password file's mtime (last login, day granular) is older than
   `inactive_after_days` days -> the whole mailbox goes. No password file -> never inactive.
2. old mail: mtime older than `mails_after_days` days.
3. large seen mail: fetched (in a `cur/` directory, never `new/`: a file in `new/` has not
   been fetched, whatever flags its name carries), flag `S` set, size > `large_size`
   (200 KiB) and mtime older than `large_after_days` days. An unfetched message goes only
   by rule 2 or 4.
4. trimming: if the messages left exceed `trim_ratio` (70%) of the quota, delete oldest-first
   until they fit, but never a message from the last 24 hours (mtime >= now - 86400).
"""

from dataclasses import dataclass, field

DAY = 86400
LARGE_MESSAGE_SIZE = 200 * 1024
TRIM_RATIO = 0.7
TRIM_PROTECT_SECONDS = DAY


@dataclass(frozen=True, slots=True)
class ExpirePolicy:
    mails_after_days: int
    large_after_days: int
    inactive_after_days: int
    max_mailbox_size: int  # bytes
    large_size: int = LARGE_MESSAGE_SIZE
    trim_ratio: float = TRIM_RATIO
    trim_protect_seconds: int = TRIM_PROTECT_SECONDS

    @classmethod
    def from_config(cls, config):
        return cls(
            mails_after_days=config.delete_mails_after,
            large_after_days=config.delete_large_after,
            inactive_after_days=config.delete_inactive_users_after,
            max_mailbox_size=config.max_mailbox_size,
        )

    @property
    def trim_target(self):
        return int(self.max_mailbox_size * self.trim_ratio)


@dataclass(slots=True)
class ExpirePlan:
    remove_mailbox: bool = False
    old: list = field(default_factory=list)
    large: list = field(default_factory=list)
    trimmed: list = field(default_factory=list)

    @property
    def delete(self):
        return self.old + self.large + self.trimmed

    @property
    def changes_messages(self):
        return bool(self.old or self.large or self.trimmed)


def is_inactive(last_login, now, policy):
    if last_login is None:
        return False
    return last_login < now - policy.inactive_after_days * DAY


def is_large_seen(message, policy, large_cutoff):
    """Rule 3: a large message that was fetched and seen, older than `large_cutoff`."""
    return (
        message.seen
        and message.size > policy.large_size
        and message.mtime < large_cutoff
        and not message.unfetched
    )


def plan_trim(messages, target_bytes, protect_from=None):
    """Oldest-first list of messages to delete so the rest sum to <= target_bytes.

    Messages with mtime >= protect_from are never chosen; trimming stops at the first one
    (they are the newest), so the result may leave the mailbox above the target.
    """
    total = sum(m.size for m in messages)
    chosen = []
    if total <= target_bytes:
        return chosen
    for message in sorted(messages, key=lambda m: (m.mtime, m.folder, m.name)):
        if total <= target_bytes:
            break
        if protect_from is not None and message.mtime >= protect_from:
            break
        chosen.append(message)
        total -= message.size
    return chosen


def plan_mailbox(last_login, messages, policy, now):
    """Return the ExpirePlan for one mailbox's facts (`messages`: MessageFile list)."""
    plan = ExpirePlan()
    if is_inactive(last_login, now, policy):
        plan.remove_mailbox = True
        return plan
    mails_cutoff = now - policy.mails_after_days * DAY
    large_cutoff = now - policy.large_after_days * DAY
    kept = []
    for message in messages:
        if message.mtime < mails_cutoff:
            plan.old.append(message)
        elif is_large_seen(message, policy, large_cutoff):
            plan.large.append(message)
        else:
            kept.append(message)
    plan.trimmed = plan_trim(kept, policy.trim_target, now - policy.trim_protect_seconds)
    return plan
