"""Metrics of doveauth: lookups, account creation, refused registrations, hashing time."""

from prometheus_client import CollectorRegistry, Counter, Histogram

from . import fast

LOOKUP_KINDS = ("passdb", "userdb", "iterate")
LOOKUP_RESULTS = ("found", "created", "notfound", "failed")
REJECT_REASONS = (
    "nocreate",  # the nocreate marker file exists
    "password",  # password shorter than password_min_length
    "username",  # local part length or characters out of bounds
    "domain",  # not our mail domain
    "load",  # max_load_1m exceeded
    "memory",  # below min_available_memory
    "disk",  # below min_free_disk_space
    "other",
)
HASH_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)


class DoveauthMetrics:
    """`m.lookup[("passdb", "found")].inc()`, `m.accounts_created.inc()`,
    `m.rejected("load")`, `m.hash_seconds.observe(t)`."""

    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry if registry is not None else CollectorRegistry()
        # lookups are counted on the event loop thread: lock-free; the rest is updated from
        # the hashing worker threads: prometheus_client's locked metrics
        lookups = fast.Counter(
            "chatmail_doveauth_lookups",
            "Dict lookups answered, by kind and result",
            ["kind", "result"],
            registry=self.registry,
        )
        self.lookup = {
            (kind, result): lookups.labels(kind, result)
            for kind in LOOKUP_KINDS
            for result in LOOKUP_RESULTS
        }
        self.accounts_created = Counter(
            "chatmail_doveauth_accounts_created",
            "Accounts created on first login",
            registry=self.registry,
        )
        rejected = Counter(
            "chatmail_doveauth_registrations_rejected",
            "First logins that did not create an account, by reason",
            ["reason"],
            registry=self.registry,
        )
        self._rejected = {reason: rejected.labels(reason) for reason in REJECT_REASONS}
        self.hash_seconds = Histogram(
            "chatmail_doveauth_hash_seconds",
            "Time to compute one SHA512-CRYPT password hash",
            buckets=HASH_BUCKETS,
            registry=self.registry,
        )

    def rejected_for(self, problem: str):
        """Count a refusal given the service's one-line problem text (rare path)."""
        self.rejected(reject_reason(problem))

    def rejected(self, reason: str):
        """Count one refused registration; unknown reasons count as `other`."""
        child = self._rejected.get(reason)
        if child is None:
            child = self._rejected["other"]
        child.inc()


def reject_reason(problem: str) -> str:
    """The reason label for a doveauth refusal text (`rules.creation_problem`,
    `rules.resource_problem`, the nocreate file)."""
    text = problem.lower()
    for needle, reason in (
        ("nocreate", "nocreate"),
        ("password", "password"),
        ("load", "load"),
        ("memory", "memory"),
        ("disk", "disk"),
        ("domain", "domain"),
        ("local part", "username"),
        ("not an address", "username"),
    ):
        if needle in text:
            return reason
    return "other"
