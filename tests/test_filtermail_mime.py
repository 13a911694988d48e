"""The minimal MIME scanner, and garbage input that must never raise."""

import random

import pytest
from filtermail_samples import armor, crlf, encrypt, encrypted_mail, securejoin_mail

from chatmaild.filtermail.checks import (
    is_encrypted,
    is_mailer_daemon_report,
    is_securejoin,
)
from chatmaild.filtermail.mime import (
    decode_transfer_encoding,
    extract_address,
    parse_content_type,
    parse_entity,
    parse_header_block,
    split_header_block,
    split_multipart,
)
from chatmaild.filtermail.policy import Envelope, check_incoming, check_outgoing


class StandInConfig:
    passthrough_senders = ()
    passthrough_recipients = ()
    admin_contact = "postmaster@chat.example"


@pytest.mark.parametrize(
    "name, data, header_block, body",
    [
        ("crlf", b"A: 1\r\nB: 2\r\n\r\nbody\r\n", b"A: 1\r\nB: 2\r\n", b"body\r\n"),
        ("lf", b"A: 1\nB: 2\n\nbody\n", b"A: 1\nB: 2\n", b"body\n"),
        ("lf-headers-crlf-body", b"A: 1\n\nx\r\n\r\ny", b"A: 1\n", b"x\r\n\r\ny"),
        ("crlf-headers-lf-body", b"A: 1\r\n\r\nx\n\ny", b"A: 1\r\n", b"x\n\ny"),
        ("no-headers-lf", b"\nbody", b"", b"body"),
        ("no-headers-crlf", b"\r\nbody", b"", b"body"),
        ("no-body", b"A: 1\r\nB: 2\r\n", b"A: 1\r\nB: 2\r\n", b""),
        ("empty", b"", b"", b""),
    ],
)
def test_split_header_block(name, data, header_block, body):
    block, offset = split_header_block(data)
    assert block == header_block
    assert data[offset:] == body


def test_header_parsing():
    headers = parse_header_block(
        b"Subject: first\r\n"
        b"subject: second\r\n"
        b"Content-Type: multipart/mixed;\r\n"
        b'\tboundary="abc"\r\n'
        b"X-Folded: a\r\n  b\r\n\tc\r\n"
        b"not a header line\r\n"
        b"X-Spaced : value  \r\n"
        b"X-Empty:\r\n"
        b"X-Utf8: \xc3\xa4\r\n"
    )
    assert headers.get("SUBJECT") == "first"
    assert headers.get("content-type") == 'multipart/mixed;\tboundary="abc"'
    assert headers.get("x-folded") == "a  b\tc"
    assert headers.get("x-spaced") == "value"
    assert headers.get("x-empty") == ""
    assert "X-Empty" in headers
    assert headers.get("x-utf8") == "ä"
    assert headers.get("missing") is None


def test_continuation_without_field_is_ignored():
    headers = parse_header_block(b" leading continuation\r\nA: 1\r\n")
    assert headers.get("a") == "1"


@pytest.mark.parametrize(
    "name, value, mimetype, params",
    [
        ("missing", None, "text/plain", {}),
        ("simple", "text/html", "text/html", {}),
        ("case", "Multipart/Encrypted; BOUNDARY=Ab", "multipart/encrypted", {"boundary": "Ab"}),
        ("quoted", 'multipart/mixed; boundary="a b;c"', "multipart/mixed", {"boundary": "a b;c"}),
        ("escaped", r'multipart/mixed; boundary="a\"b"', "multipart/mixed", {"boundary": 'a"b'}),
        (
            "several",
            'multipart/encrypted; protocol="application/pgp-encrypted";\tboundary=x',
            "multipart/encrypted",
            {"protocol": "application/pgp-encrypted", "boundary": "x"},
        ),
        ("spaces-around-eq", "multipart/mixed; boundary = x", "multipart/mixed", {"boundary": "x"}),
        (
            "first-param-wins",
            "multipart/mixed; boundary=a; boundary=b",
            "multipart/mixed",
            {"boundary": "a"},
        ),
        ("no-slash", "garbage", "text/plain", {}),
        ("empty-subtype", "text/", "text/plain", {}),
        ("space-inside", "multipart/ mixed", "text/plain", {}),
    ],
)
def test_parse_content_type(name, value, mimetype, params):
    assert parse_content_type(value) == (mimetype, params)


