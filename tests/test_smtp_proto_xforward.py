"""XFORWARD in the sans-I/O SMTP core (chatmaild.smtp.proto), as Postfix's before-queue proxy
sends it (XFORWARD_README, smtpd_proxy.c): announced in EHLO only when configured, xtext
values, `[UNAVAILABLE]`, attributes kept for the next transaction only. No sockets; input
whole, byte by byte and in halves."""

import pytest
from test_smtp_proto import codes, drive, messages, splits

from chatmaild.smtp.proto import (
    MailFrom,
    MessageComplete,
    Reply,
    ServerConnection,
    State,
    parse_xforward,
    xtext_decode,
)


def new_conn(xforward=("ADDR",), **kw):
    conn = ServerConnection(hostname="mx.test", max_message_size=1000, xforward=xforward, **kw)
    conn.greeting()
    conn.data_to_send()
    return conn


def ehlo_lines(conn) -> list[bytes]:
    out, _ = drive(conn, [b"EHLO proxy.test\r\n"])
    return out.split(b"\r\n")[:-1]


MAIL = b"MAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\nbody\r\n.\r\n"


def test_announced_only_when_configured():
    assert b"250-XFORWARD ADDR" in ehlo_lines(new_conn())
    both = ehlo_lines(new_conn(xforward=("NAME", "ADDR", "HELO")))
    assert b"250-XFORWARD NAME ADDR HELO" in both
    assert not [line for line in ehlo_lines(new_conn(xforward=())) if b"XFORWARD" in line]
    # HELO has no extensions at all
    out, _ = drive(new_conn(), [b"HELO proxy.test\r\n"])
    assert out == b"250 mx.test\r\n"


def test_postfix_ehlo_parsing_finds_the_keyword():
    """smtpd_proxy.c: per reply line, skip the code and `-`/space, then the keyword."""
    words = [line[4:].split() for line in ehlo_lines(new_conn())]
    assert ["XFORWARD", "ADDR"] in [[w.decode() for w in ws] for ws in words]


def test_unknown_announced_attribute_is_a_bug():
    with pytest.raises(ValueError):
        ServerConnection(xforward=("ADDR", "COLOR"))


# The conversation of XFORWARD_README's example, and Postfix 3.7's proxy with all it knows.
README = (
    b"EHLO client.example.com\r\n"
    b"XFORWARD NAME=spike.porcupine.org ADDR=168.100.189.2 PROTO=ESMTP\r\n"
    b"XFORWARD HELO=spike.porcupine.org\r\n" + MAIL + b"QUIT\r\n"
)


@pytest.mark.parametrize("chunks", list(splits(README)), ids=["whole", "bytewise", "halves"])
def test_readme_conversation(chunks):
    conn = new_conn(xforward=("NAME", "ADDR", "PROTO", "HELO"))
    out, events = drive(conn, chunks)
    assert codes(out) == [250, 250, 250, 250, 250, 354, 250, 221]
    [tx] = messages(events)
    assert tx.xforward == {
        "NAME": "spike.porcupine.org",
        "ADDR": "168.100.189.2",
        "PROTO": "ESMTP",
        "HELO": "spike.porcupine.org",
    }
    assert tx.client_addr == "168.100.189.2"
    assert tx.helo == "client.example.com"  # our own session's HELO is not overwritten


def test_postfix_proxy_lines():
    """What smtpd_proxy.c sends: announced names only, unknown ones as [UNAVAILABLE]."""
    conn = new_conn(xforward=("NAME", "ADDR", "PORT", "PROTO", "HELO", "SOURCE"))
    out, events = drive(
        conn,
        [
            b"EHLO mx.test\r\n"
            b"XFORWARD NAME=[UNAVAILABLE] ADDR=IPv6:2001:db8::1 PORT=40562 "
            b"HELO=client.relay.test PROTO=ESMTP SOURCE=REMOTE\r\n" + MAIL
        ],
    )
    assert codes(out) == [250, 250, 250, 250, 354, 250]
    [tx] = messages(events)
    assert tx.client_addr == "IPv6:2001:db8::1"
    assert "NAME" not in tx.xforward
    assert tx.xforward["PORT"] == "40562" and tx.xforward["SOURCE"] == "REMOTE"


