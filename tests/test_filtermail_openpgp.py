"""The armor parser and the OpenPGP packet walk (SPEC 4.2 points 3-4), PGPy as the oracle."""

import pytest
from filtermail_samples import (
    PASSWORD,
    armor,
    crlf,
    decrypts,
    encrypt,
    join_packets,
    new_header,
    packets,
    partial_frame,
    reframe_seipd_partial,
)
from pgpy import PGPMessage

from chatmaild.filtermail.openpgp import (
    decode_armored_message,
    is_encrypted_armor,
    is_encrypted_packet_sequence,
)

BIG = 2_500_000

# name -> (recipient key kinds, payload size, password)
ENCRYPTED_CASES = {
    "rsa-one-recipient": (("rsa",), 100, None),
    "p256-one-recipient": (("p256",), 100, None),
    "x25519-one-recipient": (("x25519",), 100, None),
    "several-recipients": (("rsa", "p256", "x25519"), 3000, None),
    "password-only": ((), 100, PASSWORD),
    "password-and-keys": (("x25519", "rsa"), 100, PASSWORD),
    "two-octet-seipd-length": (("x25519",), 6000, None),
    "five-octet-seipd-length": (("x25519",), 70_000, None),
    "multi-megabyte": (("x25519", "p256"), BIG, None),
}


@pytest.fixture(scope="session", params=sorted(ENCRYPTED_CASES))
def encrypted_case(request):
    kinds, size, password = ENCRYPTED_CASES[request.param]
    return kinds, size, password, encrypt(kinds, size, password)


def test_pgpy_generated_message_is_accepted(encrypted_case):
    kinds, size, password, binary = encrypted_case
    assert decrypts(binary, size, kinds, password)
    assert is_encrypted_packet_sequence(binary)
    assert is_encrypted_armor(armor(binary), allow_armor_header=False)
    assert is_encrypted_armor(crlf(armor(binary)), allow_armor_header=False)


def test_pgpy_own_armor_is_accepted(encrypted_case):
    binary = encrypted_case[3]
    armored = str(PGPMessage.from_blob(binary)).encode()
    assert decode_armored_message(armored, allow_armor_header=False) == binary
    assert is_encrypted_armor(armored, allow_armor_header=False)


@pytest.mark.parametrize(
    "name, chunk_exponent, first_exponent",
    [
        ("chunks-512", 9, None),
        ("chunks-1k", 10, None),
        ("first-64k-then-512", 9, 16),
        ("chunks-1M", 20, None),
    ],
)
def test_partial_body_lengths_accepted(name, chunk_exponent, first_exponent):
    size = BIG if chunk_exponent >= 16 or first_exponent else 5000
    kinds = ("x25519",)
    binary = encrypt(kinds, size)
    reframed = reframe_seipd_partial(binary, chunk_exponent, first_exponent)
    assert reframed != binary
    if size < BIG:  # PGPy is the oracle; its parser is slow on megabytes
        assert decrypts(reframed, size, kinds)
    assert is_encrypted_packet_sequence(reframed)
    assert is_encrypted_armor(armor(reframed), allow_armor_header=False)


def _pkts():
    return packets(encrypt(("rsa", "x25519"), 2000, PASSWORD))


def _literal(data=b"hi"):
    return (11, b"b\x00\x00\x00\x00\x00" + data)


def _compressed():
    return (8, b"\x00" + new_header(11, 8) + _literal()[1])


def _signature():
    return (2, b"\x04\x00\x01\x08" + bytes(20))


def _onepass():
    return (4, b"\x03\x00\x08\x01" + bytes(8) + b"\x01")


def _seipd(pkts):
    return [p for p in pkts if p[0] == 18][0]


def _seipd_partial(first_exponent, tag=18):
    body = _seipd(_pkts())[1]
    return partial_frame(tag, body, 9, first_exponent)


