"""The outgoing (SPEC 4.3) and incoming (4.4) decisions, with their replies and log lines."""

import pytest
from filtermail_samples import (
    BOUNDARY,
    armor,
    encrypt,
    encrypted_mail,
    mail,
    mime_part,
    multipart,
    plain_mail,
    securejoin_mail,
    top_headers,
)

from chatmaild.config import read_config
from chatmaild.filtermail.policy import (
    ENCRYPTION_NEEDED,
    Envelope,
    Verdict,
    check_incoming,
    check_mail_from,
    check_outgoing,
    check_rate,
)
from chatmaild.filtermail.ratelimit import RateLimiter

from conftest import write_ini

ALICE = "alice@chat.example"
BOB = "bob@chat.example"
EXTERNAL = "carol@other.example"


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    path = tmp_path_factory.mktemp("fm") / "chatmail.ini"
    write_ini(
        path,
        mail_domain="chat.example",
        passthrough_senders="bot@chat.example",
        passthrough_recipients="echo@bots.example @partner.example",
    )
    return read_config(path)


@pytest.fixture(scope="module")
def armored():
    return armor(encrypt(("x25519",), 500))


def test_verdict_line():
    assert ENCRYPTION_NEEDED.line() == "523 Encryption Needed: Invalid Unencrypted Mail"
    assert Verdict(450, "x").line() == "450 x"
    with pytest.raises(AttributeError):
        ENCRYPTION_NEEDED.code = 250


@pytest.mark.parametrize(
    "name, mail_from, line",
    [
        ("ok", ALICE, None),
        ("null-sender", "", "500 Invalid from address <>"),
        ("no-at", "alice", "500 Invalid from address <alice>"),
        ("two-at", "a@b@chat.example", "500 Invalid from address <a@b@chat.example>"),
        ("control-chars", "\x00a@@\tx", "500 Invalid from address <?a@@?x>"),
    ],
)
def test_check_mail_from(name, mail_from, line):
    verdict = check_mail_from(mail_from)
    assert (verdict.line() if verdict else None) == line


def test_check_rate_keyed_by_lowercased_sender():
    clock = [0.0]
    limiter = RateLimiter(per_minute=60, burst=2, clock=lambda: clock[0])
    assert check_rate(limiter, ALICE) is None
    assert check_rate(limiter, ALICE.upper()) is None
    verdict = check_rate(limiter, "Alice@chat.example")
    assert verdict.line() == "450 4.7.1: Too much mail from Alice@chat.example"
    assert check_rate(limiter, BOB) is None
    clock[0] += 1.0
    assert check_rate(limiter, ALICE) is None


def _setup_message():
    headers = top_headers(to=ALICE, content_type=f'multipart/mixed; boundary="{BOUNDARY}"')
    headers["From"] = f"<{ALICE}>"
    headers["Subject"] = "Autocrypt Setup Message"
    part = mime_part("application/autocrypt-setup", b"-----BEGIN PGP MESSAGE-----\n")
    return mail(headers, multipart([part]))


