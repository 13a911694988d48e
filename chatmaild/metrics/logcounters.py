"""The state of chatmail-logmetrics: counts per key, exposed as a prometheus Collector.

Counters that replace the relay's mtail program keep mtail's exposition: the plain name without
`_total` (so existing queries and dashboards keep working) and a `prog` label; they are typed
`unknown` so that both OpenMetrics and text 0.0.4 renderings stay valid. The newer dashboard
names are proper counters and a gauge.
"""

import math

from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric

MTAIL_PROG = "delivered_mail.mtail"

# key -> help text; the key is also the exposed name
MTAIL_COUNTERS = {
    "delivered_mail": "Mails saved to INBOX by Dovecot LMTP",
    "quota_exceeded": "Deliveries refused because the mailbox is full",
    "dkim_signed": "Mails given a DKIM-Signature (about the number of outgoing mails)",
    "created_accounts": "Accounts created on first login",
    "created_ci_accounts": "Accounts created whose address contains 'ci-'",
    "created_nonci_accounts": "Accounts created whose address does not contain 'ci-'",
    "rejected_registrations": "First logins refused by doveauth ('registration rejected')",
    "postfix_timeouts": "Postfix 'timeout after DATA'",
    "postfix_noqueue": "Postfix NOQUEUE rejections",
    "warning_count": "Log lines containing 'warning'",
    "filtered_mail_count": "Mails checked by filtermail (both directions)",
    "encrypted_mail_count": "Mails filtermail found encrypted (both directions)",
    "unencrypted_mail_count": "Mails filtermail found unencrypted (both directions)",
    "rejected_unencrypted_mail_count": "Unencrypted mails refused by filtermail",
    "outgoing_filtered_mail_count": "Outgoing mails checked by filtermail",
    "outgoing_encrypted_mail_count": "Outgoing mails found encrypted",
    "outgoing_unencrypted_mail_count": "Outgoing mails found unencrypted",
    "outgoing_rejected_unencrypted_mail_count": "Outgoing unencrypted mails refused",
    "incoming_filtered_mail_count": "Incoming mails checked by filtermail",
    "incoming_encrypted_mail_count": "Incoming mails found encrypted",
    "incoming_unencrypted_mail_count": "Incoming mails found unencrypted",
    "incoming_rejected_unencrypted_mail_count": "Incoming unencrypted mails refused",
    "mailer_daemon_mail_count": "Incoming cleartext delivery reports passed from mailer-daemon",
    "quota_expire_runs": "chatmail-quota-expire runs that removed messages",
    "quota_expire_removed_files": "Messages removed by chatmail-quota-expire",
}

# keys of the labelled / newer families
OTHER_KEYS = (
    "chatmail_deliveries_local",
    "chatmail_deliveries_remote",
    "chatmail_delivery_errors_deferred",
    "chatmail_delivery_errors_bounced",
    "chatmail_delivery_errors_expired",
    "chatmail_dkim_signed",
    "lines",
    "malformed",
)

COUNTERS = tuple(MTAIL_COUNTERS) + OTHER_KEYS

# every family name this collector exposes (sample names without suffixes); the dashboard
# consistency test compares against this
FAMILY_NAMES = tuple(MTAIL_COUNTERS) + (
    "chatmail_deliveries_total",
    "chatmail_delivery_errors_total",
    "chatmail_dkim_signed_total",
    "chatmail_encrypted_ratio",
    "chatmail_logmetrics_lines_total",
    "chatmail_logmetrics_malformed_total",
)


class LogCounters:
    """Counts per key; `apply(events)` from the classifier, `collect()` for a registry."""

    def __init__(self):
        self.counts = dict.fromkeys(COUNTERS, 0)

    def apply(self, events):
        counts = self.counts
        for key, amount in events:
            counts[key] += amount

    def encrypted_ratio(self) -> float:
        filtered = self.counts["filtered_mail_count"]
        if not filtered:
            return math.nan
        return self.counts["encrypted_mail_count"] / filtered

    def collect(self):
        c = self.counts
        for name, doc in MTAIL_COUNTERS.items():
            family = Metric(name, doc, "unknown")
            family.add_sample(name, {"prog": MTAIL_PROG}, c[name])
            yield family
        deliveries = CounterMetricFamily(
            "chatmail_deliveries", "Postfix deliveries with status=sent", labels=["kind"]
        )
        deliveries.add_metric(["local"], c["chatmail_deliveries_local"])
        deliveries.add_metric(["remote"], c["chatmail_deliveries_remote"])
        yield deliveries
        errors = CounterMetricFamily(
            "chatmail_delivery_errors",
            "Postfix deliveries deferred, bounced or expired",
            labels=["status"],
        )
        for status in ("deferred", "bounced", "expired"):
            errors.add_metric([status], c["chatmail_delivery_errors_" + status])
        yield errors
        yield CounterMetricFamily(
            "chatmail_dkim_signed", "Mails given a DKIM-Signature", value=c["chatmail_dkim_signed"]
        )
        yield GaugeMetricFamily(
            "chatmail_encrypted_ratio",
            "encrypted_mail_count / filtered_mail_count since start (NaN before any mail)",
            value=self.encrypted_ratio(),
        )
        yield CounterMetricFamily(
            "chatmail_logmetrics_lines", "Log records received and classified", value=c["lines"]
        )
        yield CounterMetricFamily(
            "chatmail_logmetrics_malformed",
            "Datagrams or lines dropped as malformed (not UTF-8, NUL, bad syslog PRI)",
            value=c["malformed"],
        )
