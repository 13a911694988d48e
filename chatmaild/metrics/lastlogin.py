"""Metrics of lastlogin: last-login sets and whether they touched the password file."""

from prometheus_client import CollectorRegistry

from .fast import Counter

SET_RESULTS = ("updated", "unchanged", "failed")


class LastloginMetrics:
    """`m.set_result["updated"].inc()`."""

    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry if registry is not None else CollectorRegistry()
        sets = Counter(
            "chatmail_lastlogin_sets",
            "Last-login sets, by result (updated: the day changed and the mtime was set)",
            ["result"],
            registry=self.registry,
        )
        self.set_result = {r: sets.labels(r) for r in SET_RESULTS}
