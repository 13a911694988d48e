"""The shared .eml corpus of tests/data/filtermail through both directions' decisions.

The files are small generated samples (alice@chat.example -> bob@other.example unless the
table says otherwise); the server tests may reuse them.
"""

from pathlib import Path

import pytest

from chatmaild.filtermail.policy import Envelope, check_incoming, check_outgoing

CORPUS = Path(__file__).parent / "data" / "filtermail"
ALICE, BOB = "alice@chat.example", "bob@other.example"
REJECT = "523 Encryption Needed: Invalid Unencrypted Mail"


class NoPassthrough:
    passthrough_senders = ()
    passthrough_recipients = ()
    admin_contact = "postmaster@chat.example"


# file -> (recipients, outgoing reply, incoming reply with an enforcing recipient)
EXPECTED = {
    "encrypted.eml": ([BOB], None, None),
    "encrypted-base64-part.eml": ([BOB], None, None),
    "encrypted-partial-lengths.eml": ([BOB], None, None),
    "encrypted-armor-version-header.eml": ([BOB], REJECT, None),
    "encrypted-text-after-armor.eml": ([BOB], REJECT, REJECT),
    "encrypted-extra-part.eml": ([BOB], REJECT, REJECT),
    "securejoin-vc-request.eml": ([BOB], None, None),
    "plain.eml": ([BOB], REJECT, REJECT),
    "autocrypt-setup-message.eml": ([ALICE], None, REJECT),
    "mailer-daemon-report.eml": (
        [ALICE],
        f"500 Invalid FROM <MAILER-DAEMON@other.example> for <{ALICE}>",
        None,
    ),
}


def test_corpus_is_complete():
    assert sorted(p.name for p in CORPUS.glob("*.eml")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_corpus_sample(name):
    rcpts, outgoing, incoming = EXPECTED[name]
    message = (CORPUS / name).read_bytes()
    env = Envelope(ALICE, rcpts)
    verdict, _ = check_outgoing(env, message, NoPassthrough())
    assert (verdict.line() if verdict else None) == outgoing
    verdict, _ = check_incoming(env, message, NoPassthrough(), lambda addr: True)
    assert (verdict.line() if verdict else None) == incoming
