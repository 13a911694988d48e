"""SMTP through the real Postfix of the relay, with filtermail in the path (issue 6)."""

import smtplib

import pytest

from .helpers import cleartext_message, encrypted_message, mailer_daemon_report


@pytest.fixture(scope="module")
def pair(relay):
    relay.require_daemons("doveauth", "filtermail-outgoing", "filtermail-incoming")
    return relay.new_account(), relay.new_account()


@pytest.mark.parametrize("port", [465, 587])
def test_encrypted_submission_reaches_recipient(relay, pair, port):
    (a, pa), (b, pb) = pair
    marker, msg = encrypted_message(a, [b])
    assert relay.submit(port, a, pa, a, [b], msg) == {}
    relay.wait_delivered(b, pb, marker)


@pytest.mark.parametrize("port", [465, 587])
def test_cleartext_submission_gets_523(relay, pair, port):
    (a, pa), (b, pb) = pair
    marker, msg = cleartext_message(a, [b])
    with pytest.raises(smtplib.SMTPDataError) as e:
        relay.submit(port, a, pa, a, [b], msg)
    assert e.value.smtp_code == 523
    assert not relay.inbox_has(b, pb, marker)


def test_spoofed_sender_is_refused_with_553(relay, pair):
    (a, pa), (b, pb) = pair
    marker, msg = encrypted_message(b, [a])
    with pytest.raises(smtplib.SMTPRecipientsRefused) as e:
        relay.submit(465, a, pa, b, [a], msg)
    ((code, text),) = e.value.recipients.values()
    assert code == 553, text
    assert b"not owned by user" in text


def test_rate_limit_is_a_temporary_error_after_the_burst(relay, pair):
    (_, _), (b, pb) = pair
    sender, password = relay.new_account()
    burst = relay.relay.config.max_user_send_burst_size
    client = relay.smtp(465)
    client.login(sender, password)
    refused = None
    try:
        # The burst passes; a few more within the same second hit the limit.
        for i in range(burst + 5):
            _, msg = encrypted_message(sender, [b])
            try:
                client.sendmail(sender, [b], msg)
            except smtplib.SMTPRecipientsRefused as e:
                refused = (i, *next(iter(e.recipients.values())))
                break
    finally:
        client.close()
    assert refused is not None, "no message was refused"
    index, code, text = refused
    assert 400 <= code < 500, (code, text)
    assert b"Too much mail" in text
    assert index >= burst


def test_port25_encrypted_mail_is_delivered(relay, pair):
    (a, pa), _ = pair
    marker, msg = encrypted_message("someone@other.example", [a])
    assert relay.send_port25("someone@other.example", [a], msg) == {}
    relay.wait_delivered(a, pa, marker)


def test_port25_cleartext_to_enforcing_address_is_refused(relay, pair):
    (a, pa), _ = pair
    assert (relay.user_dir(a) / "enforceE2EEincoming").exists()
    marker, msg = cleartext_message("someone@other.example", [a])
    with pytest.raises(smtplib.SMTPDataError) as e:
        relay.send_port25("someone@other.example", [a], msg)
    assert e.value.smtp_code == 523
    assert not relay.inbox_has(a, pa, marker)


def test_port25_mailer_daemon_report_passes(relay, pair):
    (a, pa), _ = pair
    marker, msg = mailer_daemon_report(a)
    assert relay.send_port25("", [a], msg) == {}
    relay.wait_delivered(a, pa, marker)
