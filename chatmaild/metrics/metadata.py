"""Metrics of chatmail-metadata: tokens, lookups by key, push notifications, queue depth."""

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import CounterMetricFamily

from .fast import Counter, Gauge

LOOKUP_KEYS = (
    "devicetoken",
    "irohrelay",
    "turn",
    "maxsmtprecipients",
    "appversions",
    "other",
)
NOTIFICATION_RESULTS = (
    "sent",  # 200 from the notification server
    "failed",  # an attempt failed (non-200, network error); a retry is scheduled
    "retried",  # an attempt that was a retry
    "gone",  # 410: the token was removed from the user
    "dropped",  # given up (retry window over, corrupt queue item)
)


class MetadataMetrics:
    """`m.tokens_stored.inc()`, `m.lookup_key("turn")`, `m.notification["sent"].inc()`,
    `m.queue_depth.set(n)` (or `.inc()`/`.dec()`)."""

    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry if registry is not None else CollectorRegistry()
        self.tokens_stored = Counter(
            "chatmail_metadata_tokens_stored",
            "Device tokens stored (set of priv/<guid>/devicetoken)",
            registry=self.registry,
        ).labels()
        lookups = Counter(
            "chatmail_metadata_lookups",
            "Dict lookups answered, by key",
            ["key"],
            registry=self.registry,
        )
        self.lookup = {key: lookups.labels(key) for key in LOOKUP_KEYS}
        notifications = Counter(
            "chatmail_metadata_notifications",
            "Push notification attempts and their fate, by result",
            ["result"],
            registry=self.registry,
        )
        self._notifications = notifications
        self.notification = {r: notifications.labels(r) for r in NOTIFICATION_RESULTS}
        self.queue_depth = Gauge(
            "chatmail_metadata_notification_queue_depth",
            "Push notifications waiting in the persistent queue",
            registry=self.registry,
        ).labels()

    def observe_notifier(self, notifier):
        """Report the notifier's own `stats` and `depth` at scrape time instead of the
        notification children: the sending path then carries no metric code at all."""
        self.registry.unregister(self._notifications)
        self.registry.register(NotifierStats(notifier))
        self.queue_depth.set_function(lambda: notifier.depth)

    def lookup_key(self, key: str):
        """Count one lookup; keys outside LOOKUP_KEYS count as `other`."""
        child = self.lookup.get(key)
        if child is None:
            child = self.lookup["other"]
        child.inc()


# result label -> key of `Notifier.stats`
NOTIFIER_STATS = {
    "sent": "delivered",
    "failed": "failed_attempts",
    "retried": "retried",
    "gone": "gone",
    "dropped": "dropped",
}


class NotifierStats:
    """Collector over `chatmaild.metadata.notifier.Notifier.stats` (a collections.Counter)."""

    def __init__(self, notifier):
        self.notifier = notifier

    def collect(self):
        stats = self.notifier.stats
        family = CounterMetricFamily(
            "chatmail_metadata_notifications",
            "Push notification attempts and their fate, by result",
            labels=["result"],
        )
        for result, key in NOTIFIER_STATS.items():
            family.add_metric([result], stats.get(key, 0))
        yield family
