"""TURN across the relay pair: a call's media between a user of relay A and one of relay B,
each relayed by their own relay's coturn (issue 18).

Delta Chat 2.65 on relay A gets A's TURN server and credentials (`ice_servers()`); a client
on relay B's side takes B's credentials from chatmail-turn. Each allocates on its own relay's
coturn with aioice (from inside its namespace); the relayed addresses are the relays' link
addresses, so the data crosses the veth link coturn to coturn, both ways.
"""

import asyncio
import socket

import pytest
from e2e.deltachat_helpers import deltachat_in_netns
from e2e.test_relay_deltachat import _account

from chatmaild.relay.netns import entered

from conftest import require

PAYLOAD = b"call media " * 100


def _line(side):
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(5)
        sock.connect(str(side.relay.config.turn_socket_path))
        return sock.makefile("rb").read().decode().strip()


class _Collect(asyncio.DatagramProtocol):
    def __init__(self):
        self.received = asyncio.Queue()

    def datagram_received(self, data, addr):
        self.received.put_nowait((data, addr))


async def _allocate(netns, credentials):
    from aioice.turn import create_turn_endpoint

    username, password = credentials
    with entered(netns):  # the client's socket lives in that relay's namespace
        return await create_turn_endpoint(_Collect, ("127.0.0.1", 3478), username, password)


async def _both_ways(a_netns, a_credentials, b_netns, b_credentials):
    turn_a, client_a = await _allocate(a_netns, a_credentials)
    turn_b, client_b = await _allocate(b_netns, b_credentials)
    try:
        relayed_a, relayed_b = turn_a.get_extra_info("sockname"), turn_b.get_extra_info("sockname")
        # each side must permit the other's relayed address before data from it arrives
        turn_b.sendto(b"hello", relayed_a)
        turn_a.sendto(PAYLOAD, relayed_b)
        got_b, from_a = await asyncio.wait_for(client_b.received.get(), 10)
        turn_b.sendto(got_b[::-1], relayed_a)
        while True:
            got_a, from_b = await asyncio.wait_for(client_a.received.get(), 10)
            if got_a != b"hello":
                break
        return relayed_a, relayed_b, from_a, from_b, got_b, got_a
    finally:
        turn_a.close()
        turn_b.close()


@pytest.fixture(scope="module")
def a_ice_servers(federation, tmp_path_factory):
    federation.require_daemons("turn", "metadata", "doveauth")
    base = tmp_path_factory.mktemp("dc-turn-a")
    side = federation.a
    with deltachat_in_netns(side.netns, base / "accounts", base / "rpc.stderr") as deltachat:
        return _account(deltachat, side).ice_servers()


def test_media_relayed_by_both_relays_coturn_across_the_link(federation, a_ice_servers):
    try:
        import aioice.turn  # noqa: F401
    except ImportError:
        require(False, "aioice (test extras)")
    a, b = federation.a, federation.b
    (ours,) = [s for s in a_ice_servers if "turn:127.0.0.1:3478" in s["urls"]]
    b_credentials = tuple(_line(b).split(":"))
    relayed_a, relayed_b, from_a, from_b, got_b, got_a = asyncio.run(
        _both_ways(a.netns, (ours["username"], ours["credential"]), b.netns, b_credentials)
    )
    assert relayed_a[0] == a.address and relayed_b[0] == b.address
    assert from_a == relayed_a and from_b == relayed_b
    assert got_b == PAYLOAD and got_a == PAYLOAD[::-1]
