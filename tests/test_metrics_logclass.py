"""The syslog framing parser and the line classifier, on recorded Postfix 3.7 / Dovecot 2.3 /
chatmaild log samples (tests/data/metrics/)."""

from pathlib import Path

import pytest

from chatmaild.metrics.logclass import classify
from chatmaild.metrics.logcounters import LogCounters
from chatmaild.metrics.syslog import LogRecord, parse_datagram, parse_line

DATA = Path(__file__).parent / "data" / "metrics"

# what the three sample files together must produce
EXPECTED = {
    "delivered_mail": 2,
    "quota_exceeded": 1,
    "dkim_signed": 1,
    "created_accounts": 2,
    "created_ci_accounts": 1,
    "created_nonci_accounts": 1,
    "rejected_registrations": 1,
    "postfix_timeouts": 1,
    "postfix_noqueue": 2,
    "warning_count": 2,  # postfix "warning:" and dovecot "quota-warning" (mtail semantics)
    "filtered_mail_count": 6,
    "encrypted_mail_count": 3,
    "unencrypted_mail_count": 3,
    "rejected_unencrypted_mail_count": 2,
    "outgoing_filtered_mail_count": 3,
    "outgoing_encrypted_mail_count": 2,
    "outgoing_unencrypted_mail_count": 1,
    "outgoing_rejected_unencrypted_mail_count": 1,
    "incoming_filtered_mail_count": 3,
    "incoming_encrypted_mail_count": 1,
    "incoming_unencrypted_mail_count": 2,
    "incoming_rejected_unencrypted_mail_count": 1,
    "mailer_daemon_mail_count": 1,
    "quota_expire_runs": 1,
    "quota_expire_removed_files": 12,
    "chatmail_deliveries_local": 1,
    "chatmail_deliveries_remote": 1,
    "chatmail_delivery_errors_deferred": 1,
    "chatmail_delivery_errors_bounced": 2,
    "chatmail_delivery_errors_expired": 0,
    "chatmail_dkim_signed": 1,
}


def count_files(*names):
    counters = LogCounters()
    for name in names:
        for line in (DATA / name).read_text().splitlines():
            record = parse_line(line)
            assert record is not None, line
            counters.counts["lines"] += 1
            counters.apply(classify(record))
    return counters


def test_sample_files_counts():
    counters = count_files("postfix.log", "dovecot.log", "chatmaild.log")
    got = {k: v for k, v in counters.counts.items() if k in EXPECTED}
    assert got == EXPECTED
    assert counters.counts["lines"] == 38
    assert counters.encrypted_ratio() == 0.5


@pytest.mark.parametrize(
    "line, record",
    [
        (
            "Nov 30 06:41:00 eijo postfix/smtp[20510]: 3F1A: status=sent",
            LogRecord("postfix/smtp", "20510", "3F1A: status=sent"),
        ),
        (  # journald ForwardToSyslog: no host
            "<22>Nov  3 06:41:00 postfix/smtpd[7]: NOQUEUE: reject",
            LogRecord("postfix/smtpd", "7", "NOQUEUE: reject"),
        ),
        (  # rsyslog traditional forward format
            "<30>Nov 30 06:41:00 eijo dovecot: imap-login: Login: user=<a@b>",
            LogRecord("dovecot", "", "imap-login: Login: user=<a@b>"),
        ),
        (  # RFC 5424 with BOM and structured data
            '<22>1 2026-11-30T06:41:00.123+00:00 eijo postfix/lmtp 20601 - [x@1 a="\\]"] '
            "\ufeff4B2C: status=sent",
            LogRecord("postfix/lmtp", "20601", "4B2C: status=sent"),
        ),
        (
            "<22>1 2026-11-30T06:41:00Z eijo doveauth - - - Created address: a@b",
            LogRecord("doveauth", "", "Created address: a@b"),
        ),
        (  # journalctl -o short-iso
            "2026-11-30T06:41:00+0000 eijo filtermail-incoming[902]: "
            "Incoming: Filtering encrypted mail.",
            LogRecord("filtermail-incoming", "902", "Incoming: Filtering encrypted mail."),
        ),
        ("just some bare words", LogRecord("", "", "just some bare words")),
        ("<13>bare with pri", LogRecord("", "", "bare with pri")),
    ],
)
def test_parse_line(line, record):
    assert parse_line(line) == record