def test_split_multipart_parts_and_boundaries():
    body = (
        b"preamble --b not a delimiter\r\n"
        b"--b\r\n"
        b"A: 1\r\n\r\none\r\n"
        b"--bb\r\n"  # a longer line, part of the body
        b"--b \t\r\n"  # transport padding
        b"\r\ntwo\r\n\r\n"
        b"--b--\r\n"
        b"epilogue\r\n--b\r\n"
    )
    assert split_multipart(body, "b") == [b"A: 1\r\n\r\none\r\n--bb", b"\r\ntwo\r\n"]


@pytest.mark.parametrize(
    "name, body, boundary",
    [
        ("no-boundary", b"--b\r\nx\r\n--b--\r\n", None),
        ("empty-boundary", b"--\r\nx\r\n----\r\n", ""),
        ("unterminated", b"--b\r\nx\r\n--b\r\ny\r\n", "b"),
        ("never-opened", b"hello\r\n", "b"),
        ("delimiter-mid-line", b"x--b\r\ny\r\nx--b--\r\n", "b"),
        ("overlong-boundary", b"--" + b"b" * 300 + b"--\r\n", "b" * 300),
    ],
)
def test_split_multipart_malformed(name, body, boundary):
    assert split_multipart(body, boundary) is None


def test_split_multipart_empty_and_lf():
    assert split_multipart(b"--b--\n", "b") == []
    assert split_multipart(b"--b\n\nx\n--b--", "b") == [b"\nx"]
    assert split_multipart(b"--b\n--b--\n", "b") == [b""]


@pytest.mark.parametrize(
    "name, body, cte, expected",
    [
        ("none", b"a=3D\r\n", None, b"a=3D\r\n"),
        ("7bit", b"abc", "7bit", b"abc"),
        ("8bit", b"\xc3\xa4", "8BIT", b"\xc3\xa4"),
        ("binary", b"\x00\x01", "binary", b"\x00\x01"),
        ("base64", b"aGVs\r\nbG8=\r\n", "base64", b"hello"),
        ("base64-spaces", b" aGVs bG8=", "  BASE64 ", b"hello"),
        ("qp", b"a=3Db=\r\nc\r\n", "quoted-printable", b"a=bc\r\n"),
        ("unknown", b"abc", "x-uuencode", None),
        ("base64-bad-padding", b"a", "base64", None),
    ],
)
def test_decode_transfer_encoding(name, body, cte, expected):
    assert decode_transfer_encoding(body, cte) == expected


@pytest.mark.parametrize(
    "name, value, expected",
    [
        ("bare", "alice@chat.example", "alice@chat.example"),
        ("angle", "<alice@chat.example>", "alice@chat.example"),
        ("display-name", "Alice <alice@chat.example>", "alice@chat.example"),
        ("quoted-name-with-comma", '"Smith, Alice" <alice@chat.example>', "alice@chat.example"),
        ("quoted-name-with-at", '"bob@evil.example" <alice@chat.example>', "alice@chat.example"),
        ("comment", "alice@chat.example (Alice)", "alice@chat.example"),
        ("comment-and-angle", "Alice <alice@chat.example> (work)", "alice@chat.example"),
        ("utf8-name", "Älice <alice@chat.example>", "alice@chat.example"),
        ("missing", None, None),
        ("empty", "", None),
        ("two-addresses", "alice@chat.example, bob@chat.example", None),
        ("two-angle-addresses", "<alice@chat.example> <bob@chat.example>", None),
        ("name-only", '"Alice"', None),
    ],
)
def test_extract_address(name, value, expected):
    assert extract_address(value) == expected


