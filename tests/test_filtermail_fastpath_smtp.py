"""Fast paths of the DATA reader and of reinjection dot stuffing: same bytes, same refusals.

The reader looks for a dot first and falls back to the CRLF "." search in text full of
dots; the bare-LF check is one regex scan; dot stuffing is skipped when the reader saw no
line-start dot. Each is checked against a plain reference over many chunkings.
"""

import random

import pytest
from test_smtp_proto import drive, messages, new_conn

from chatmaild.smtp.proto import MessageRefused
from chatmaild.smtp.reinject import dot_stuff

ENVELOPE = b"EHLO c\r\nMAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\n"


def reference_stuff(data: bytes) -> bytes:
    """RFC 5321 4.5.2 the slow way: every line starting with "." gets one more."""
    lines = data.split(b"\r\n")
    return b"\r\n".join(b"." + line if line.startswith(b".") else line for line in lines)


def sample_bodies():
    rng = random.Random(5)
    base64ish = (b"QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo0NTY3ODkrLw" * 2)[:76]
    dotty = b"a.b.c. d.e. www.example.org ... 1.2.3.4 .x."
    yield "empty", b""
    yield "base64", b"Subject: x\r\n\r\n" + (base64ish + b"\r\n") * 3000
    yield "dots-inside-lines", (dotty + b"\r\n") * 2000
    yield (
        "dot-lines",
        b"".join(
            (b"." * rng.randrange(0, 4) + dotty[: rng.randrange(0, 40)] + b"\r\n")
            for _ in range(3000)
        ),
    )
    yield "first-line-dot", b".starts\r\n..two\r\nmid.dle\r\n.\r\n"
    yield "bare-cr", b"a\rb\r\n.\rc\r\n"


@pytest.mark.parametrize("name, data", list(sample_bodies()))
def test_data_reader_round_trip_and_dot_count(name, data):
    stuffed = reference_stuff(data)
    wire = ENVELOPE + stuffed + (b"" if stuffed.endswith(b"\r\n") or not stuffed else b"\r\n")
    wire += b".\r\nQUIT\r\n"
    expected = data if data.endswith(b"\r\n") or not data else data + b"\r\n"
    dots = sum(1 for line in expected.split(b"\r\n") if line.startswith(b"."))
    rng = random.Random(name)
    for _ in range(4):
        cuts = sorted(rng.sample(range(1, len(wire)), min(40, len(wire) - 1)))
        chunks = [wire[a:b] for a, b in zip([0] + cuts, cuts + [len(wire)], strict=True)]
        conn = new_conn(size=10_000_000)
        _, events = drive(conn, chunks)
        (tx,) = messages(events)
        assert tx.data == expected
        assert tx.unstuffed_dots == dots
        assert (
            dot_stuff(tx.data, tx.unstuffed_dots)
            == dot_stuff(tx.data)
            == wire[len(ENVELOPE) : -len(b"QUIT\r\n")]
        )


@pytest.mark.parametrize("where", ["start", "middle", "end", "after-cr-lf"])
def test_bare_lf_anywhere_in_a_large_message_is_refused(where):
    body = (b"x" * 70 + b"\r\n") * 15_000  # ~1 MB
    if where == "start":
        body = b"\n" + body
    elif where == "middle":
        body = body[:500_000] + b"\n" + body[500_000:]
    elif where == "end":
        body = body + b"tail\n\r\n"
    else:
        body = body[:500_000] + b"\r\n\n" + body[500_000:]
    conn = new_conn(size=10_000_000)
    out, events = drive(conn, [ENVELOPE + body + b".\r\nQUIT\r\n"])
    refused = [e for e in events if isinstance(e, MessageRefused)]
    assert len(refused) == 1 and refused[0].reply.code == 550
    assert b"550 5.6.0" in out
    assert not messages(events)


def test_large_crlf_message_with_bare_cr_is_accepted():
    body = (b"x" * 70 + b"\r\n") * 15_000 + b"bare\rcr\r\n"
    conn = new_conn(size=10_000_000)
    _, events = drive(conn, [ENVELOPE + body + b".\r\nQUIT\r\n"])
    (tx,) = messages(events)
    assert tx.data == body and tx.unstuffed_dots == 0


@pytest.mark.parametrize(
    "data",
    [b".x\r\n", b"a\r\n.b\r\n", b"a\r\n..\r\n", b".", b"a\r\n.", b"no dots\r\n"],
)
def test_dot_stuff_with_an_unknown_count_still_stuffs(data):
    assert dot_stuff(data) == dot_stuff(data, None)
    assert dot_stuff(data, 1) == dot_stuff(data)
    # a wrong 0 on data starting with a dot is still safe for the first line
    assert dot_stuff(data, 0).startswith(b"..") == data.startswith(b".")
