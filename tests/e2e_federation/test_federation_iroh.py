"""Webxdc realtime between Delta Chat accounts on two relays, each homed at its own
chatmail-iroh-relay, with all UDP but DNS dropped in both namespaces.

A pair of its own for this module: each relay's chatmail-iroh-relay listens on every address
of its namespace and advertises `http://<link address>:3340`, so a client on one relay can
reach the other relay's iroh relay over the veth link (a peer is dialled through its home
relay; which relay then carries the traffic is iroh's choice: in practice both directions
use the one the first connection went through). alice (relay A) sends 160 KiB of realtime
data to bob (relay B); the two relays' metrics together must show at least those bytes
forwarded.
"""

import os
import tempfile

import pytest
from e2e.conftest import brought_up, relay_prerequisites
from e2e.deltachat_helpers import deltachat_per_side, realtime_exchange, xdc_shared
from e2e.helpers import Endpoints, value
from e2e.test_relay_iroh import CHUNK, CHUNKS, _account, drop_udp_but_dns

from chatmaild.relay.federation import RelayPair

from .helpers import Side
from conftest import require_tool

DAEMONS = ("doveauth", "metadata", "filtermail-outgoing", "filtermail-incoming", "iroh-relay")


class Sides:
    def __init__(self, pair):
        self.pair = pair
        self.a = Side(pair, pair.a)
        self.b = Side(pair, pair.b)


@pytest.fixture(scope="module")
def iroh_pair():
    relay_prerequisites()
    require_tool("unbound", "unbound-checkconf", "nft")
    state_dir = tempfile.mkdtemp(prefix="chatmaild-fediroh-", dir="/tmp")
    logs = []
    pair = RelayPair(
        state_dir,
        f"chatmaild-fediroh-{os.getpid()}",
        ini_extra={"iroh_relay_listen": "0.0.0.0:3340"},
        per_relay_ini=lambda domain, address: {"iroh_relay": f"http://{address}:3340"},
        log=logs.append,
    )
    with brought_up(pair, state_dir, "relay pair"):
        from conftest import require

        for relay in pair.relays:
            for name in DAEMONS:
                require(name not in relay.skipped, f"daemon {name} in this checkout")
            drop_udp_but_dns(relay.netns)
        yield Sides(pair)


@pytest.fixture(scope="module")
def dc(iroh_pair, tmp_path_factory):
    base = tmp_path_factory.mktemp("dc-fediroh")
    with deltachat_per_side((iroh_pair.a, iroh_pair.b), base) as dc:
        yield dc


def _forwarded(side):
    return value(Endpoints(side).scrape("iroh-relay"), "chatmail_irohrelay_bytes_forwarded_total")


def test_webxdc_realtime_across_the_relay_pair(iroh_pair, dc, tmp_path):
    a, b = iroh_pair.a, iroh_pair.b
    alice, bob = _account(dc[a], a), _account(dc[b], b)
    before = {side: _forwarded(side) for side in (a, b)}

    alice_msg, bob_msg = xdc_shared(alice, bob, tmp_path / "realtime.xdc")
    realtime_exchange(alice, alice_msg, bob, bob_msg, [os.urandom(CHUNK) for _ in range(CHUNKS)])

    after = {side: _forwarded(side) for side in (a, b)}
    print(
        f"forwarded: relay A {after[a] - before[a]:.0f} bytes,"
        f" relay B {after[b] - before[b]:.0f} bytes"
    )
    # Which relay carries it is iroh's choice (a peer answers through the relay its packets
    # came from), but all of it crosses one of them: no UDP gets through.
    assert sum(after[side] - before[side] for side in (a, b)) >= CHUNK * CHUNKS