NEAR_MISSES = {
    "empty": lambda: b"",
    "session-keys-only": lambda: join_packets([p for p in _pkts() if p[0] != 18]),
    "literal-only": lambda: join_packets([_literal()]),
    "literal-before-seipd": lambda: join_packets([_literal(), *_pkts()]),
    "literal-after-seipd": lambda: join_packets([*_pkts(), _literal()]),
    "compressed-before-seipd": lambda: join_packets([_compressed(), *_pkts()]),
    "compressed-after-seipd": lambda: join_packets([*_pkts(), _compressed()]),
    "signature-before-seipd": lambda: join_packets([_signature(), *_pkts()]),
    "signature-after-seipd": lambda: join_packets([*_pkts(), _signature()]),
    "one-pass-signature-before": lambda: join_packets([_onepass(), *_pkts()]),
    "two-seipd": lambda: join_packets([*_pkts(), _seipd(_pkts())]),
    "pkesk-after-seipd": lambda: join_packets([*_pkts(), _pkts()[1]]),
    "seipd-only-twice": lambda: join_packets([_seipd(_pkts()), _seipd(_pkts())]),
    "aead-tag-20-instead-of-seipd": lambda: join_packets(
        [p if p[0] != 18 else (20, p[1]) for p in _pkts()]
    ),
    "sed-tag-9-instead-of-seipd": lambda: join_packets(
        [p if p[0] != 18 else (9, p[1]) for p in _pkts()]
    ),
    "old-format-pkesk": lambda: join_packets(_pkts(), old_format_tags=(1,)),
    "old-format-skesk": lambda: join_packets(_pkts(), old_format_tags=(3,)),
    "old-format-seipd": lambda: join_packets(_pkts(), old_format_tags=(18,)),
    "trailing-zero-byte": lambda: join_packets(_pkts()) + b"\x00",
    "trailing-garbage": lambda: join_packets(_pkts()) + b"garbage",
    "trailing-new-header-byte": lambda: join_packets(_pkts()) + b"\xc1",
    "partial-first-chunk-256": lambda: _seipd_partial(8),
    "partial-first-chunk-1": lambda: _seipd_partial(0),
    "partial-length-on-pkesk": lambda: partial_frame(1, bytes(600), 9) + join_packets(_pkts()),
    "partial-without-final-chunk": lambda: b"\xd2\xe9" + bytes(512) + b"\xe9" + bytes(512),
    "partial-ends-after-chunk": lambda: b"\xd2\xe9" + bytes(512),
    "tag-0-reserved": lambda: b"\xc0\x01\x00" + join_packets(_pkts()),
}


@pytest.mark.parametrize("name", sorted(NEAR_MISSES))
def test_packet_near_miss_refused(name):
    data = NEAR_MISSES[name]()
    assert not is_encrypted_packet_sequence(data)
    assert not is_encrypted_armor(armor(data), allow_armor_header=True)


def test_every_truncation_refused():
    binary = join_packets(_pkts())
    assert is_encrypted_packet_sequence(binary)
    for cut in range(len(binary)):
        assert not is_encrypted_packet_sequence(binary[:cut]), cut


def test_every_truncation_of_partial_framing_refused():
    binary = reframe_seipd_partial(encrypt(("x25519",), 3000), 9)
    assert is_encrypted_packet_sequence(binary)
    for cut in range(len(binary)):
        assert not is_encrypted_packet_sequence(binary[:cut]), cut


@pytest.mark.parametrize(
    "name, data",
    [
        ("lone-new-header", b"\xd2"),
        ("two-octet-length-cut", b"\xd2\xc5"),
        ("five-octet-length-cut", b"\xd2\xff\x00\x00"),
        ("five-octet-huge-length", b"\xd2\xff\xff\xff\xff\xff" + bytes(10)),
        ("partial-chunk-beyond-end", b"\xd2\xe9" + bytes(100)),
    ],
)
def test_truncated_headers_refused(name, data):
    assert not is_encrypted_packet_sequence(data)


def test_minimal_sequences():
    assert is_encrypted_packet_sequence(b"\xd2\x00")
    assert is_encrypted_packet_sequence(b"\xc1\x01\x00\xc3\x00\xd2\x01\x01")
    assert is_encrypted_packet_sequence(b"\xd2\xe9" + bytes(512) + b"\x00")


# --- armor ---

SMALL = encrypt(("x25519",), 100)
ARMOR_OK = armor(SMALL)
BEGIN, END = b"-----BEGIN PGP MESSAGE-----", b"-----END PGP MESSAGE-----"


def _body_lines():
    return ARMOR_OK.split(b"\n")[2:-3]  # base64 lines without checksum and END


def _edit(old, new, count=1):
    assert old in ARMOR_OK
    return ARMOR_OK.replace(old, new, count)


