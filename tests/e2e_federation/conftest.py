"""Two relays per test session that deliver to each other (chatmaild.relay.federation).

Relay A (relay-a.test) and relay B (relay-b.test) run in namespaces
`chatmaild-fed-<pid>-a`/`-b` joined by a veth pair, each with its own unbound serving
both zones plus the test sender domains of `SenderDomain`, certificates from one test CA
and the production `smtp_tls_security_level = verify` between them. DKIM checking of
incoming mail is on for both (`filtermail_dkim_check = true`). Torn down at the end
(`CHATMAILD_E2E_KEEP=1` keeps the state dir with the logs).
"""

import os
import tempfile

import pytest
from e2e.conftest import brought_up, relay_prerequisites

from chatmaild.relay.federation import RelayPair

from .helpers import SenderDomain, Side
from conftest import require_tool

TRANSPORT_MEMORY_S = 4


class Federation:
    def __init__(self, pair, sender):
        self.pair = pair
        self.sender = sender
        self.a = Side(pair, pair.a)
        self.b = Side(pair, pair.b)

    def require_daemons(self, *names):
        from conftest import require

        for relay in self.pair.relays:
            for name in names:
                require(name not in relay.skipped, f"daemon {name} in this checkout")


@pytest.fixture(scope="session")
def federation():
    relay_prerequisites()
    require_tool("unbound", "unbound-checkconf")
    state_dir = tempfile.mkdtemp(prefix="chatmaild-fed-", dir="/tmp")
    sender = SenderDomain()
    logs = []
    pair = RelayPair(
        state_dir,
        f"chatmaild-fed-{os.getpid()}",
        ini_extra={
            "filtermail_dkim_check": "true",
            # the delivery tests send bursts from one address
            "max_user_send_per_minute": 1000,
            "max_user_send_burst_size": 1000,
            # the transport's SMTP-only memory, shortened so a test sees it expire
            "filtermail_transport_smtp_memory": TRANSPORT_MEMORY_S,
        },
        extra_zones=sender.zones(),
        log=logs.append,
    )
    with brought_up(pair, state_dir, "relay pair"):
        yield Federation(pair, sender)