def test_top_level_entity():
    entity = parse_entity(b'Content-Type: multipart/mixed; boundary="x"\r\n\r\n--x--\r\n')
    assert entity.content_type == "multipart/mixed"
    assert entity.param("boundary") == "x"
    assert entity.is_multipart
    assert entity.body == b"--x--\r\n"


# --- garbage never raises and is never encrypted ---


def _all_predicates(message: bytes):
    env = Envelope("alice@chat.example", ["bob@chat.example"])
    results = [
        is_encrypted(message, allow_armor_header=False),
        is_encrypted(message, allow_armor_header=True),
        is_securejoin(message),
        is_mailer_daemon_report(message),
    ]
    check_outgoing(env, message, StandInConfig())
    check_incoming(env, message, StandInConfig(), lambda addr: True)
    return results


GARBAGE = {
    "empty": b"",
    "crlf-only": b"\r\n" * 10,
    "nul-bytes": b"\x00" * 1000,
    "header-without-colon": b"garbage\r\n\r\nbody",
    "missing-boundary": b"Content-Type: multipart/encrypted\r\n\r\n--x\r\n\r\n--x--\r\n",
    "unterminated-multipart": (
        b'Content-Type: multipart/encrypted; boundary="x"\r\n\r\n--x\r\nA: b\r\n'
    ),
    "huge-header-line": b"Subject: " + b"x" * 2_000_000 + b"\r\n\r\nbody",
    "huge-boundary": b'Content-Type: multipart/encrypted; boundary="'
    + b"b" * 100_000
    + b'"\r\n\r\n',
    "only-boundaries": b'Content-Type: multipart/encrypted; boundary="x"\r\n\r\n'
    + b"--x\r\n" * 1000,
    "invalid-utf8-headers": (
        b"From: \xff\xfe <\xff@x>\r\nContent-Type: \xff/\xfe; boundary=\xff\r\n\r\n"
    ),
    "unbalanced-quotes": b'Content-Type: multipart/encrypted; boundary="x\r\n\r\n--x\r\n',
    "from-garbage": b"From: <<<@@@>>> (((\r\n\r\n",
}


@pytest.mark.parametrize("name", sorted(GARBAGE))
def test_garbage_is_not_encrypted(name):
    assert _all_predicates(GARBAGE[name]) == [False, False, False, False]


def test_random_bytes_fuzz():
    rng = random.Random(20240601)
    for _ in range(300):
        message = rng.randbytes(rng.randrange(0, 3000))
        assert _all_predicates(message) == [False, False, False, False]


def test_mutated_mail_fuzz():
    """Byte flips, cuts and insertions in valid mails: any verdict, but never an exception."""
    rng = random.Random(42)
    seeds = [
        encrypted_mail(armor(encrypt(("x25519",), 300))),
        encrypted_mail(armor(encrypt(("x25519",), 300)), cte="base64", line_ends="lf"),
        crlf(securejoin_mail()),
    ]
    tokens = [
        b"\r\n",
        b"\n",
        b"--",
        b'"',
        b";",
        b":",
        b"=",
        b"\r\n\r\n",
        b"-----",
        b"\xd2",
        b"\x00",
    ]
    for _ in range(1500):
        message = bytearray(rng.choice(seeds))
        for _ in range(rng.randrange(1, 4)):
            pos = rng.randrange(len(message))
            op = rng.randrange(4)
            if op == 0:
                message[pos] = rng.randrange(256)
            elif op == 1:
                del message[pos : pos + rng.randrange(1, 200)]
            elif op == 2:
                message[pos:pos] = rng.choice(tokens)
            else:
                del message[pos:]
        _all_predicates(bytes(message))