@pytest.mark.parametrize(
    "raw, text",
    [
        (b"168.100.189.2", "168.100.189.2"),
        (b"IPv6:2001:db8::1", "IPv6:2001:db8::1"),
        (b"a+2Bb", "a+b"),
        (b"+3D", "="),
        (b"+2b+3d", "+="),  # lower-case hex as well
        (b"x+20y", "x?y"),  # a space is no part of a token
        (b"+00+7F+C3+A4", "????"),  # control and non-ASCII bytes neutered
        (b"\xc3\xa4", "??"),  # raw 8-bit (Postfix < 2.3 did not encode)
        (b"a=b", "a=b"),
        (b"+", None),
        (b"a+4", None),
        (b"+zz", None),
        (b"++41", None),
    ],
)
def test_xtext_decode(raw, text):
    assert xtext_decode(raw) == text


@pytest.mark.parametrize(
    "arg, parsed",
    [
        (b"ADDR=1.2.3.4", [("ADDR", "1.2.3.4")]),
        (b"addr=1.2.3.4  Name=x.test", [("ADDR", "1.2.3.4"), ("NAME", "x.test")]),
        (b"ADDR=[UNAVAILABLE]", [("ADDR", None)]),
        (b"ADDR=[unavailable] NAME=[TEMPUNAVAIL]", [("ADDR", None), ("NAME", None)]),
        (b"ADDR=1.2.3.4 ADDR=5.6.7.8", [("ADDR", "1.2.3.4"), ("ADDR", "5.6.7.8")]),
        (b"IDENT=ABC123", [("IDENT", "ABC123")]),
        (b"", Reply(501, "5.5.4 Syntax: XFORWARD attribute=value...")),
        (b"ADDR", Reply(501, "5.5.4 Error: attribute=value expected")),
        (b"ADDR=", Reply(501, "5.5.4 Error: attribute=value expected")),
        (b"=1.2.3.4", Reply(501, "5.5.4 Bad XFORWARD attribute name: ")),
        (b"COLOR=red", Reply(501, "5.5.4 Bad XFORWARD attribute name: COLOR")),
        (b"ADDR=1.2.3.4 C\xffLOR=red", Reply(501, "5.5.4 Bad XFORWARD attribute name: C?LOR")),
        (b"HELO=" + b"h" * 256, Reply(501, "5.5.4 Error: HELO value too long")),
        (b"ADDR=1.2.3.4+", Reply(501, "5.5.4 Bad ADDR syntax")),
    ],
)
def test_parse_xforward(arg, parsed):
    assert parse_xforward(arg) == parsed


def test_longest_value_is_accepted():
    assert parse_xforward(b"HELO=" + b"h" * 255) == [("HELO", "h" * 255)]


@pytest.mark.parametrize(
    "commands, expected",
    [
        (b"XFORWARD ADDR=1.2.3.4\r\n", [503]),  # before EHLO: not announced yet
        (b"EHLO c\r\nMAIL FROM:<a@x>\r\nXFORWARD ADDR=1.2.3.4\r\n", [250, 250, 503]),
        (
            b"EHLO c\r\nMAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nXFORWARD ADDR=1.2.3.4\r\n",
            [250, 250, 250, 503],
        ),
        (b"EHLO c\r\nXFORWARD\r\n", [250, 501]),
        (b"EHLO c\r\nXFORWARD ADDR=1.2.3.4 FOO=1\r\n", [250, 501]),
        (b"EHLO c\r\nxforward addr=1.2.3.4\r\n", [250, 250]),
    ],
)
def test_order_and_errors(commands, expected):
    for chunks in splits(commands):
        conn = new_conn()
        out, _ = drive(conn, chunks)
        assert codes(out) == expected, chunks


def test_in_transaction_reply_text_and_state_unchanged():
    conn = new_conn()
    drive(conn, [b"EHLO c\r\nXFORWARD ADDR=1.2.3.4\r\nMAIL FROM:<a@x>\r\n"])
    out, _ = drive(conn, [b"XFORWARD ADDR=6.6.6.6\r\n"])
    assert out == b"503 5.5.1 Error: MAIL transaction in progress\r\n"
    assert conn.state is State.MAIL
    assert conn.transaction.client_addr == "1.2.3.4"


def test_not_announced_is_refused_like_an_unauthorized_client():
    conn = new_conn(xforward=())
    out, events = drive(conn, [b"EHLO c\r\nXFORWARD ADDR=1.2.3.4\r\n" + MAIL])
    assert codes(out) == [250, 550, 250, 250, 354, 250]
    assert b"\r\n550 5.7.0 Error: insufficient authorization\r\n" in out
    [tx] = messages(events)
    assert tx.xforward is None and tx.client_addr is None


