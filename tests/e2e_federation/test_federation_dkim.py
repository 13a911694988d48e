"""Relay B's DKIM check on port 25, fed directly: smtplib from relay A's namespace over
STARTTLS (B's certificate verified against the test CA), mail of `sender.test` signed with
dkimpy and keys published in the test zones (chatmaild.render.zone via SenderDomain).

Only the signature differs between the cases: every message is a valid encrypted mail to
an existing user, so a refusal can only be the DKIM check's.
"""

import smtplib

import pytest
from e2e.helpers import encrypted_message, random_local_part, wait_until

TAMPERED_PART_HEADER = b"Content-Description: changed after signing\r\n"


def _tamper_body(message):
    """Add a header to the encrypted payload part: a body change that keeps the structure."""
    marker = b'Content-Type: application/octet-stream; name="encrypted.asc"\r\n'
    assert marker in message
    return message.replace(marker, marker + TAMPERED_PART_HEADER)


def _signed(sender, message, case):
    if case == "unsigned":
        return message
    if case == "valid":
        return sender.sign(message)
    if case == "other domain":  # valid signature by other.test on mail From: sender.test
        return sender.sign(message, key="other", domain=sender.other)
    if case == "body changed":
        return _tamper_body(sender.sign(message))
    if case == "revoked key":
        return sender.sign(message, selector="revoked")
    if case == "unpublished key":  # the `good` selector, but not the published key
        return sender.sign(message, key="unpublished")
    raise ValueError(case)


def _send(federation, case):
    a, b, sender = federation.a, federation.b, federation.sender
    mail_from = f"{random_local_part()}@{sender.domain}"
    rcpt, _ = b.new_account()
    marker, message = encrypted_message(mail_from, [rcpt])
    client = a.smtp_to_peer(b)
    try:
        client.sendmail(mail_from, [rcpt], _signed(sender, message, case))
        return rcpt, marker, None
    except smtplib.SMTPDataError as e:
        return rcpt, marker, e
    finally:
        client.close()


def test_a_valid_signature_of_the_from_domain_is_accepted(federation):
    b = federation.b
    rcpt, marker, refused = _send(federation, "valid")
    assert refused is None
    (stored,) = wait_until(lambda: b.messages_with(rcpt, marker), "delivery")
    assert b.dkim_verified_domain(stored) == federation.sender.domain


@pytest.mark.parametrize(
    "case", ["unsigned", "other domain", "body changed", "revoked key", "unpublished key"]
)
def test_refused_with_5_7_1_and_nothing_delivered(federation, case):
    b = federation.b
    rcpt, marker, refused = _send(federation, case)
    assert refused is not None, f"{case}: accepted"
    assert refused.smtp_code // 100 == 5
    assert refused.smtp_error.startswith(b"5.7.1"), refused.smtp_error
    assert not b.messages_with(rcpt, marker)
    # refused before the queue: B's Postfix never took it in
    assert marker not in b.log_text("postfix.log")


@pytest.mark.parametrize(
    ("case", "verified_domain"),
    [
        ("valid", "sender.test"),
        ("other domain", "other.test"),  # valid, but not the From: domain
        ("unsigned", None),
        ("body changed", None),
        ("revoked key", None),
        ("unpublished key", None),
    ],
)
def test_each_case_is_what_it_claims_for_dkimpy(federation, case, verified_domain):
    """dkimpy, asking relay B's resolver, agrees with the cases: so a refusal above is
    the relay's judgement of exactly that signature."""
    sender = federation.sender
    _, message = encrypted_message(f"x@{sender.domain}", [f"y@{federation.b.domain}"])
    signed = _signed(sender, message, case)
    assert federation.b.dkim_verified_domain(signed) == verified_domain
