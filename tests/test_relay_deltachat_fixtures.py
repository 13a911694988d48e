"""Real messages sent by Delta Chat 2.65.0 through the test relay pass filtermail's checks.

The files under tests/data/deltachat/ were captured from a recipient's Maildir by
tests/e2e/test_relay_deltachat.py (CHATMAILD_SAVE_DC_FIXTURES=1 refreshes them): the exact
bytes the client submitted, as stored (CRLF restored, LMTP's Return-Path/Delivered-To
removed; Postfix's Received line was already dropped by the relay's header cleanup).
"""

import base64
import re
from pathlib import Path

import pytest

from chatmaild.filtermail.checks import is_encrypted
from chatmaild.filtermail.policy import Envelope, check_incoming, check_outgoing

FIXTURES = sorted((Path(__file__).parent / "data" / "deltachat").glob("*.eml"))
ARMOR = re.compile(rb"-----BEGIN PGP MESSAGE-----\r?\n\r?\n(.*?)-----END PGP MESSAGE-----", re.S)


def _sender(data):
    return re.search(rb"^From: .*?<([^>]+)>", data, re.M).group(1).decode()


def test_there_are_fixtures():
    assert len(FIXTURES) >= 3


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.name)
def test_delta_chat_message_is_encrypted(path):
    data = path.read_bytes()
    assert is_encrypted(data, allow_armor_header=False)
    assert is_encrypted(data, allow_armor_header=True)


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.name)
def test_delta_chat_message_passes_both_filters(path, ini_path):
    from chatmaild.config import read_config

    config = read_config(ini_path)
    data = path.read_bytes()
    sender, rcpt = _sender(data), "recipient@chat.example"
    verdict, _ = check_outgoing(Envelope(sender, [rcpt]), data, config)
    assert verdict is None
    verdict, _ = check_incoming(Envelope(sender, [rcpt]), data, config, lambda _: True)
    assert verdict is None


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.name)
def test_truncated_payload_is_not_encrypted(path):
    """The same message with its last OpenPGP bytes cut off must fail the packet walk."""
    data = path.read_bytes()
    match = ARMOR.search(data)
    payload = base64.b64decode(b"".join(match.group(1).split()))
    cut = base64.encodebytes(payload[:-7]).replace(b"\n", b"\r\n")
    mangled = data[: match.start(1)] + cut + data[match.end(1) :]
    assert not is_encrypted(mangled, allow_armor_header=True)
