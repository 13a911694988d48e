"""`chatmail_dkim_signed_total` of each relay's logmetrics against the OpenDKIM lines of
the same runs: mail from A to B is signed by A, the bounce for an unknown address on B is
signed by B, and each relay counts exactly the `DKIM-Signature field added` lines its own
OpenDKIM logged."""

from e2e.helpers import Endpoints, encrypted_message, random_local_part, value, wait_until
from e2e.test_relay_metrics import settle

SIGNED = "chatmail_dkim_signed_total"
OPENDKIM_LINE = "DKIM-Signature field added"
MAILS = 3


def _counts(side, endpoints):
    settle(side, endpoints)
    metric = value(endpoints.scrape("logmetrics"), SIGNED)
    lines = side.log_text("opendkim.log").count(OPENDKIM_LINE)
    return metric, lines


def test_dkim_signed_total_counts_each_relays_opendkim_lines(federation):
    a, b = federation.a, federation.b
    federation.require_daemons("logmetrics")
    ends = {a: Endpoints(a), b: Endpoints(b)}
    before = {side: _counts(side, ends[side]) for side in (a, b)}

    sender, spw = a.new_account()
    rcpt, _ = b.new_account()
    markers = []
    for _ in range(MAILS):
        marker, message = encrypted_message(sender, [rcpt])
        assert a.submit(465, sender, spw, sender, [rcpt], message) == {}
        markers.append(marker)
    nobody = f"{random_local_part()}@{b.domain}"
    bounced, message = encrypted_message(sender, [nobody])
    assert a.submit(465, sender, spw, sender, [nobody], message) == {}

    for marker in markers:
        (stored,) = wait_until(lambda m=marker: b.messages_with(rcpt, m), f"{marker} at B")
        assert b.dkim_verified_domain(stored) == a.domain
    wait_until(
        lambda: [m for m in a.maildir(sender) if bounced.encode() in m and b"MAILER-DAEMON" in m],
        "B's bounce at A",
    )

    after = {side: _counts(side, ends[side]) for side in (a, b)}
    # A signed the three mails and the one B bounced; B signed its bounce
    for side, signed in ((a, MAILS + 1), (b, 1)):
        (metric0, lines0), (metric1, lines1) = before[side], after[side]
        assert lines1 - lines0 == signed, side.domain
        assert metric1 - metric0 == signed, side.domain
