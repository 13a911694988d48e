"""The log line classifier of chatmail-logmetrics: a `LogRecord` to the counters it moves.

Pure: no I/O, no state. Every rule is one named function returning `(key, amount)` pairs; the
keys are the counter names of `logcounters.COUNTERS`. The patterns keep the meaning of the
relay's mtail program (`delivered_mail.mtail`) so the existing series keep their values.
"""

import re

from .syslog import LogRecord

_CREATED = re.compile(r"Created address: (\S*)")
_QUOTA_EXPIRE = re.compile(r"quota-expire: removed (\d+) message")
_STATUS = re.compile(r" status=(sent|deferred|bounced|expired)\b")
_FILTERING = re.compile(r"\b(Outgoing|Incoming): Filtering (encrypted|unencrypted) mail\.")
_DIRECTION_PREFIX = re.compile(r"\b(Outgoing|Incoming): ")

LOCAL_TRANSPORTS = ("lmtp", "local", "virtual")
# The lmtp client that hands mail to the transport service (Postfix's default_transport,
# chatmaild.transport) logs as postfix/lmtp-filtermail/lmtp: those deliveries are remote.
REMOTE_LMTP_TAG = "postfix/lmtp-filtermail/"


def rule_dovecot(text: str):
    if text.endswith("saved mail to INBOX"):
        yield ("delivered_mail", 1)
    if text.endswith("Quota exceeded (mailbox for user is full)"):
        yield ("quota_exceeded", 1)


def rule_dkim(text: str):
    if "DKIM-Signature field added" in text:
        yield ("dkim_signed", 1)
        yield ("chatmail_dkim_signed", 1)


def rule_accounts(text: str):
    if "Created address: " in text:
        m = _CREATED.search(text)
        yield ("created_accounts", 1)
        if m is not None and "ci-" in m.group(1):
            yield ("created_ci_accounts", 1)
        else:
            yield ("created_nonci_accounts", 1)
    if "registration rejected" in text.lower():
        yield ("rejected_registrations", 1)


def rule_postfix(record: LogRecord, text: str):
    if "timeout after DATA" in text:
        yield ("postfix_timeouts", 1)
    if "NOQUEUE" in text and "postfix" in text and re.search(r"postfix[^/\s]*/.*NOQUEUE", text):
        yield ("postfix_noqueue", 1)
    if " status=" in text:
        m = _STATUS.search(text)
        if m is not None:
            status = m.group(1)
            if status == "sent":
                transport = record.tag.rpartition("/")[2]
                local = transport in LOCAL_TRANSPORTS and not record.tag.startswith(REMOTE_LMTP_TAG)
                yield ("chatmail_deliveries_local" if local else "chatmail_deliveries_remote", 1)
            else:
                yield ("chatmail_delivery_errors_" + status, 1)


def rule_warning(text: str):
    if "warning" in text:
        yield ("warning_count", 1)


def _direction(record: LogRecord, msg: str) -> str | None:
    m = _DIRECTION_PREFIX.search(msg)
    if m is not None:
        return m.group(1).lower()
    tag = record.tag
    if tag.startswith("filtermail"):
        return "incoming" if "incoming" in tag else "outgoing"
    return None


def rule_filtermail(record: LogRecord, msg: str):
    if "Filtering " in msg:
        m = _FILTERING.search(msg)
        if m is not None:
            direction = m.group(1).lower()
            kind = m.group(2)
            yield ("filtered_mail_count", 1)
            yield (f"{kind}_mail_count", 1)
            yield (f"{direction}_filtered_mail_count", 1)
            yield (f"{direction}_{kind}_mail_count", 1)
    if "Rejected unencrypted mail" in msg:
        yield ("rejected_unencrypted_mail_count", 1)
        direction = _direction(record, msg)
        if direction is not None:
            yield (f"{direction}_rejected_unencrypted_mail_count", 1)
    if "mailer-daemon" in msg.lower() and _direction(record, msg) == "incoming":
        yield ("mailer_daemon_mail_count", 1)


def rule_quota_expire(msg: str):
    if "quota-expire: removed " in msg:
        m = _QUOTA_EXPIRE.search(msg)
        if m is not None:
            yield ("quota_expire_runs", 1)
            yield ("quota_expire_removed_files", int(m.group(1)))


def classify(record: LogRecord) -> list[tuple[str, int]]:
    """All counter moves caused by one log record."""
    text = record.text
    msg = record.msg
    events = []
    events.extend(rule_dovecot(text))
    events.extend(rule_dkim(text))
    events.extend(rule_accounts(text))
    events.extend(rule_postfix(record, text))
    events.extend(rule_warning(text))
    events.extend(rule_filtermail(record, msg))
    events.extend(rule_quota_expire(msg))
    return events