@pytest.mark.parametrize(
    "data",
    [b"", b"\n", b"\xff\xfe garbage", b"ok\x00nul", b"<999>Nov 30 06:41:00 h t: m", b"<abc"],
)
def test_malformed_datagrams(data):
    assert parse_datagram(data) is None


def test_datagram_with_several_bare_lines():
    records = parse_datagram(b"line one\nline two\n\n")
    assert [r.msg for r in records] == ["line one", "line two"]


def test_syslog_datagram_keeps_multiline_message():
    records = parse_datagram(b"<22>Nov 30 06:41:00 h prog[1]: first\nsecond")
    assert records == [LogRecord("prog", "1", "first\nsecond")]


@pytest.mark.parametrize(
    "tag, msg, expected",
    [
        ("filtermail", "Rejected unencrypted mail.", {"outgoing_rejected_unencrypted_mail_count"}),
        (
            "filtermail-incoming",
            "Rejected unencrypted mail",
            {"incoming_rejected_unencrypted_mail_count"},
        ),
        (
            "python3",
            "Outgoing: Rejected unencrypted mail.",
            {"outgoing_rejected_unencrypted_mail_count"},
        ),
        ("python3", "Rejected unencrypted mail.", set()),  # direction unknown: total only
    ],
)
def test_rejection_direction(tag, msg, expected):
    keys = {k for k, _ in classify(LogRecord(tag, "1", msg))}
    assert "rejected_unencrypted_mail_count" in keys
    assert keys - {"rejected_unencrypted_mail_count"} == expected


@pytest.mark.parametrize(
    "record",
    [
        LogRecord("postfix/smtpd", "1", "connect from unknown[203.0.113.5]"),
        LogRecord("dovecot", "", "imap(a@b)<1><x>: Logged out in=1 out=2"),
        LogRecord("sshd", "5", "Accepted publickey for root"),
        LogRecord("", "", "NOQUEUE without a postfix tag"),
        LogRecord("doveauth", "1", "Created addresses are fine"),
    ],
)
def test_unrelated_lines_move_nothing(record):
    assert classify(record) == []


def test_lines_recorded_on_a_real_relay():
    """Postfix 3.7.11 maillog_file, Dovecot 2.3.19 log_path and our daemons' stderr, recorded
    from `python -m chatmaild.relay up` with two logins, three encrypted and one plain
    submission, one plain and one encrypted mail on port 25, and one deferred remote mail."""
    counters = count_files("relay-postfix.log", "relay-dovecot.log", "relay-daemons.log")
    c = counters.counts
    assert c["delivered_mail"] == 3
    assert (c["created_accounts"], c["created_nonci_accounts"]) == (2, 2)
    assert c["rejected_registrations"] == 0  # a short password is not a resource refusal
    assert c["postfix_noqueue"] == 6  # mtail semantics: proxy-filter NOQUEUE lines count too
    assert (c["outgoing_encrypted_mail_count"], c["outgoing_unencrypted_mail_count"]) == (3, 1)
    assert (c["incoming_encrypted_mail_count"], c["incoming_unencrypted_mail_count"]) == (1, 1)
    assert c["outgoing_rejected_unencrypted_mail_count"] == 1
    assert c["incoming_rejected_unencrypted_mail_count"] == 1
    assert c["chatmail_deliveries_local"] == 3
    assert c["chatmail_deliveries_remote"] == 0
    assert c["chatmail_delivery_errors_deferred"] == 1
    assert c["warning_count"] == 0
    assert counters.encrypted_ratio() == 4 / 6


def test_deliveries_through_the_transport_service_are_remote():
    """Postfix's default_transport is the lmtp client `lmtp-filtermail` (chatmaild.transport):
    its status=sent lines are remote deliveries, Dovecot's LMTP ones stay local."""
    remote = LogRecord(
        "postfix/lmtp-filtermail/lmtp",
        "7838",
        "3A340215275: to=<x@relay-b.test>, relay=127.0.0.1[127.0.0.1]:10083, delay=0.13,"
        " delays=0.02/0.01/0/0.1, dsn=2.0.0, status=sent (250 2.0.0 OK (HTTPS relay-b.test))",
    )
    local = LogRecord(
        "postfix/lmtp",
        "7839",
        "3B340215275: to=<y@relay-a.test>, relay=relay-a.test[private/dovecot-lmtp], delay=0.1,"
        " dsn=2.0.0, status=sent (250 2.0.0 <y@relay-a.test> Saved)",
    )
    assert classify(remote) == [("chatmail_deliveries_remote", 1)]
    assert classify(local) == [("chatmail_deliveries_local", 1)]