# name -> (envelope sender, recipients, message builder, expected reply line or None, log part)
OUTGOING = {
    "encrypted": (ALICE, [EXTERNAL], "enc", None, "Outgoing: Filtering encrypted mail."),
    "encrypted-from-case-differs": (
        "Alice@Chat.Example",
        [EXTERNAL],
        "enc",
        None,
        "Outgoing: Filtering encrypted mail.",
    ),
    "securejoin": (ALICE, [EXTERNAL], "sj", None, "Outgoing: Filtering encrypted mail."),
    "cleartext": (
        ALICE,
        [EXTERNAL],
        "plain",
        "523 Encryption Needed: Invalid Unencrypted Mail",
        "Outgoing: Filtering unencrypted mail. Rejected unencrypted mail.",
    ),
    # the admin contact (admin_contact, default postmaster@) takes cleartext from users
    "cleartext-to-the-admin-contact": (
        ALICE,
        ["Postmaster@chat.example"],
        "plain",
        None,
        "Accepted: passthrough recipients",
    ),
    "cleartext-to-the-admin-contact-and-another": (
        ALICE,
        ["postmaster@chat.example", BOB],
        "plain",
        "523 Encryption Needed: Invalid Unencrypted Mail",
        f"recipient <{BOB}> is not a passthrough recipient",
    ),
    "cleartext-to-root-is-not-the-contact": (
        ALICE,
        ["root@chat.example"],
        "plain",
        "523 Encryption Needed: Invalid Unencrypted Mail",
        "Rejected unencrypted mail.",
    ),
    "cleartext-to-local-user": (
        ALICE,
        [BOB],
        "plain",
        "523 Encryption Needed: Invalid Unencrypted Mail",
        "Rejected unencrypted mail.",
    ),
    "armor-header-outgoing": (
        ALICE,
        [EXTERNAL],
        "enc-version-header",
        "523 Encryption Needed: Invalid Unencrypted Mail",
        "Rejected unencrypted mail.",
    ),
    "from-differs": (
        ALICE,
        [EXTERNAL],
        "enc-from-bob",
        f"500 Invalid FROM <{BOB}> for <{ALICE}>",
        "Outgoing: Rejected mail: 500 Invalid FROM",
    ),
    "from-missing": (
        ALICE,
        [EXTERNAL],
        "enc-no-from",
        f"500 Invalid FROM <> for <{ALICE}>",
        "Invalid FROM",
    ),
    "from-two-addresses": (
        ALICE,
        [EXTERNAL],
        "enc-two-from",
        f"500 Invalid FROM <> for <{ALICE}>",
        "Invalid FROM",
    ),
    "from-repeated": (
        ALICE,
        [EXTERNAL],
        "enc-repeated-from",
        f"500 Invalid FROM <> for <{ALICE}>",
        "Invalid FROM",
    ),
    "from-display-name-is-sender": (
        ALICE,
        [EXTERNAL],
        "enc-display-trick",
        f"500 Invalid FROM <{BOB}> for <{ALICE}>",
        "Invalid FROM",
    ),
    "passthrough-sender": (
        "bot@chat.example",
        [EXTERNAL],
        "plain-bot",
        None,
        "Outgoing: Filtering unencrypted mail. Accepted: passthrough sender",
    ),
    "passthrough-sender-case": (
        "BOT@chat.example",
        [EXTERNAL],
        "plain-bot",
        None,
        "passthrough sender",
    ),
    "passthrough-sender-still-needs-matching-from": (
        "bot@chat.example",
        [EXTERNAL],
        "plain",
        f"500 Invalid FROM <{ALICE}> for <bot@chat.example>",
        "Invalid FROM",
    ),
    "passthrough-recipient-exact": (
        ALICE,
        ["echo@bots.example"],
        "plain",
        None,
        "Accepted: passthrough recipients",
    ),
    "passthrough-recipient-domain": (
        ALICE,
        ["anyone@partner.example", "Other@Partner.Example"],
        "plain",
        None,
        "Accepted: passthrough recipients",
    ),
    "passthrough-recipient-subdomain-no-match": (
        ALICE,
        ["x@sub.partner.example"],
        "plain",
        "523 Encryption Needed: Invalid Unencrypted Mail",
        "recipient <x@sub.partner.example> is not a passthrough recipient",
    ),
    "passthrough-recipient-suffix-no-match": (
        ALICE,
        ["x@notpartner.example"],
        "plain",
        "523 Encryption Needed: Invalid Unencrypted Mail",
        "Rejected unencrypted mail.",
    ),
    "passthrough-recipient-other-local-part-no-match": (
        ALICE,
        ["other@bots.example"],
        "plain",
        "523 Encryption Needed: Invalid Unencrypted Mail",
        "Rejected unencrypted mail.",
    ),
    "passthrough-recipients-mixed": (
        ALICE,
        ["echo@bots.example", EXTERNAL],
        "plain",
        "523 Encryption Needed: Invalid Unencrypted Mail",
        f"recipient <{EXTERNAL}>",
    ),
    "autocrypt-setup-message": (
        ALICE,
        [ALICE],
        "setup",
        None,
        "Outgoing: Filtering unencrypted mail. Accepted: Autocrypt Setup Message",
    ),
    "autocrypt-setup-message-to-other": (
        ALICE,
        [BOB],
        "setup",
        "523 Encryption Needed: Invalid Unencrypted Mail",
        "Rejected unencrypted mail.",
    ),
    "autocrypt-setup-message-also-to-other": (
        ALICE,
        [ALICE, BOB],
        "setup",
        "523 Encryption Needed: Invalid Unencrypted Mail",
        "Rejected unencrypted mail.",
    ),
}


def _message(kind, armored):
    if kind == "enc":
        return encrypted_mail(armored, sender=ALICE)
    if kind == "enc-version-header":
        return encrypted_mail(armored.replace(b"-----\n\n", b"-----\nVersion: x\n\n", 1))
    if kind == "enc-from-bob":
        return encrypted_mail(armored, sender=BOB)
    if kind == "enc-no-from":
        headers = top_headers()
        del headers["From"]
        return encrypted_mail(armored, headers=headers)
    if kind == "enc-two-from":
        headers = top_headers()
        headers["From"] = f"{ALICE}, {BOB}"
        return encrypted_mail(armored, headers=headers)
    if kind == "enc-repeated-from":
        headers = [*top_headers().items(), ("From", f"<{BOB}>")]
        return encrypted_mail(armored, headers=headers)
    if kind == "enc-display-trick":
        headers = top_headers()
        headers["From"] = f'"{ALICE}" <{BOB}>'
        return encrypted_mail(armored, headers=headers)
    if kind == "sj":
        return securejoin_mail()
    if kind == "plain":
        return plain_mail(sender=ALICE)
    if kind == "plain-bot":
        return plain_mail(sender="bot@chat.example")
    if kind == "setup":
        return _setup_message()
    raise ValueError(kind)


