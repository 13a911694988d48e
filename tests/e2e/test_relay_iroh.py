"""Webxdc realtime channels of two Delta Chat 2.65 accounts through chatmail-iroh-relay.

The relay of this module advertises `iroh_relay = http://127.0.0.1:3340` in IMAP METADATA
(`/shared/vendor/deltachat/irohrelay`): core trusts only the public web roots for an https://
relay URL, and an http:// one skips TLS. Inside the namespace nft drops every UDP datagram
but DNS, so the peers cannot reach each other directly over QUIC and every realtime packet
must go through the relay; its metrics must show the bytes.
"""

import concurrent.futures
import os
import secrets
import subprocess
import zipfile

import pytest

from chatmaild.metrics.scrape import samples
from chatmaild.relay.netns import entered, exec_prefix

from .conftest import E2ERelay, running_relay
from .helpers import random_local_part
from .test_relay_deltachat import rpc_in_netns
from conftest import require_tool

IROH_URL = "http://127.0.0.1:3340"
CHUNK = 16 * 1024
CHUNKS = 10  # 160 KiB from alice to bob
WAIT = 60.0

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


@pytest.fixture(scope="module")
def iroh_relay():
    require_tool("nft")
    with running_relay(
        "chatmaild-iroh",
        ini_extra={"filtermail_dkim_check": "false", "iroh_relay": IROH_URL},
    ) as instance:
        relay = E2ERelay(instance, notifications=None)
        relay.require_daemons("doveauth", "metadata", "filtermail-outgoing", "iroh-relay")
        subprocess.run(
            [*exec_prefix(relay.netns), "nft", "-f", "-"],
            input=NFT_DROP_UDP,
            text=True,
            check=True,
            timeout=30,
        )
        yield relay


@pytest.fixture(scope="module")
def dc(iroh_relay, tmp_path_factory):
    accounts_dir = tmp_path_factory.mktemp("dc-iroh-accounts")
    stderr = open(accounts_dir.parent / "rpc-server-iroh.stderr", "wb")  # noqa: SIM115
    rpc = rpc_in_netns(iroh_relay.netns, accounts_dir / "accounts", stderr)
    from deltachat_rpc_client import DeltaChat

    with rpc:
        yield DeltaChat(rpc), iroh_relay
    stderr.close()


def _account(deltachat, relay):
    addr = f"{random_local_part()}@{relay.domain}"
    account = deltachat.add_account()
    account.set_config("webxdc_realtime_enabled", "1")
    account.add_or_update_transport(
        {
            "addr": addr,
            "password": secrets.token_hex(10),
            "imapServer": relay.domain,
            "imapPort": 993,
            "imapSecurity": "ssl",
            "smtpServer": relay.domain,
            "smtpPort": 465,
            "smtpSecurity": "ssl",
            "certificateChecks": "acceptInvalidCertificates",
        }
    )
    account.bring_online()
    account.addr = addr
    return account


def _xdc(path):
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("manifest.toml", 'name = "realtime test"\n')
        z.writestr("index.html", "<html><body>realtime</body></html>\n")
    return str(path)


def _metrics(relay):
    spec = next(d.metrics for d in relay.relay.daemons() if d.name == "iroh-relay")
    with entered(relay.netns):
        return samples(spec)


def _value(scraped, name, **labels):
    return scraped.get((name, tuple(sorted(labels.items()))), 0.0)


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


class Receiver:
    """Realtime data arriving at an account, waited for with a timeout (the RPC call blocks,
    so it runs in a worker thread)."""

    def __init__(self, account, msg_id, pool):
        self.account = account
        self.msg_id = msg_id
        self.pool = pool
        self.pending = None

    def next(self, timeout=WAIT):
        if self.pending is None:
            self.pending = self.pool.submit(self.account.wait_for_realtime_data, self.msg_id)
        data = self.pending.result(timeout=timeout)  # TimeoutError: fails the test
        self.pending = None
        return data


def _until_received(sender_msg, receiver, tag, attempts=30):
    """Send `tag` until the other side gets it: the gossip link comes up some time after
    both advertised."""
    for _ in range(attempts):
        sender_msg.send_webxdc_realtime_data(tag)
        try:
            got = receiver.next(timeout=2.0)
        except concurrent.futures.TimeoutError:
            continue
        if got == tag:
            return
    raise AssertionError(f"realtime data {tag!r} never arrived")


def test_webxdc_realtime_through_the_relay_with_udp_dropped(dc, tmp_path):
    deltachat, relay = dc
    alice, bob = _account(deltachat, relay), _account(deltachat, relay)
    before = _metrics(relay)
    udp_before = _udp_dropped(relay)

    bob.secure_join(alice.get_qr_code())
    alice.wait_for_securejoin_inviter_success()
    bob.wait_for_securejoin_joiner_success()

    chat = alice.get_chat_by_contact(alice.get_contact_by_addr(bob.addr))
    alice_msg = chat.send_file(_xdc(tmp_path / "realtime.xdc"))
    bob_msg = bob.wait_for_incoming_msg()
    assert bob_msg.get_snapshot().file_name.endswith(".xdc")

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        to_bob = Receiver(bob, bob_msg.id, pool)
        to_alice = Receiver(alice, alice_msg.id, pool)
        alice_msg.send_webxdc_realtime_advertisement()
        bob_msg.send_webxdc_realtime_advertisement()
        _until_received(alice_msg, to_bob, b"hello bob")
        _until_received(bob_msg, to_alice, b"hello alice")

        sent = [os.urandom(CHUNK) for _ in range(CHUNKS)]
        for chunk in sent:
            alice_msg.send_webxdc_realtime_data(chunk)
        got = []
        while len(got) < CHUNKS:
            data = to_bob.next()
            if data != b"hello bob":  # a late copy of the link test
                got.append(data)
        assert got == sent

        bob_msg.send_webxdc_realtime_data(b"all received")
        while (data := to_alice.next()) == b"hello alice":
            pass
        assert data == b"all received"

    after = _metrics(relay)

    def delta(name, **labels):
        return _value(after, name, **labels) - _value(before, name, **labels)

    forwarded = delta("chatmail_irohrelay_bytes_forwarded_total")
    disco = delta("chatmail_irohrelay_disco_packets_received_total")
    print(
        f"relay forwarded {forwarded:.0f} bytes for {CHUNK * CHUNKS} bytes of realtime data"
        f" ({disco:.0f} disco packets)"
    )
    assert forwarded >= CHUNK * CHUNKS
    assert disco > 0  # hole punching was tried over the relay, and recognised as disco
    assert delta("chatmail_irohrelay_packets_forwarded_total") > 0
    assert _value(after, "chatmail_irohrelay_clients") >= 2
    assert _udp_dropped(relay) > udp_before  # the peers did try to go direct
