"""The sans-I/O dict codec: escaping, parsing, framing. No sockets."""

import pytest

from chatmaild.dictproxy import proto
from chatmaild.dictproxy.proto import (
    AtomicInc,
    Begin,
    Commit,
    Hello,
    HideLogValues,
    Iterate,
    LineReader,
    Lookup,
    Malformed,
    Rollback,
    Set,
    Timestamp,
    Unset,
)

ROUND_TRIP = [
    "",
    "plain",
    "\x01",
    "\x01\x01",
    "\x011",
    "a\tb",
    "\t",
    "cr\rlf\n",
    "\r\n",
    "nul\x00",
    "\x00\x01\t\r\n",
    "pa\"ss\\wo/rd'",
    "pässwörd ✓",
    "\x01t literal",
]


@pytest.mark.parametrize("text", ROUND_TRIP)
def test_escape_round_trip(text):
    escaped = proto.escape(text)
    for raw in "\t\r\n\x00":
        assert raw not in escaped
    assert proto.unescape(escaped) == text


@pytest.mark.parametrize(
    "text, wire",
    [
        ("\x01", "\x011"),
        ("\t", "\x01t"),
        ("\r", "\x01r"),
        ("\n", "\x01n"),
        ("\x00", "\x010"),
        ("a\\b\"c'd/e", "a\\b\"c'd/e"),
    ],
)
def test_escape_bytes(text, wire):
    assert proto.escape(text) == wire


@pytest.mark.parametrize(
    "wire, text",
    [
        ("\x01x", "x"),  # unknown escape: the char stands for itself
        ("ab\x01", "ab"),  # a trailing lone escape byte is dropped
        ("\x01\x01", "\x01"),
        ("\x011\x01t\x01r\x01n\x010", "\x01\t\r\n\x00"),
    ],
)
def test_unescape_like_dovecot(wire, text):
    assert proto.unescape(wire) == text


PARSE_CASES = [
    ("H3\t2\t0\t\tauth", Hello("3", "2", "0", "", "auth")),
    ("H3", Hello("3", "", "", "", "")),
    ("Lshared/userdb/a@x\ta@x", Lookup("shared/userdb/a@x", "a@x")),
    ('Lshared/passdb/p\x01tw"a@x\ta@x', Lookup('shared/passdb/p\tw"a@x', "a@x")),
    ("Lshared/k", Lookup("shared/k", "")),
    ("Lshared/k\t", Lookup("shared/k", "")),
    ("I0\t0\tshared/userdb/\t", Iterate(0, 0, "shared/userdb/", "")),
    ("I9\t5\tpriv/g/\tu@x", Iterate(9, 5, "priv/g/", "u@x")),
    ("B1\tu@x", Begin("1", "u@x")),
    ("B7", Begin("7", "")),
    ("S1\tshared/k\tv\x01n", Set("1", "shared/k", "v\n")),
    ("S1\tpriv/g/messagenew\t", Set("1", "priv/g/messagenew", "")),
    ("U1\tpriv/g/devicetoken", Unset("1", "priv/g/devicetoken")),
    ("A1\tshared/n\t-5", AtomicInc("1", "shared/n", -5)),
    ("T1\t1700000000\t5", Timestamp("1", 1700000000, 5)),
    ("V1\tyes", HideLogValues("1", True)),
    ("R1", Rollback("1")),
    ("C1", Commit("1", False)),
    ("D1", Commit("1", True)),
]


@pytest.mark.parametrize("line, request_", PARSE_CASES)
def test_parse(line, request_):
    assert proto.parse_line(line) == request_


MALFORMED = [
    # line, expected reply (None: the client expects none)
    ("L", "F"),
    ("L\tuser", "F"),
    ("I", "F"),
    ("Ix\t0\tshared/", "F"),
    ("I0\t0", "F"),
    ("C", "F\t"),
    ("D", "F\t"),
    ("S1\tkey", None),
    ("S\tkey\tvalue", None),
    ("Ax\tk\tnotanumber", None),
    ("T1\tx\ty", None),
    ("B", None),
    ("Zwhatever", None),
    ("", None),
    ("lshared/lowercase", None),
]


@pytest.mark.parametrize("line, reply_start", MALFORMED)
def test_malformed(line, reply_start):
    request = proto.parse_line(line)
    assert type(request) is Malformed
    if reply_start is None:
        assert request.reply is None
    else:
        assert request.reply.startswith(reply_start)
        assert request.reply.endswith("\n") and request.reply.count("\n") == 1


STREAM = (
    b"H3\t2\t0\t\tauth\nLshared/userdb/a@x\ta@x\nB1\ta@x\nS1\tshared/last-login/a@x\t17\nC1\n"
) + ('Lshared/passdb/p\xe4ss\x01t"a@x\ta@x\n'.encode())


def _feed_all(reader, chunks):
    out = []
    for chunk in chunks:
        out.extend(reader.feed(chunk))
    return out


def test_reader_whole_bytewise_and_trailing():
    whole = _feed_all(LineReader(), [STREAM])
    assert [type(r) for r in whole] == [Hello, Lookup, Begin, Set, Commit, Lookup]
    assert whole[-1] == Lookup('shared/passdb/päss\t"a@x', "a@x")
    bytewise = _feed_all(LineReader(), [STREAM[i : i + 1] for i in range(len(STREAM))])
    assert bytewise == whole
    reader = LineReader()
    partial = _feed_all(reader, [STREAM + b"Lshared/incompl"])
    assert partial == whole
    assert reader.buffered == len(b"Lshared/incompl")
    assert reader.feed(b"ete\t\n") == [Lookup("shared/incomplete", "")]


def test_reader_crlf_tolerated():
    assert LineReader().feed(b"Lshared/k\tu\r\n") == [Lookup("shared/k", "u")]


def test_reader_non_utf8_survives():
    (request,) = LineReader().feed(b'Lshared/passdb/\xff\xfe"a@x\ta@x\n')
    assert proto.encode_reply(request.key) == b'shared/passdb/\xff\xfe"a@x'


@pytest.mark.parametrize("chunk", [1000, 65536, 300_000])
def test_reader_long_line_is_bounded_and_answered(chunk):
    reader = LineReader()
    line = b"L" + b"x" * 100_000 + b"\tu\n" + b"Lshared/ok\tu\n"
    out = []
    for i in range(0, len(line), chunk):
        out.extend(reader.feed(line[i : i + chunk]))
        assert reader.buffered <= proto.MAX_LINE
    assert len(out) == 2
    assert type(out[0]) is Malformed and out[0].reply.startswith("F")
    assert out[1] == Lookup("shared/ok", "u")


def test_reader_long_line_without_reply():
    reader = LineReader()
    out = reader.feed(b"S1\t" + b"k" * 70_000)
    out += reader.feed(b"\tv\nC1\n")
    assert [type(r) for r in out] == [Malformed, Commit]
    assert out[0].reply is None


def test_line_at_cap_is_accepted():
    key = "shared/" + "k" * (proto.MAX_LINE - len("Lshared/"))
    line = ("L" + key).encode()
    assert len(line) == proto.MAX_LINE
    assert LineReader().feed(line + b"\n") == [Lookup(key, "")]


def test_replies():
    assert proto.reply_lookup(None) == "N\n"
    assert proto.reply_lookup("a\tb\nc") == "Oa\x01tb\x01nc\n"
    assert proto.reply_iter_row("shared/userdb/a@x", "") == "Oshared/userdb/a@x\t\n"
    assert proto.reply_commit(True) == "O\n"
    assert proto.reply_commit(False, "no\tway") == "F\tno\x01tway\n"
