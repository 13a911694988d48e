"""The real Postfix forwards the client address to filtermail incoming (XFORWARD), and an
IP-literal From is DKIM-exempt only when it is that address.

The session relay runs with the DKIM check off (its tests send unsigned mail to port 25),
so this module brings up a second relay, in its own network namespace, with the check on
as in production. Nothing there serves DKIM keys: the IP-literal path must not need any.
"""

import smtplib

import pytest

from .conftest import E2ERelay, running_relay
from .helpers import encrypted_message

EXEMPT = "DKIM exempt: IP literal [127.0.0.1] is the client address"
DKIM_550 = b"5.7.1 No valid DKIM signature found"


@pytest.fixture(scope="module")
def dkim_relay():
    with running_relay("chatmaild-e2e-dkim", log=lambda _: None) as instance:
        assert instance.config.filtermail_dkim_check  # the default, not turned off
        relay = E2ERelay(instance, None)
        relay.require_daemons("doveauth", "filtermail-incoming")
        yield relay


def test_ip_literal_of_the_connecting_client_passes(dkim_relay):
    """STARTTLS on port 25 from the namespace's 127.0.0.1, like another relay."""
    addr, password = dkim_relay.new_account()
    sender = "x@[127.0.0.1]"
    marker, message = encrypted_message(sender, [addr])
    assert dkim_relay.send_port25(sender, [addr], message) == {}
    dkim_relay.wait_delivered(addr, password, marker)
    # Postfix sent XFORWARD ADDR=127.0.0.1: without it there is no exemption (550)
    log = dkim_relay.log_text("filtermail-incoming.log")
    assert f"Incoming: Filtering encrypted mail. {EXEMPT}" in log


@pytest.mark.parametrize(
    "sender, reason",
    [
        ("x@[10.9.9.9]", "IP literal [10.9.9.9] is not the client address 127.0.0.1"),
        # the check is really on in this relay: a DNS-name sender needs a signature
        ("someone@other.example", "no signature"),
    ],
)
def test_other_senders_get_550(dkim_relay, sender, reason):
    addr, password = dkim_relay.new_account()
    marker, message = encrypted_message(sender, [addr])
    with pytest.raises(smtplib.SMTPDataError) as e:
        dkim_relay.send_port25(sender, [addr], message)
    assert (e.value.smtp_code, e.value.smtp_error) == (550, DKIM_550)
    log = dkim_relay.log_text("filtermail-incoming.log")
    line = f"DKIM failed for mail from <{sender}>: {reason}"
    assert [x for x in log.splitlines() if x.endswith(line)], log[-2000:]
    assert not dkim_relay.inbox_has(addr, password, marker)