ARMOR_ACCEPTED = {
    "lf": ARMOR_OK,
    "crlf": crlf(ARMOR_OK),
    "no-checksum": armor(SMALL, checksum=False),
    "long-lines": armor(SMALL, line_length=76),
    "one-line": armor(SMALL, line_length=10_000),
    "no-final-newline": ARMOR_OK.rstrip(b"\n"),
    "empty-lines-after-end": ARMOR_OK + b"\n\n\r\n",
}


@pytest.mark.parametrize("name", sorted(ARMOR_ACCEPTED))
@pytest.mark.parametrize("allow_header", [False, True])
def test_armor_accepted(name, allow_header):
    text = ARMOR_ACCEPTED[name]
    assert decode_armored_message(text, allow_header) == SMALL
    assert is_encrypted_armor(text, allow_header)


def test_version_header_only_allowed_incoming():
    text = armor(SMALL, headers=("Version: PGPy v0.6.0",))
    assert not is_encrypted_armor(text, allow_armor_header=False)
    assert is_encrypted_armor(text, allow_armor_header=True)
    assert is_encrypted_armor(crlf(text), allow_armor_header=True)


ARMOR_REFUSED = {
    "comment-header": armor(SMALL, headers=("Comment: hello",)),
    "two-headers": armor(SMALL, headers=("Version: 1", "Comment: x")),
    "version-header-without-empty-line": _edit(BEGIN + b"\n\n", BEGIN + b"\nVersion: x\n"),
    "missing-empty-line": _edit(BEGIN + b"\n\n", BEGIN + b"\n"),
    "two-empty-lines": _edit(BEGIN + b"\n\n", BEGIN + b"\n\n\n"),
    "empty-line-inside": _edit(_body_lines()[0] + b"\n", _body_lines()[0] + b"\n\n"),
    "text-after-end": ARMOR_OK + b"hello\n",
    "second-message-after-end": ARMOR_OK + ARMOR_OK,
    "space-after-end": ARMOR_OK.rstrip(b"\n") + b" \n",
    "text-before-begin": b"hello\n" + ARMOR_OK,
    "leading-empty-line": b"\n" + ARMOR_OK,
    "pgp-signature-block": ARMOR_OK.replace(b"PGP MESSAGE", b"PGP SIGNATURE"),
    "public-key-block": ARMOR_OK.replace(b"PGP MESSAGE", b"PGP PUBLIC KEY BLOCK"),
    "missing-end": ARMOR_OK.replace(END + b"\n", b""),
    "end-not-on-own-line": _edit(b"\n" + END, END),
    "bad-base64-char": _edit(_body_lines()[0][:10], _body_lines()[0][:9] + b"!"),
    "base64-char-removed": _edit(
        _body_lines()[0][5:6] + _body_lines()[0][6:20], _body_lines()[0][6:20]
    ),
    "space-in-base64": _edit(
        _body_lines()[0][:10], _body_lines()[0][:5] + b" " + _body_lines()[0][5:10]
    ),
    "padding-in-middle": _edit(_body_lines()[0] + b"\n", _body_lines()[0][:-2] + b"==\n"),
    "bad-checksum-length": _edit(b"\n=", b"\n=AA"),
    "bad-checksum-chars": ARMOR_OK.replace(ARMOR_OK.split(b"\n")[-3], b"=!!!!"),
    "checksum-only": BEGIN + b"\n\n=AAAA\n" + END + b"\n",
    "no-data": BEGIN + b"\n\n" + END + b"\n",
    "bare-cr-line-ends": ARMOR_OK.replace(b"\n", b"\r"),
    "cr-inside-line": _edit(
        _body_lines()[0][:10], _body_lines()[0][:5] + b"\r" + _body_lines()[0][5:10]
    ),
    "valid-base64-not-encrypted": armor(b"\xcb\x03b\x00\x00"),
    "empty": b"",
}


@pytest.mark.parametrize("name", sorted(ARMOR_REFUSED))
@pytest.mark.parametrize("allow_header", [False, True])
def test_armor_refused(name, allow_header):
    assert not is_encrypted_armor(ARMOR_REFUSED[name], allow_header)
    assert not is_encrypted_armor(crlf(ARMOR_REFUSED[name]), allow_header)


def test_sample_armor_matches_pgpy():
    """The test helper's armor (checksum included) is what PGPy writes."""
    binary = encrypt(("rsa",), 3000)
    assert armor(binary) == str(PGPMessage.from_blob(binary)).encode().replace(b"\r\n", b"\n")