@pytest.mark.parametrize("name", sorted(OUTGOING))
def test_check_outgoing(name, config, armored):
    sender, rcpts, kind, line, log_part = OUTGOING[name]
    verdict, log = check_outgoing(Envelope(sender, rcpts), _message(kind, armored), config)
    assert (verdict.line() if verdict else None) == line
    assert log_part in log
    assert "\n" not in log
    assert b"hello" not in log.encode()  # never the body


def test_rejection_log_line_matches_metrics_patterns(config):
    _, log = check_outgoing(Envelope(ALICE, [EXTERNAL]), plain_mail(sender=ALICE), config)
    assert "Filtering unencrypted mail." in log and "Rejected unencrypted mail." in log
    _, log = check_incoming(Envelope(EXTERNAL, [BOB]), plain_mail(sender=EXTERNAL), config, bool)
    assert log.startswith("Incoming: Filtering unencrypted mail.")
    assert "Rejected unencrypted mail." in log


def _report(sender="MAILER-DAEMON@other.example", ct="multipart/report"):
    headers = {
        "From": f"Mail Delivery System <{sender}>",
        "To": BOB,
        "Auto-Submitted": "auto-replied",
        "Content-Type": f'{ct}; report-type=delivery-status; boundary="{BOUNDARY}"',
    }
    return mail(headers, multipart([mime_part("text/plain", b"bounce\n")]))


ENFORCING = {BOB, "dave@chat.example"}

# name -> (recipients, message, expected reply line or None, log part)
INCOMING = {
    "encrypted": ([BOB], "enc", None, "Incoming: Filtering encrypted mail."),
    "encrypted-version-header": (
        [BOB],
        "enc-version-header",
        None,
        "Incoming: Filtering encrypted mail.",
    ),
    "encrypted-from-not-checked": ([BOB], "enc-from-bob", None, "Filtering encrypted mail."),
    "securejoin": ([BOB], "sj", None, "Incoming: Filtering encrypted mail."),
    "cleartext-to-enforcing": (
        [BOB],
        "plain",
        "523 Encryption Needed: Invalid Unencrypted Mail",
        f"Incoming: Filtering unencrypted mail. Rejected unencrypted mail. from <{EXTERNAL}>",
    ),
    "cleartext-to-opted-in": (
        ["erin@chat.example"],
        "plain",
        None,
        "Incoming: Filtering unencrypted mail. Accepted",
    ),
    "cleartext-opted-in-and-enforcing": (
        ["erin@chat.example", "dave@chat.example"],
        "plain",
        "523 Encryption Needed: Invalid Unencrypted Mail",
        "recipient <dave@chat.example> enforces",
    ),
    "mailer-daemon-report": ([BOB], "report", None, "Accepted: mailer-daemon report"),
    "report-not-from-mailer-daemon": (
        [BOB],
        "report-postmaster",
        "523 Encryption Needed: Invalid Unencrypted Mail",
        "Rejected unencrypted mail.",
    ),
    "mailer-daemon-not-a-report": (
        [BOB],
        "report-mixed",
        "523 Encryption Needed: Invalid Unencrypted Mail",
        "Rejected unencrypted mail.",
    ),
}


def _incoming_message(kind, armored):
    if kind == "plain":
        return plain_mail(sender=EXTERNAL)
    if kind == "report":
        return _report()
    if kind == "report-postmaster":
        return _report("postmaster@other.example")
    if kind == "report-mixed":
        return _report(ct="multipart/mixed")
    return _message(kind, armored)


@pytest.mark.parametrize("name", sorted(INCOMING))
def test_check_incoming(name, config, armored):
    rcpts, kind, line, log_part = INCOMING[name]
    asked = []

    def enforces_e2ee(addr):
        asked.append(addr)
        return addr in ENFORCING

    env = Envelope(EXTERNAL, rcpts)
    verdict, log = check_incoming(env, _incoming_message(kind, armored), config, enforces_e2ee)
    assert (verdict.line() if verdict else None) == line
    assert log_part in log
    assert "\n" not in log
    if "encrypted mail." in log_part and "unencrypted" not in log_part:
        assert asked == []  # no mailbox lookup for encrypted mail


def test_outgoing_with_stand_in_config(armored):
    """Only the two passthrough fields and the admin contact of the config are read."""

    class StandIn:
        passthrough_senders = ()
        passthrough_recipients = ("@other.example",)
        admin_contact = "postmaster@chat.example"

    verdict, _ = check_outgoing(Envelope(ALICE, [EXTERNAL]), plain_mail(sender=ALICE), StandIn())
    assert verdict is None
