"""Metrics of the transport service (`filtermail CONFIG transport`), per recipient.

`delivered{via="https"|"smtp"}`, `deferred` (4xx to Postfix, retried later), `bounced` (5xx,
Postfix bounces to the sender), `fallbacks` (an HTTPS attempt that did not deliver, followed
by SMTP), `busy` (421 Transport busy), plus the HTTPS connections opened (a pooled session
opens few: the benchmark compares them with the messages sent).
"""

from prometheus_client import CollectorRegistry

from .fast import Counter, Gauge, Histogram

DELIVERY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class TransportMetrics:
    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry if registry is not None else CollectorRegistry()
        delivered = Counter(
            "chatmail_transport_delivered",
            "Recipients delivered to another relay, by protocol",
            ["via"],
            registry=self.registry,
        )
        self.delivered_https = delivered.labels("https")
        self.delivered_smtp = delivered.labels("smtp")
        self.deferred = Counter(
            "chatmail_transport_deferred",
            "Recipients answered 4xx (Postfix retries them)",
            registry=self.registry,
        ).labels()
        self.bounced = Counter(
            "chatmail_transport_bounced",
            "Recipients answered 5xx (Postfix bounces them to the sender)",
            registry=self.registry,
        ).labels()
        self.fallbacks = Counter(
            "chatmail_transport_fallbacks",
            "HTTPS attempts that did not deliver and were followed by SMTP",
            registry=self.registry,
        ).labels()
        self.busy = Counter(
            "chatmail_transport_busy",
            "Recipients answered 421 Transport busy (over the worker or destination cap)",
            registry=self.registry,
        ).labels()
        self.https_connections = Gauge(
            "chatmail_transport_https_connections_opened",
            "HTTPS connections opened since start (each one a TLS handshake)",
            registry=self.registry,
        ).labels()
        self.in_flight = Gauge(
            "chatmail_transport_in_flight",
            "Deliveries (message and destination domain) under way",
            registry=self.registry,
        ).labels()
        self.delivery_seconds = Histogram(
            "chatmail_transport_delivery_seconds",
            "Time to deliver one message to one destination domain",
            buckets=DELIVERY_BUCKETS,
            registry=self.registry,
        ).labels()

    def count_replies(self, replies, via: str | None) -> None:
        """Count one delivery's per-recipient replies; `via` names the protocol of 2xx."""
        for reply in replies:
            if 200 <= reply.code < 300:
                (self.delivered_https if via == "https" else self.delivered_smtp).inc()
            elif reply.code >= 500:
                self.bounced.inc()
            else:
                self.deferred.inc()
