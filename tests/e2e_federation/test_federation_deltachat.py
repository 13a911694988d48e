"""The real Delta Chat core across two relays: secure-join, padlocked messages both ways,
and a group with members on both relays.

One deltachat-rpc-server per relay, under `ip netns exec` of that relay's namespace, so
each account reaches its own relay on loopback (as a phone reaches its relay) and mail
between the accounts crosses the veth link relay to relay. Messages are captured from the
recipient's Maildir (with the recipient's IO stopped, before the core fetches and deletes
them) and their DKIM signatures are verified with dkimpy against the test zones.
"""

import pytest
from e2e.deltachat_helpers import chat_with, deltachat_per_side, secure_join
from e2e.test_relay_deltachat import (
    _account,
    _all_receive_padlocked,
    _group,
    _send_and_capture,
)

DAEMONS = ("doveauth", "metadata", "lastlogin", "filtermail-outgoing", "filtermail-incoming")


@pytest.fixture(scope="module")
def dc(federation, tmp_path_factory):
    """{side: DeltaChat} with one RPC server inside each relay's namespace."""
    federation.require_daemons(*DAEMONS)
    base = tmp_path_factory.mktemp("dc-federation")
    with deltachat_per_side((federation.a, federation.b), base) as dc:
        yield dc


def _assert_signed_by_sender(receiver_side, captured, sender_domain):
    from chatmaild.filtermail.checks import is_encrypted

    assert captured
    for data in captured:
        assert is_encrypted(data, allow_armor_header=True)
        assert receiver_side.dkim_verified_domain(data) == sender_domain


def test_securejoin_and_padlocked_messages_each_way(federation, dc):
    a, b = federation.a, federation.b
    alice, bob = _account(dc[a], a), _account(dc[b], b)

    secure_join(bob, alice)

    to_bob = _send_and_capture(b, lambda: chat_with(alice, bob.addr).send_text("hello bob"), bob)
    msg = bob.wait_for_incoming_msg().get_snapshot()
    assert msg.text == "hello bob" and msg.show_padlock

    to_alice = _send_and_capture(
        a, lambda: chat_with(bob, alice.addr).send_text("hello alice"), alice
    )
    msg = alice.wait_for_incoming_msg().get_snapshot()
    assert msg.text == "hello alice" and msg.show_padlock

    _assert_signed_by_sender(b, to_bob, a.domain)
    _assert_signed_by_sender(a, to_alice, b.domain)


def test_group_with_members_on_both_relays(federation, dc):
    a, b = federation.a, federation.b
    alice, carol = _account(dc[a], a), _account(dc[a], a)
    bob = _account(dc[b], b)

    group = _group(alice, (bob, carol), "two relays")
    to_bob = _send_and_capture(b, lambda: group.send_text("hello group"), bob)
    chats = _all_receive_padlocked((bob, carol), "hello group")
    to_alice = _send_and_capture(a, lambda: chats[bob.addr].send_text("hello from bob"), alice)
    _all_receive_padlocked((alice, carol), "hello from bob")

    _assert_signed_by_sender(b, to_bob, a.domain)
    _assert_signed_by_sender(a, to_alice, b.domain)
