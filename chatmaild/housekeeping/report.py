"""Storage and login-age statistics over mailbox scans, rendered for humans and for the
Prometheus node-exporter textfile collector (pure: no I/O, time passed in).
"""

from bisect import bisect_left
from dataclasses import dataclass, field

DAY = 86400
KIB = 1024
MIB = 1024 * KIB

# disjoint last-login age buckets: (label, max age in days); older -> "older", none -> "never"
LOGIN_BUCKETS = (("1d", 1), ("7d", 7), ("30d", 30), ("90d", 90))
MESSAGE_SIZE_BOUNDS = (16 * KIB, 160 * KIB, 200 * KIB, 500 * KIB, 2 * MIB, 10 * MIB)
MAILBOX_SIZE_BOUNDS = (1 * MIB, 10 * MIB, 100 * MIB)


def human_size(n):
    """1536 -> '1.5K', 1048576 -> '1M' (binary units)."""
    for unit, scale in (("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if n >= scale:
            text = f"{n / scale:.1f}"
            return (text[:-2] if text.endswith(".0") else text) + unit
    return f"{n}B"


@dataclass(slots=True)
class Histogram:
    bounds: tuple
    counts: list = field(default_factory=list)  # per bucket, last one is +Inf
    sums: list = field(default_factory=list)  # bytes per bucket

    def __post_init__(self):
        self.counts = [0] * (len(self.bounds) + 1)
        self.sums = [0] * (len(self.bounds) + 1)

    def add(self, value):
        i = bisect_left(self.bounds, value)  # first bucket whose bound >= value
        self.counts[i] += 1
        self.sums[i] += value

    def cumulative(self):
        total = 0
        for i, count in enumerate(self.counts):
            total += count
            le = self.bounds[i] if i < len(self.bounds) else "+Inf"
            yield le, total


class FsReport:
    """Accumulates per-mailbox facts; holds only counters, never the mailboxes."""

    def __init__(self, now, max_mailbox_size, mdir=None):
        self.now = now
        self.mdir = mdir
        self.max_mailbox_size = max_mailbox_size
        self.mailboxes = 0
        self.messages = 0
        self.message_bytes = 0
        self.extra_bytes = 0
        self.seen_messages = 0
        self.logins = {label: 0 for label, _ in LOGIN_BUCKETS}
        self.logins["older"] = 0
        self.logins["never"] = 0
        self.over_quota = 0
        bounds = sorted(set(MAILBOX_SIZE_BOUNDS + (max_mailbox_size,)))
        self.mailbox_sizes = Histogram(tuple(bounds))
        self.message_sizes = Histogram(MESSAGE_SIZE_BOUNDS)
        self.seconds = 0.0

    def login_bucket(self, last_login):
        if last_login is None:
            return "never"
        age = self.now - last_login
        for label, days in LOGIN_BUCKETS:
            if age <= days * DAY:
                return label
        return "older"

    def add(self, scan):
        self.mailboxes += 1
        self.logins[self.login_bucket(scan.last_login)] += 1
        self.extra_bytes += scan.extra_bytes
        mailbox_bytes = 0
        add_message = self.message_sizes.add
        for message in scan.messages:
            mailbox_bytes += message.size
            add_message(message.size)
            if message.seen:
                self.seen_messages += 1
        self.messages += len(scan.messages)
        self.message_bytes += mailbox_bytes
        self.mailbox_sizes.add(mailbox_bytes)
        if mailbox_bytes > self.max_mailbox_size:
            self.over_quota += 1

    def render_text(self, reference):
        where = f" (messages in {self.mdir}/ only)" if self.mdir else ""
        total = self.message_bytes + self.extra_bytes
        rows = [
            ("mailboxes", f"{self.mailboxes}"),
            ("messages", f"{self.messages} ({self.seen_messages} seen)"),
            ("message size", human_size(self.message_bytes)),
            (
                "other files",
                f"{human_size(self.extra_bytes)} ({pct_of(self.extra_bytes, total).strip()})",
            ),
            ("total size", human_size(total)),
        ]
        lines = [f"## Mailbox storage, reference time {reference}{where}"]
        lines += [f"{title:<14}: {value}" for title, value in rows]
        lines += ["", "## Last login"]
        for label, count in self.logins.items():
            title = f"within {label}" if label[0].isdigit() else label
            lines.append(f"{title:<14}: {count:9d} mailboxes {pct_of(count, self.mailboxes)}")
        lines += ["", "## Mailbox size (message bytes per mailbox)"]
        lines += self._histogram_lines(self.mailbox_sizes, self.mailboxes, "mailboxes")
        lines.append(f"{'over quota':<14}: {self.over_quota:9d} mailboxes")
        lines += ["", "## Message size"]
        lines += self._histogram_lines(self.message_sizes, self.messages, "messages ")
        lines += ["", f"scanned in {self.seconds:.2f}s"]
        return "\n".join(lines) + "\n"

    @staticmethod
    def _histogram_lines(hist, whole, what):
        lines = []
        low = 0
        for i, count in enumerate(hist.counts):
            high = human_size(hist.bounds[i]) if i < len(hist.bounds) else "inf"
            title = f"{human_size(low)}-{high}" if i else f"<= {high}"
            lines.append(
                f"{title:<14}: {count:9d} {what} {pct_of(count, whole)}"
                f" {human_size(hist.sums[i]):>7}"
            )
            if i < len(hist.bounds):
                low = hist.bounds[i]
        return lines

    def render_prom(self, timestamp):
        out = []

        def metric(name, kind, help_text, samples):
            out.append(f"# HELP {name} {help_text}")
            out.append(f"# TYPE {name} {kind}")
            for labels, value in samples:
                out.append(f"{name}{labels} {value}")

        metric(
            "chatmail_fsreport_mailboxes",
            "gauge",
            "Mailbox directories scanned.",
            [("", self.mailboxes)],
        )
        metric(
            "chatmail_fsreport_mailboxes_by_last_login",
            "gauge",
            "Mailboxes by age of the last login (disjoint buckets; never = no password file).",
            [(f'{{last_login="{k}"}}', v) for k, v in self.logins.items()],
        )
        metric(
            "chatmail_fsreport_mailboxes_over_quota",
            "gauge",
            "Mailboxes whose messages exceed max_mailbox_size.",
            [("", self.over_quota)],
        )
        metric(
            "chatmail_fsreport_messages",
            "gauge",
            "Message files in cur/ and new/.",
            [("", self.messages)],
        )
        metric(
            "chatmail_fsreport_seen_messages",
            "gauge",
            "Message files flagged seen.",
            [("", self.seen_messages)],
        )
        metric(
            "chatmail_fsreport_message_bytes",
            "gauge",
            "Bytes in message files (S= sizes).",
            [("", self.message_bytes)],
        )
        metric(
            "chatmail_fsreport_extra_bytes",
            "gauge",
            "Bytes in other files at the mailbox top level (password, indexes).",
            [("", self.extra_bytes)],
        )
        self._prom_histogram(
            metric,
            "chatmail_fsreport_mailbox_size_bytes",
            "Message bytes per mailbox.",
            self.mailbox_sizes,
        )
        self._prom_histogram(
            metric,
            "chatmail_fsreport_message_size_bytes",
            "Size of message files.",
            self.message_sizes,
        )
        metric(
            "chatmail_fsreport_scan_seconds",
            "gauge",
            "Duration of the last scan.",
            [("", f"{self.seconds:.3f}")],
        )
        metric(
            "chatmail_fsreport_last_run_timestamp_seconds",
            "gauge",
            "Unix time the last report was written.",
            [("", int(timestamp))],
        )
        return "\n".join(out) + "\n"

    @staticmethod
    def _prom_histogram(metric, name, help_text, hist):
        samples = [(f'_bucket{{le="{le}"}}', total) for le, total in hist.cumulative()]
        samples.append(("_sum", sum(hist.sums)))
        samples.append(("_count", sum(hist.counts)))
        metric(name, "histogram", help_text, samples)


def pct_of(part, whole):
    return f"{part / whole * 100:5.1f}%" if whole else "  0.0%"
