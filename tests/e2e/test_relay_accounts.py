"""Accounts, METADATA and push through the real Dovecot of the relay (issue 6)."""

import imaplib
import secrets

import pytest

from .helpers import encrypted_message, random_local_part, wait_until


def test_first_login_creates_account_second_password_fails(relay):
    relay.require_daemons("doveauth")
    addr = f"{random_local_part()}@{relay.domain}"
    password = secrets.token_hex(10)
    assert not relay.user_dir(addr).exists()

    client = relay.imap(addr, password)
    assert client.select("INBOX")[0] == "OK"
    client.logout()
    user_dir = relay.user_dir(addr)
    assert (user_dir / "password").read_text().startswith("{SHA512-CRYPT}")
    assert (user_dir / "enforceE2EEincoming").exists()

    with pytest.raises(imaplib.IMAP4.error):
        relay.imap(addr, secrets.token_hex(10))
    # The account and its first password are unchanged.
    relay.imap(addr, password).logout()


def test_capabilities_and_server_metadata(relay):
    relay.require_daemons("doveauth", "metadata")
    addr, password = relay.new_account()
    client = relay.imap(addr, password)
    try:
        typ, data = client.capability()  # after login: the post-login capabilities
        caps = data[0].decode().upper().split()
        assert "XDELTAPUSH" in caps and "XCHATMAIL" in caps and "METADATA" in caps
        typ, data = client._simple_command(
            "GETMETADATA",
            '""',
            "(/shared/vendor/deltachat/irohrelay /shared/vendor/deltachat/turn /shared/admin)",
        )
        assert typ == "OK"
        typ, data = client._untagged_response(typ, data, "METADATA")
        answer = b" ".join(x if isinstance(x, bytes) else b" ".join(x) for x in data)
        # advertised only while served (docs/turn.md): the iroh relay when it runs here
        iroh_url = f"https://{relay.domain}".encode()
        assert (iroh_url in answer) == ("iroh-relay" in relay.relay.pids), answer
        assert f"{relay.domain}:3478:".encode() in answer  # chatmail-turn runs
        assert f"mailto:postmaster@{relay.domain}".encode() in answer
    finally:
        client.logout()


def test_device_token_then_delivery_posts_one_notification(relay):
    relay.require_daemons("doveauth", "metadata", "filtermail-outgoing")
    (a, pa), (b, pb) = relay.new_account(), relay.new_account()
    token = "e2e-token-" + secrets.token_hex(8)
    client = relay.imap(b, pb)
    try:
        client.select("INBOX")
        typ, data = client._simple_command(
            "SETMETADATA", "INBOX", f'(/private/devicetoken "{token}")'
        )
        assert typ == "OK", data
    finally:
        client.logout()
    assert token in (relay.user_dir(b) / "metadata.json").read_text()

    marker, msg = encrypted_message(a, [b])
    relay.submit(465, a, pa, a, [b], msg)
    relay.wait_delivered(b, pb, marker)
    posts = wait_until(lambda: relay.notifications.posts_with(token), "the push notification")
    assert posts == [("/notify", token)]
