"""Restarting any one of our daemons while the relay runs loses no mail and no account."""

import smtplib
import threading

import pytest

from .helpers import encrypted_message, wait_until

IN_FLIGHT = 5
DAEMONS = ["doveauth", "lastlogin", "metadata", "filtermail-outgoing", "filtermail-incoming"]


def _submit_retrying(relay, a, pa, b, msg):
    """Submit like a client does: a temporary (4xx) failure means "try again"."""

    def attempt():
        try:
            return relay.submit(465, a, pa, a, [b], msg) == {}
        except smtplib.SMTPAuthenticationError:
            # While doveauth restarts Dovecot cannot look the user up; Postfix reports that
            # as a failed login. The account is checked after the restart, below.
            return False
        except (smtplib.SMTPRecipientsRefused, smtplib.SMTPDataError) as e:
            codes = (
                [c for c, _ in e.recipients.values()]
                if isinstance(e, smtplib.SMTPRecipientsRefused)
                else [e.smtp_code]
            )
            if all(400 <= c < 500 for c in codes):
                return False
            raise

    wait_until(attempt, "an accepted submission", interval=0.5)


def _send_port25_retrying(relay, rcpt, msg):
    def attempt():
        client = relay.smtp(25)
        try:
            return client.sendmail("someone@other.example", [rcpt], msg) == {}
        except (smtplib.SMTPRecipientsRefused, smtplib.SMTPDataError) as e:
            if isinstance(e, smtplib.SMTPDataError) and e.smtp_code >= 500:
                raise
            return False
        finally:
            client.close()

    wait_until(attempt, "an accepted port-25 delivery", interval=0.5)


@pytest.mark.parametrize("name", DAEMONS)
def test_restart_loses_no_mail_and_no_account(relay, name):
    relay.require_daemons(*DAEMONS)
    (a, pa), (b, pb) = relay.new_account(), relay.new_account()
    marker_before, msg_before = encrypted_message(a, [b])
    _submit_retrying(relay, a, pa, b, msg_before)

    # Mail keeps coming in while the daemon restarts; a client retries what gets a 4xx.
    in_flight = [encrypted_message(a, [b]) for _ in range(IN_FLIGHT)]
    errors = []

    def sender():
        try:
            for _, msg in in_flight:
                _submit_retrying(relay, a, pa, b, msg)
        except Exception as e:  # reported by the main thread
            errors.append(e)

    thread = threading.Thread(target=sender)
    old_pid = relay.relay.pids[name]
    thread.start()
    relay.relay.restart_daemon(name)
    thread.join()
    assert not errors, errors
    assert relay.relay.pids[name] != old_pid

    # Accounts survive: both users log in with their passwords, a wrong one still fails.
    relay.imap(a, pa).logout()
    relay.imap(b, pb).logout()
    assert (relay.user_dir(a) / "password").read_text().startswith("{SHA512-CRYPT}")

    # Deliveries attempted while a dict daemon was down were deferred (LMTP 4xx), not
    # lost: retry them now instead of after Postfix's 5 minute back-off.
    relay.relay.flush_queue()

    # Mail accepted before the restart is there; mail after it flows both ways.
    marker_after, msg_after = encrypted_message(a, [b])
    _submit_retrying(relay, a, pa, b, msg_after)
    marker_in, msg_in = encrypted_message("someone@other.example", [b])
    _send_port25_retrying(relay, b, msg_in)
    for marker in (marker_before, marker_after, marker_in, *(m for m, _ in in_flight)):
        relay.wait_delivered(b, pb, marker)
    # A new account can still be created.
    relay.new_account()
