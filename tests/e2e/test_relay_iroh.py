"""Webxdc realtime channels of two Delta Chat 2.65 accounts through chatmail-iroh-relay.

The relay of this module advertises `iroh_relay = http://127.0.0.1:3340` in IMAP METADATA
(`/shared/vendor/deltachat/irohrelay`): core trusts only the public web roots for an https://
relay URL, and an http:// one skips TLS. Inside the namespace nft drops every UDP datagram
but DNS, so the peers cannot reach each other directly over QUIC and every realtime packet
must go through the relay; its metrics must show the bytes.
"""

import os
import subprocess

import pytest

from chatmaild.relay.netns import exec_prefix

from .conftest import E2ERelay, running_relay
from .deltachat_helpers import dc_account, deltachat_in_netns, realtime_exchange, xdc_shared
from .helpers import Endpoints, value
from conftest import require_tool

IROH_URL = "http://127.0.0.1:3340"
CHUNK = 16 * 1024
CHUNKS = 10  # 160 KiB from alice to bob

NFT_DROP_UDP = """
table inet chatmaild_iroh_test {
    chain output {
        type filter hook output priority 0; policy accept;
        udp dport 53 accept
        udp sport 53 accept
        meta l4proto udp counter drop
    }
}
"""


def drop_udp_but_dns(netns):
    """nft in `netns`: every UDP datagram but DNS is dropped (and counted)."""
    subprocess.run(
        [*exec_prefix(netns), "nft", "-f", "-"],
        input=NFT_DROP_UDP,
        text=True,
        check=True,
        timeout=30,
    )


@pytest.fixture(scope="module")
def iroh_relay():
    require_tool("nft")
    with running_relay(
        "chatmaild-iroh",
        ini_extra={"filtermail_dkim_check": "false", "iroh_relay": IROH_URL},
    ) as instance:
        relay = E2ERelay(instance, notifications=None)
        relay.require_daemons("doveauth", "metadata", "filtermail-outgoing", "iroh-relay")
        drop_udp_but_dns(relay.netns)
        yield relay


@pytest.fixture(scope="module")
def dc(iroh_relay, tmp_path_factory):
    accounts_dir = tmp_path_factory.mktemp("dc-iroh-accounts")
    with deltachat_in_netns(
        iroh_relay.netns, accounts_dir / "accounts", accounts_dir.parent / "rpc-server-iroh.stderr"
    ) as deltachat:
        yield deltachat, iroh_relay


def _account(deltachat, relay):
    return dc_account(deltachat, relay.domain, webxdc_realtime_enabled="1")


def _metrics(relay):
    return Endpoints(relay).scrape("iroh-relay")


def _udp_dropped(relay):
    out = subprocess.run(
        [*exec_prefix(relay.netns), "nft", "list", "table", "inet", "chatmaild_iroh_test"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout
    counter = out.split("counter packets ", 1)[1]
    return int(counter.split()[0])


def test_webxdc_realtime_through_the_relay_with_udp_dropped(dc, tmp_path):
    deltachat, relay = dc
    alice, bob = _account(deltachat, relay), _account(deltachat, relay)
    before = _metrics(relay)
    udp_before = _udp_dropped(relay)

    alice_msg, bob_msg = xdc_shared(alice, bob, tmp_path / "realtime.xdc")
    assert bob_msg.get_snapshot().file_name.endswith(".xdc")

    realtime_exchange(alice, alice_msg, bob, bob_msg, [os.urandom(CHUNK) for _ in range(CHUNKS)])

    after = _metrics(relay)

    def delta(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    forwarded = delta("chatmail_irohrelay_bytes_forwarded_total")
    disco = delta("chatmail_irohrelay_disco_packets_received_total")
    print(
        f"relay forwarded {forwarded:.0f} bytes for {CHUNK * CHUNKS} bytes of realtime data"
        f" ({disco:.0f} disco packets)"
    )
    assert forwarded >= CHUNK * CHUNKS
    assert disco > 0  # hole punching was tried over the relay, and recognised as disco
    assert delta("chatmail_irohrelay_packets_forwarded_total") > 0
    assert value(after, "chatmail_irohrelay_clients") >= 2
    assert _udp_dropped(relay) > udp_before  # the peers did try to go direct
