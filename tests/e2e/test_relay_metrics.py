"""The whole relay's metrics (issue 8): real traffic, then every endpoint's counters moved.

The session relay is shared, so every check compares a scrape taken before this test's
traffic with one taken after it. Before the first scrape the relay is let settle (Postfix's
active queue empty, logmetrics caught up with the log files), so earlier tests' mail does not
land in the deltas.
"""

import math
import secrets
import smtplib
import time

import pytest

from chatmaild.metrics.follow import POLL_INTERVAL

from .helpers import (
    Endpoints,
    cleartext_message,
    encrypted_message,
    random_local_part,
    value,
    wait_until,
)

DAEMONS = ["logmetrics", "doveauth", "lastlogin", "metadata"]
DAEMONS += ["filtermail-outgoing", "filtermail-incoming", "filtermail-transport", "iroh-relay"]
MTAIL = (("prog", "delivered_mail.mtail"),)


def mtail(scraped, name):
    return scraped.get((name, MTAIL), 0.0)


def postfix_busy(relay):
    """Whether Postfix still has mail on its way (deferred mail is not on its way)."""
    queue = relay.relay.layout.postfix_queue_dir
    return any(
        f.is_file() for sub in ("maildrop", "incoming", "active") for f in (queue / sub).rglob("*")
    )


def settle(relay, endpoints):
    """Wait until earlier traffic is fully counted: queue idle, log lines all read."""
    wait_until(lambda: not postfix_busy(relay), "Postfix's queue to drain")

    def lines():
        return value(endpoints.scrape("logmetrics"), "chatmail_logmetrics_lines_total")

    def same_twice():
        # logmetrics polls its files every 0.25 s: the same line count twice, polls apart
        first = lines()
        time.sleep(3 * POLL_INTERVAL)
        return first == lines()

    wait_until(same_twice, "logmetrics to catch up with the logs", interval=0)


def _flatten(data):
    return b" ".join(b" ".join(x) if isinstance(x, tuple) else x for x in data if x is not None)


class Deltas:
    def __init__(self, before, after):
        self.before, self.after = before, after

    def __call__(self, endpoint, name, **labels):
        return value(self.after[endpoint], name, **labels) - value(
            self.before[endpoint], name, **labels
        )

    def mtail(self, name):
        return mtail(self.after["logmetrics"], name) - mtail(self.before["logmetrics"], name)


@pytest.fixture
def endpoints(relay):
    relay.require_daemons(*DAEMONS)
    eps = Endpoints(relay)
    assert set(eps.specs) == set(DAEMONS), "the relay's embedded config turns on every endpoint"
    return eps


