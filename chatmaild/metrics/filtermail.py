"""Metrics of one filtermail process (`filtermail CONFIG outgoing|incoming`).

Every labelled child is bound once here, so the per-message cost is an attribute lookup and a
locked add: no label strings are built or hashed on the hot path.
"""

from prometheus_client import CollectorRegistry

from .fast import Counter, Gauge, Histogram

OUTCOMES = (
    "encrypted",  # passed as OpenPGP-encrypted
    "securejoin",  # passed as a secure-join request
    "exception",  # cleartext passed by an exception (passthrough, setup message, mailer-daemon)
    "cleartext",  # incoming cleartext to a recipient who opted out of enforcement
    "rejected",  # 523 Encryption Needed
    "invalid",  # 500 invalid MAIL FROM / From header mismatch
    "ratelimited",  # 450 at MAIL, sender over its rate
    "reinject_failed",  # reinjection refused or unreachable (4xx/5xx to the client)
    "dkim_failed",  # incoming, 550 5.7.1 No valid DKIM signature found
    "dkim_temporary",  # incoming, 451: a DKIM key could not be fetched (DNS)
)

# answers of the /mxdeliv listener: accepted, refused (SMTP reply in the body), not POST,
# too large, busy (concurrency limit), client too slow (read timeout)
HTTP_STATUSES = (200, 400, 405, 408, 413, 503)

DECISION_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5)
REINJECT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class FiltermailMetrics:
    """`m.outcome["encrypted"].inc()`, `m.received_bytes.inc(n)`, `m.decision_seconds.observe(t)`,
    `m.reinject_seconds.observe(t)`, `m.open_sessions.inc()/.dec()`."""

    def __init__(self, mode: str, registry: CollectorRegistry | None = None):
        self.registry = registry if registry is not None else CollectorRegistry()
        messages = Counter(
            "chatmail_filtermail_messages",
            "Messages decided by the filter, by mode and outcome",
            ["mode", "outcome"],
            registry=self.registry,
        )
        self.outcome = {name: messages.labels(mode, name) for name in OUTCOMES}
        for name, child in self.outcome.items():
            setattr(self, name, child)
        self.received_bytes = Counter(
            "chatmail_filtermail_received_bytes",
            "Bytes of message data received (after dot-unstuffing)",
            ["mode"],
            registry=self.registry,
        ).labels(mode)
        self.decision_seconds = Histogram(
            "chatmail_filtermail_decision_seconds",
            "Time to decide on one message (policy checks)",
            ["mode"],
            buckets=DECISION_BUCKETS,
            registry=self.registry,
        ).labels(mode)
        self.reinject_seconds = Histogram(
            "chatmail_filtermail_reinject_seconds",
            "Time to reinject one accepted message into Postfix",
            ["mode"],
            buckets=REINJECT_BUCKETS,
            registry=self.registry,
        ).labels(mode)
        self.open_sessions = Gauge(
            "chatmail_filtermail_open_sessions",
            "SMTP sessions currently open",
            ["mode"],
            registry=self.registry,
        ).labels(mode)
        self._incoming = mode == "incoming"
        if self._incoming:
            self._add_http_metrics(mode)

    def _add_http_metrics(self, mode: str) -> None:
        """/mxdeliv (filtermail incoming's HTTP listener); its decisions count in `outcome`."""
        http_requests = Counter(
            "chatmail_filtermail_http_requests",
            "Requests to the /mxdeliv HTTP listener, by mode and answer status",
            ["mode", "status"],
            registry=self.registry,
        )
        self.http_status = {code: http_requests.labels(mode, str(code)) for code in HTTP_STATUSES}
        self.http_open_requests = Gauge(
            "chatmail_filtermail_http_open_requests",
            "Requests the /mxdeliv HTTP listener is working on",
            ["mode"],
            registry=self.registry,
        ).labels(mode)

    def track_sessions(self, sessions):
        """Report `len(sessions)` (the server's live session set) at scrape time: no
        per-connection cost at all."""
        self.open_sessions.set_function(lambda: len(sessions))

    def count_decision(self, verdict_code: int | None, line: str) -> None:
        """Count one end-of-DATA decision from the policy's (verdict, log line) result.

        The log lines are the fixed ones of SPEC 4.6, so a few substring tests suffice.
        """
        self.outcome[self.decision_outcome(verdict_code, line)].inc()

    def decision_outcome(self, verdict_code: int | None, line: str) -> str:
        if verdict_code is not None:
            if verdict_code == 523:
                return "rejected"
            if self._incoming and verdict_code in (550, 451):
                return "dkim_failed" if verdict_code == 550 else "dkim_temporary"
            return "invalid"
        if "Filtering encrypted mail." in line:
            return "securejoin" if "secure-join" in line else "encrypted"
        if self._incoming and "no recipient enforces" in line:
            return "cleartext"
        return "exception"
