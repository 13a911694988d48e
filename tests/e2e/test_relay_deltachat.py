"""The real Delta Chat core (deltachat-rpc-server) against the relay (issue 6).

The RPC server runs under `ip netns exec`, so it reaches the relay at chat.example
(mapped to 127.0.0.1 in the namespace's hosts file). Accounts use explicit servers and
accept the self-signed certificate, as a user would be told by `python -m chatmaild.relay up`.
"""

import os
from pathlib import Path

import pytest

from .deltachat_helpers import chat_with, dc_account, deltachat_in_netns, secure_join
from .helpers import random_local_part, read_stored, wait_until, wire_form

DC_FIXTURES = Path(__file__).resolve().parent.parent / "data" / "deltachat"


@pytest.fixture(scope="module")
def dc(relay, tmp_path_factory):
    relay.require_daemons(
        "doveauth", "metadata", "lastlogin", "filtermail-outgoing", "filtermail-incoming"
    )
    accounts_dir = tmp_path_factory.mktemp("dc-accounts")
    with deltachat_in_netns(
        relay.netns, accounts_dir / "accounts", accounts_dir.parent / "rpc-server.stderr"
    ) as deltachat:
        yield deltachat, relay


def _account(deltachat, relay):
    local_part = random_local_part()
    return dc_account(deltachat, relay.domain, local_part, displayname=local_part)


def _stored_messages(relay, addr):
    box = relay.user_dir(addr)
    subdirs = [box / sub for sub in ("new", "cur") if (box / sub).is_dir()]
    return {p.name: p for sub in subdirs for p in sub.iterdir()}


def _send_and_capture(relay, send, receiver):
    """Call send() with the receiver's IO stopped; return the stored copies that arrived."""
    receiver.stop_io()
    before = set(_stored_messages(relay, receiver.addr))
    send()
    new = wait_until(
        lambda: set(_stored_messages(relay, receiver.addr)) - before,
        f"delivery to {receiver.addr}",
    )
    stored = _stored_messages(relay, receiver.addr)
    captured = [read_stored(stored[name]) for name in sorted(new)]
    receiver.start_io()
    return captured


def _wait_for_text(account, text):
    """The next incoming message with `text` (group notices may come first)."""
    while True:
        msg = account.wait_for_incoming_msg().get_snapshot()
        if msg.text == text:
            return msg


def _group(owner, joiners, name):
    """A group of `owner` that each of `joiners` joined by secure-join (QR code)."""
    group = owner.create_group(name)
    for joiner in joiners:
        secure_join(joiner, owner, group.get_qr_code())
    assert group.num_contacts() == len(joiners) + 1
    return group


def _all_receive_padlocked(members, text):
    """{addr: chat} where each member got `text` with the padlock."""
    chats = {}
    for member in members:
        msg = _wait_for_text(member, text)
        assert msg.show_padlock
        chats[member.addr] = member.get_chat_by_id(msg.chat_id)
    return chats


def _save_fixture(name, data):
    """With CHATMAILD_SAVE_DC_FIXTURES=1 the captured messages refresh tests/data/deltachat."""
    if os.environ.get("CHATMAILD_SAVE_DC_FIXTURES"):
        DC_FIXTURES.mkdir(parents=True, exist_ok=True)
        (DC_FIXTURES / name).write_bytes(wire_form(data))


def test_securejoin_and_encrypted_messages_each_way(dc, tmp_path):
    from chatmaild.filtermail.checks import is_encrypted

    deltachat, relay = dc
    alice, bob = _account(deltachat, relay), _account(deltachat, relay)

    secure_join(bob, alice)

    chat = chat_with(alice, bob.addr)
    captured = _send_and_capture(relay, lambda: chat.send_text("hello bob"), bob)
    msg = bob.wait_for_incoming_msg().get_snapshot()
    assert msg.text == "hello bob"
    assert msg.show_padlock

    attachment = tmp_path / "attachment.bin"
    attachment.write_bytes(os.urandom(40_000))
    captured += _send_and_capture(relay, lambda: chat.send_file(str(attachment)), bob)
    msg = bob.wait_for_incoming_msg().get_snapshot()
    assert msg.show_padlock
    assert Path(msg.file).read_bytes() == attachment.read_bytes()

    chat_with(bob, alice.addr).send_text("hello alice")
    msg = alice.wait_for_incoming_msg().get_snapshot()
    assert msg.text == "hello alice"
    assert msg.show_padlock

    assert captured
    for i, data in enumerate(captured):
        assert is_encrypted(data, allow_armor_header=True)
        _save_fixture(f"1to1-{i}.eml", data)


def test_group_of_three_every_member_receives(dc):
    from chatmaild.filtermail.checks import is_encrypted

    deltachat, relay = dc
    alice, bob, carol = (_account(deltachat, relay) for _ in range(3))

    group = _group(alice, (bob, carol), "e2e group")
    captured = _send_and_capture(relay, lambda: group.send_text("hello group"), carol)
    chats = _all_receive_padlocked((bob, carol), "hello group")
    chats[bob.addr].send_text("hello from bob")
    _all_receive_padlocked((alice, carol), "hello from bob")

    for i, data in enumerate(captured):
        assert is_encrypted(data, allow_armor_header=True)
        _save_fixture(f"group-{i}.eml", data)