def test_real_traffic_moves_every_endpoint(relay, endpoints):
    settle(relay, endpoints)
    before = endpoints.all()
    logins = 0

    def imap(addr, password):
        nonlocal logins
        logins += 1
        return relay.imap(addr, password)

    # Two accounts, created by their first IMAP login.
    accounts = []
    for _ in range(2):
        addr = f"{random_local_part()}@{relay.domain}"
        password = secrets.token_hex(10)
        imap(addr, password).logout()
        accounts.append((addr, password))
    (a, pa), (b, pb) = accounts

    # b sets a device token.
    token = "metrics-token-" + secrets.token_hex(8)
    client = imap(b, pb)
    try:
        client.select("INBOX")
        typ, data = client._simple_command(
            "SETMETADATA", "INBOX", f'(/private/devicetoken "{token}")'
        )
        assert typ == "OK", data
        typ, data = client._simple_command("GETMETADATA", "INBOX", "(/private/devicetoken)")
        typ, data = client._untagged_response(typ, data, "METADATA")
        assert typ == "OK" and token.encode() in _flatten(data), data
        typ, data = client._simple_command(
            "GETMETADATA", '""', "(/shared/vendor/deltachat/irohrelay)"
        )
        typ, data = client._untagged_response(typ, data, "METADATA")
        # advertised only while an iroh relay answers (docs/turn.md); counted either way
        advertised = "iroh-relay" in relay.relay.pids
        assert typ == "OK" and (relay.domain.encode() in _flatten(data)) == advertised, data
    finally:
        client.logout()

    # a -> b encrypted on 465 (delivered, one push), a -> b cleartext on 465 (523).
    marker_out, encrypted = encrypted_message(a, [b])
    assert relay.submit(465, a, pa, a, [b], encrypted) == {}
    marker_clear, cleartext = cleartext_message(a, [b])
    with pytest.raises(smtplib.SMTPDataError) as e:
        relay.submit(465, a, pa, a, [b], cleartext)
    assert e.value.smtp_code == 523
    smtp_logins = 2

    # other.example -> a, encrypted on port 25 (delivered).
    marker_in, incoming = encrypted_message("someone@other.example", [a])
    client = relay.smtp(25)
    try:
        assert client.sendmail("someone@other.example", [a], incoming) == {}
    finally:
        client.close()

    # Both deliveries, seen in the Dovecot log by logmetrics; the push reached the endpoint.
    def delivered():
        got = endpoints.scrape("logmetrics")
        return mtail(got, "delivered_mail") - mtail(before["logmetrics"], "delivered_mail") >= 2

    wait_until(delivered, "two deliveries counted by logmetrics")
    wait_until(lambda: relay.notifications.posts_with(token), "the push notification")

    def notified():
        got = endpoints.scrape("metadata")
        sent = ("chatmail_metadata_notifications_total", {"result": "sent"})
        return value(got, sent[0], **sent[1]) > value(before["metadata"], sent[0], **sent[1])

    wait_until(notified, "the notifier to count the answered push")
    for addr, password, marker in ((b, pb, marker_out), (a, pa, marker_in)):
        client = imap(addr, password)
        try:
            client.select("INBOX", readonly=True)
            typ, data = client.search(None, "HEADER", "X-Test-Marker", marker)
            assert typ == "OK" and data[0].split(), f"{marker} not in {addr}"
        finally:
            client.logout()

    def lastlogin_sets():
        got = endpoints.scrape("lastlogin")
        return sum(
            value(got, "chatmail_lastlogin_sets_total", result=r)
            - value(before["lastlogin"], "chatmail_lastlogin_sets_total", result=r)
            for r in ("updated", "unchanged", "failed")
        )

    wait_until(lambda: lastlogin_sets() >= logins, f"{logins} last-login sets")
    settle(relay, endpoints)
    after = endpoints.all()
    d = Deltas(before, after)

    # filtermail, outgoing: one encrypted (reinjected), one rejected; incoming: one encrypted.
    msgs = "chatmail_filtermail_messages_total"
    assert d("filtermail-outgoing", msgs, mode="outgoing", outcome="encrypted") == 1
    assert d("filtermail-outgoing", msgs, mode="outgoing", outcome="rejected") == 1
    for outcome in ("securejoin", "exception", "invalid", "ratelimited", "reinject_failed"):
        assert d("filtermail-outgoing", msgs, mode="outgoing", outcome=outcome) == 0, outcome
    decisions = "chatmail_filtermail_decision_seconds_count"
    assert d("filtermail-outgoing", decisions, mode="outgoing") == 2
    assert d("filtermail-incoming", decisions, mode="incoming") == 1
    out_bytes = d(
        "filtermail-outgoing", "chatmail_filtermail_received_bytes_total", mode="outgoing"
    )
    assert out_bytes >= len(encrypted) + len(cleartext)  # Postfix adds its Received header
    assert out_bytes < len(encrypted) + len(cleartext) + 4096
    assert d("filtermail-incoming", msgs, mode="incoming", outcome="encrypted") == 1
    for outcome in ("cleartext", "rejected", "exception", "reinject_failed"):
        assert d("filtermail-incoming", msgs, mode="incoming", outcome=outcome) == 0, outcome
    assert (
        d("filtermail-outgoing", "chatmail_filtermail_reinject_seconds_count", mode="outgoing") == 1
    )
    assert (
        d("filtermail-incoming", "chatmail_filtermail_reinject_seconds_count", mode="incoming") == 1
    )

    # the transport service: local mail never passes it (virtual_transport is Dovecot's LMTP)
    for via in ("https", "smtp"):
        assert d("filtermail-transport", "chatmail_transport_delivered_total", via=via) == 0
    assert d("filtermail-transport", "chatmail_transport_deferred_total") == 0

    # doveauth: two accounts created; every later IMAP login and each SMTP AUTH found them.
    assert d("doveauth", "chatmail_doveauth_accounts_created_total") == 2
    assert d("doveauth", "chatmail_doveauth_lookups_total", kind="passdb", result="created") == 2
    assert (
        d("doveauth", "chatmail_doveauth_lookups_total", kind="passdb", result="found")
        == logins - 2 + smtp_logins
    )
    # a first login is looked up by user first (not found), then created by checkpassword
    assert d("doveauth", "chatmail_doveauth_lookups_total", kind="passdb", result="notfound") == 2
    assert d("doveauth", "chatmail_doveauth_lookups_total", kind="passdb", result="failed") == 0
    # userdb: one lookup per IMAP login and one per LMTP recipient (two deliveries)
    userdb_found = d("doveauth", "chatmail_doveauth_lookups_total", kind="userdb", result="found")
    assert userdb_found == logins + 2
    assert d("doveauth", "chatmail_doveauth_hash_seconds_count") == 2
    for reason in ("nocreate", "password", "username", "domain", "load", "memory", "disk"):
        assert d("doveauth", "chatmail_doveauth_registrations_rejected_total", reason=reason) == 0

    # metadata: one token stored, one notification sent for the delivery to b.
    assert d("metadata", "chatmail_metadata_tokens_stored_total") == 1
    assert d("metadata", "chatmail_metadata_notifications_total", result="sent") == 1
    for result in ("failed", "retried", "gone", "dropped"):
        assert d("metadata", "chatmail_metadata_notifications_total", result=result) == 0, result
    lookups = {
        k[1][0][1]: d("metadata", "chatmail_metadata_lookups_total", **dict(k[1]))
        for k in after["metadata"]
        if k[0] == "chatmail_metadata_lookups_total"
    }
    assert lookups["devicetoken"] == 1 and lookups["irohrelay"] == 1, lookups
    assert value(after["metadata"], "chatmail_metadata_notification_queue_depth") == 0

    # lastlogin: one set per IMAP login, none failed.
    assert d("lastlogin", "chatmail_lastlogin_sets_total", result="failed") == 0
    assert lastlogin_sets() == logins

    # logmetrics, from the Postfix, Dovecot and daemon log files.
    assert d.mtail("created_accounts") == 2
    assert d.mtail("created_nonci_accounts") == 2
    assert d.mtail("created_ci_accounts") == 0
    assert d.mtail("rejected_registrations") == 0
    assert d.mtail("delivered_mail") == 2
    assert d.mtail("filtered_mail_count") == 3
    assert d.mtail("encrypted_mail_count") == 2
    assert d.mtail("unencrypted_mail_count") == 1
    assert d.mtail("rejected_unencrypted_mail_count") == 1
    assert d.mtail("outgoing_filtered_mail_count") == 2
    assert d.mtail("outgoing_encrypted_mail_count") == 1
    assert d.mtail("outgoing_unencrypted_mail_count") == 1
    assert d.mtail("outgoing_rejected_unencrypted_mail_count") == 1
    assert d.mtail("incoming_filtered_mail_count") == 1
    assert d.mtail("incoming_encrypted_mail_count") == 1
    assert d.mtail("incoming_rejected_unencrypted_mail_count") == 0
    assert d.mtail("postfix_noqueue") == 3  # one `NOQUEUE: client=` per proxy-filtered mail
    assert d.mtail("warning_count") == 0
    assert d("logmetrics", "chatmail_deliveries_total", kind="local") == 2
    assert d("logmetrics", "chatmail_deliveries_total", kind="remote") == 0
    for status in ("deferred", "bounced", "expired"):
        assert d("logmetrics", "chatmail_delivery_errors_total", status=status) == 0, status
    assert d("logmetrics", "chatmail_logmetrics_malformed_total") == 0
    assert d("logmetrics", "chatmail_logmetrics_lines_total") > 0
    # the dashboard's ratio: encrypted / filtered since logmetrics started, this test's
    # 2 of 3 included
    lm = before["logmetrics"]
    expected = (mtail(lm, "encrypted_mail_count") + 2) / (mtail(lm, "filtered_mail_count") + 3)
    assert math.isclose(value(after["logmetrics"], "chatmail_encrypted_ratio"), expected)