def test_bad_command_changes_nothing_and_counts_as_error():
    conn = new_conn(max_errors=3)
    out, events = drive(
        conn, [b"EHLO c\r\nXFORWARD ADDR=1.2.3.4\r\nXFORWARD ADDR=6.6.6.6 BAD=1\r\n" + MAIL]
    )
    assert codes(out) == [250, 250, 501, 250, 250, 354, 250]
    assert messages(events)[0].client_addr == "1.2.3.4"
    out, events = drive(conn, [b"XFORWARD\r\nXFORWARD\r\n"])
    assert codes(out) == [501, 501, 421]  # the third error ends the session


def test_unavailable_erases_and_later_commands_overwrite():
    conn = new_conn(xforward=("NAME", "ADDR"))
    out, events = drive(
        conn,
        [
            b"EHLO c\r\n"
            b"XFORWARD NAME=a.test ADDR=1.2.3.4\r\n"
            b"XFORWARD ADDR=[UNAVAILABLE]\r\n" + MAIL + b"XFORWARD NAME=b.test\r\n"
            b"XFORWARD NAME=c.test ADDR=5.6.7.8\r\n" + MAIL
        ],
    )
    first, second = messages(events)
    assert first.xforward == {"NAME": "a.test"} and first.client_addr is None
    assert second.xforward == {"NAME": "c.test", "ADDR": "5.6.7.8"}


@pytest.mark.parametrize(
    "between",
    [
        b"",  # the final dot ends the transaction and its attributes
        b"XFORWARD ADDR=5.6.7.8\r\nRSET\r\n",
        b"XFORWARD ADDR=5.6.7.8\r\nMAIL FROM:<a@x>\r\nRSET\r\n",
        b"XFORWARD ADDR=5.6.7.8\r\nEHLO again\r\n",
        b"XFORWARD ADDR=5.6.7.8\r\nHELO again\r\n",
    ],
)
def test_attributes_end_with_the_transaction(between):
    data = b"EHLO c\r\nXFORWARD ADDR=1.2.3.4\r\n" + MAIL + between + MAIL
    for chunks in splits(data):
        conn = new_conn()
        _, events = drive(conn, chunks)
        first, second = messages(events)
        assert first.client_addr == "1.2.3.4"
        assert second.xforward is None and second.client_addr is None


@pytest.mark.parametrize(
    "refusal",
    [
        {MessageComplete: Reply(550, "5.7.1 No valid DKIM signature found")},
        {MessageComplete: Reply(451, "4.3.0 try later")},
    ],
)
def test_attributes_end_with_a_refused_message(refusal):
    conn = new_conn()
    drive(conn, [b"EHLO c\r\nXFORWARD ADDR=1.2.3.4\r\n" + MAIL], refusal)
    _, events = drive(conn, [MAIL])
    assert messages(events)[0].xforward is None


def test_attributes_end_with_a_message_the_protocol_refuses():
    conn = new_conn()
    out, _ = drive(
        conn,
        [b"EHLO c\r\nXFORWARD ADDR=1.2.3.4\r\nMAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\n"],
    )
    out, _ = drive(conn, [b"x" * 1200 + b"\r\n.\r\n"])
    assert codes(out) == [552]
    _, events = drive(conn, [MAIL])
    assert messages(events)[0].xforward is None


def test_attributes_survive_a_refused_mail_from():
    """A refused MAIL starts no transaction; Postfix's README resets at RSET or the dot."""
    conn = new_conn()
    drive(conn, [b"EHLO c\r\nXFORWARD ADDR=1.2.3.4\r\n"])
    out, _ = drive(conn, [b"MAIL FROM:<a@x>\r\n"], {MailFrom: Reply(450, "4.7.1 later")})
    assert codes(out) == [450]
    _, events = drive(conn, [MAIL])
    assert messages(events)[0].client_addr == "1.2.3.4"


def test_pipelined_transactions_keep_their_own_attributes():
    one = b"XFORWARD ADDR=10.0.0.%d\r\n" + MAIL
    data = b"EHLO c\r\n" + b"".join(one.replace(b"%d", b"%d" % i) for i in range(4))
    for chunks in splits(data):
        conn = new_conn()
        out, events = drive(conn, chunks)
        assert [tx.client_addr for tx in messages(events)] == [f"10.0.0.{i}" for i in range(4)]
        assert codes(out) == [250] + [250, 250, 250, 354, 250] * 4
