"""sans-I/O tests of chatmaild.smtp.proto: no sockets, input fed whole, byte by byte and with
trailing data."""

import pytest

from chatmaild.smtp.proto import (
    NEED_DATA,
    PAUSED,
    ConnectionClosed,
    MailFrom,
    MessageComplete,
    MessageRefused,
    RcptTo,
    Reply,
    ServerConnection,
    State,
)

ACCEPTED = Reply(250, "2.0.0 queued")


def drive(conn, chunks, answers=None):
    """Feed `chunks`, answer every event (MAIL/RCPT accepted, messages ACCEPTED unless
    `answers` maps an event type to a Reply). Returns (reply bytes, events)."""
    answers = answers or {}
    events = []
    out = []
    for chunk in chunks:
        conn.receive_data(chunk)
        while True:
            event = conn.next_event()
            if event is NEED_DATA:
                break
            assert event is not PAUSED, "drive() answers every event"
            events.append(event)
            if isinstance(event, (MailFrom, RcptTo)):
                conn.answer(answers.get(type(event)))
            elif isinstance(event, MessageComplete):
                conn.answer(answers.get(MessageComplete, ACCEPTED))
        out.append(conn.data_to_send())
    return b"".join(out), events


def codes(out: bytes) -> list[int]:
    """Reply codes of final reply lines (multi-line replies count once)."""
    return [int(line[:3]) for line in out.split(b"\r\n") if line[3:4] == b" "]


def splits(data: bytes):
    """The same input whole, byte by byte, and in two uneven halves."""
    yield [data]
    yield [data[i : i + 1] for i in range(len(data))]
    yield [data[:7], data[7:]]


def new_conn(**kw):
    conn = ServerConnection(hostname="mx.test", max_message_size=kw.pop("size", 1000), **kw)
    conn.greeting()
    assert conn.data_to_send().startswith(b"220 mx.test ")
    return conn


def messages(events):
    return [e.transaction for e in events if isinstance(e, MessageComplete)]


SESSION = (
    b"EHLO client.test\r\n"
    b"MAIL FROM:<a@x.test> SIZE=100 BODY=8BITMIME SMTPUTF8 AUTH=<> RET=HDRS ENVID=e1\r\n"
    b"RCPT TO:<b@y.test> NOTIFY=NEVER ORCPT=rfc822;b@y.test\r\n"
    b"RCPT TO:<c@y.test>\r\n"
    b"DATA\r\n"
    b"Subject: hi\r\n\r\n..dot line\r\n..\r\nnot end\r\n\xc3\xa4 8bit\r\n.\r\n"
    b"QUIT\r\n"
)


@pytest.mark.parametrize("chunks", list(splits(SESSION)), ids=["whole", "bytewise", "halves"])
def test_full_session(chunks):
    conn = new_conn()
    out, events = drive(conn, chunks)
    assert codes(out) == [250, 250, 250, 250, 354, 250, 221]
    assert b"250-PIPELINING\r\n250-SIZE 1000\r\n250-8BITMIME\r\n250 SMTPUTF8\r\n" in out
    [tx] = messages(events)
    assert tx.mail_from == "a@x.test"
    assert tx.rcpt_tos == ["b@y.test", "c@y.test"]
    assert tx.mail_params["SIZE"] == "100"
    assert tx.mail_params["AUTH"] == "<>"
    assert tx.mail_params["ENVID"] == "e1"
    assert tx.rcpt_params[0] == {"NOTIFY": "NEVER", "ORCPT": "rfc822;b@y.test"}
    assert tx.smtputf8 and tx.body_type == "8BITMIME"
    assert tx.helo == "client.test"
    assert tx.data == b"Subject: hi\r\n\r\n.dot line\r\n.\r\nnot end\r\n\xc3\xa4 8bit\r\n"
    assert isinstance(events[-1], ConnectionClosed)
    assert conn.state is State.CLOSED


def test_trailing_data_after_quit_is_ignored():
    conn = new_conn()
    out, events = drive(conn, [SESSION + b"NOOP\r\nMAIL FROM:<z@z>\r\n"])
    assert codes(out)[-1] == 221
    assert len(messages(events)) == 1


@pytest.mark.parametrize(
    "body,expected",
    [
        (b".\r\n", b""),
        (b"..\r\n.\r\n", b".\r\n"),
        (b"...x\r\n.\r\n", b"..x\r\n"),
        (b".x\r\n.\r\n", b"x\r\n"),  # RFC 5321 4.5.2: a leading dot is always removed
        (b"a\r\n.\r\n", b"a\r\n"),
        (b"a\rb\r\n.\r\n", b"a\rb\r\n"),  # bare CR is data
        (b"a\r\n.\r.\r\n.\r\n", b"a\r\n\r.\r\n"),
        (b"x" * 5000 + b"\r\n.\r\n", b"x" * 5000 + b"\r\n"),  # long lines are data
    ],
)
def test_dot_unstuffing(body, expected):
    for chunks in splits(b"HELO c\r\nMAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\n" + body):
        conn = new_conn(size=10000)
        out, events = drive(conn, chunks)
        assert [tx.data for tx in messages(events)] == [expected]


def test_several_transactions_pipelined_in_one_chunk():
    one = b"MAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\nm%d\r\n.\r\n"
    data = b"EHLO c\r\n" + b"".join(one.replace(b"%d", str(i).encode()) for i in range(5))
    conn = new_conn()
    out, events = drive(conn, [data + b"RSET\r\nNOOP\r\n"])
    assert [tx.data for tx in messages(events)] == [b"m%d\r\n" % i for i in range(5)]
    assert codes(out) == [250] + [250, 250, 354, 250] * 5 + [250, 250]


def test_pause_until_message_is_answered_keeps_order():
    conn = new_conn()
    conn.receive_data(
        b"EHLO c\r\nMAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\nbody\r\n.\r\nNOOP\r\n"
    )
    seen = []
    while True:
        event = conn.next_event()
        if event is PAUSED:
            break
        seen.append(event)
        if not isinstance(event, MessageComplete):
            conn.answer(None)
    assert isinstance(seen[-1], MessageComplete)
    assert conn.next_event() is PAUSED
    before = conn.data_to_send()
    assert codes(before) == [250, 250, 250, 354]  # NOOP not answered before the message
    conn.answer(Reply(451, "4.3.0 later"))
    assert conn.next_event() is NEED_DATA
    assert codes(conn.data_to_send()) == [451, 250]


@pytest.mark.parametrize(
    "commands,expected",
    [
        (b"MAIL FROM:<a@x>\r\n", [503]),  # before EHLO
        (b"EHLO c\r\nRCPT TO:<b@y>\r\n", [250, 503]),
        (b"EHLO c\r\nDATA\r\n", [250, 503]),
        (b"EHLO c\r\nMAIL FROM:<a@x>\r\nDATA\r\n", [250, 250, 503]),
        (b"EHLO c\r\nMAIL FROM:<a@x>\r\nMAIL FROM:<a@x>\r\n", [250, 250, 503]),
        (b"EHLO c\r\nMAIL FROM:<a@x>\r\nRSET\r\nRCPT TO:<b@y>\r\n", [250, 250, 250, 503]),
        (b"BOGUS\r\n", [500]),
        (b"\xff\xfe\r\n", [500]),
        (b"EXPN list\r\n", [502]),
        (b"STARTTLS\r\n", [502]),
        (b"EHLO\r\n", [501]),
        (b"EHLO c\r\nMAIL TO:<a@x>\r\n", [250, 501]),
        (b"EHLO c\r\nMAIL FROM:<a@x\r\n", [250, 501]),
        (b"EHLO c\r\nMAIL FROM:<a@x> BODY=BINARYMIME\r\n", [250, 501]),
        (b"EHLO c\r\nMAIL FROM:<a@x> SIZE=abc\r\n", [250, 501]),
        (b"EHLO c\r\nMAIL FROM:<a@x>\r\nRCPT TO:<>\r\n", [250, 250, 501]),
        (b"EHLO c\r\nMAIL FROM:<a@x>\r\nDATA x\r\n", [250, 250, 503]),
        (b"NOOP\r\nVRFY x\r\nHELP\r\nRSET\r\n", [250, 252, 214, 250]),
        (b"noop\r\nhelo c\r\nmail from:<a@x>\r\nrcpt to:<b@y>\r\n", [250, 250, 250, 250]),
        (b"NOOP\n", [500]),  # bare LF ends nothing but an error
    ],
)
def test_command_errors_and_order(commands, expected):
    for chunks in splits(commands):
        conn = new_conn()
        state_before = None
        out, events = drive(conn, chunks)
        assert codes(out) == expected, chunks
        assert state_before is None


def test_out_of_order_leaves_state_unchanged():
    conn = new_conn()
    drive(conn, [b"EHLO c\r\nMAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\n"])
    assert conn.state is State.RCPT
    out, _ = drive(conn, [b"MAIL FROM:<other@x>\r\n"])
    assert codes(out) == [503]
    assert conn.state is State.RCPT and conn.transaction.mail_from == "a@x"


def test_addresses_and_params():
    conn = new_conn()
    out, events = drive(
        conn,
        [
            b"EHLO c\r\n"
            b'MAIL FROM:<"odd > local"@x.test> SMTPUTF8\r\n'
            b"RCPT TO:bare@y.test\r\n"
            b"RCPT TO:<@relay.test:routed@y.test>\r\n"
            b"RCPT TO:<\xc3\xbc@y.test>\r\n"
            b"MAIL FROM:<>\r\n"
            b"RSET\r\nMAIL FROM:<>\r\n"
        ],
    )
    assert codes(out) == [250] * 5 + [503, 250, 250]
    mails = [e for e in events if isinstance(e, MailFrom)]
    rcpts = [e.address for e in events if isinstance(e, RcptTo)]
    assert mails[0].address == '"odd > local"@x.test'
    assert rcpts == ["bare@y.test", "routed@y.test", "\xfc@y.test"]
    assert mails[-1].address == ""


def test_handler_refusals_keep_state():
    conn = new_conn()
    answers = {MailFrom: Reply(450, "4.7.1: Too much mail from a@x")}
    out, _ = drive(conn, [b"EHLO c\r\nMAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\n"], answers)
    assert codes(out) == [250, 450, 503]
    assert conn.state is State.READY
    answers = {RcptTo: Reply(550, "5.1.1 no")}
    out, _ = drive(conn, [b"MAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\n"], answers)
    assert codes(out) == [250, 550, 503]
    assert conn.state is State.MAIL


def test_declared_size_over_limit_gets_552_at_mail():
    conn = new_conn(size=1000)
    out, events = drive(
        conn, [b"EHLO c\r\nMAIL FROM:<a@x> SIZE=1001\r\nMAIL FROM:<a@x> SIZE=1000\r\n"]
    )
    assert codes(out) == [250, 552, 250]


@pytest.mark.parametrize("size", [999, 1000, 1001, 5000])
def test_size_cap_enforced_while_reading(size):
    body = (b"y" * 98 + b"\r\n") * (size // 100) + b"z" * (size % 100)
    body = body[:size]
    if not body.endswith(b"\r\n"):
        body = body[:-2] + b"\r\n"
    assert len(body) == size
    data = b"EHLO c\r\nMAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\n" + body + b".\r\n"
    data += b"MAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\nsmall\r\n.\r\n"
    for chunks in [[data], [data[i : i + 7] for i in range(0, len(data), 7)]]:
        conn = new_conn(size=1000)
        out, events = drive(conn, chunks)
        refused = [e for e in events if isinstance(e, MessageRefused)]
        if size <= 1000:
            assert codes(out) == [250, 250, 250, 354, 250, 250, 250, 354, 250]
            assert [tx.data for tx in messages(events)] == [body, b"small\r\n"]
        else:
            assert codes(out) == [250, 250, 250, 354, 552, 250, 250, 354, 250]
            assert [r.reply.code for r in refused] == [552]
            assert [tx.data for tx in messages(events)] == [b"small\r\n"]
        assert max(len(p) for p in conn._pieces) if conn._pieces else True


def test_oversize_input_is_not_stored():
    conn = new_conn(size=1000)
    drive(conn, [b"EHLO c\r\nMAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\n"])
    for _ in range(100):
        drive(conn, [b"x" * 998 + b"\r\n"])
        assert sum(map(len, conn._pieces)) <= 1000
        assert conn.buffered <= 2


@pytest.mark.parametrize(
    "smuggle",
    [b"a\n.\nMAIL FROM:<e@x>\n", b"a\n.\r\nMAIL FROM:<e@x>\r\n", b"a\r\n.\nMAIL FROM:<e@x>\r\n"],
)
def test_bare_lf_in_data_is_refused_not_an_end(smuggle):
    data = b"EHLO c\r\nMAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\n" + smuggle
    conn = new_conn()
    out, events = drive(conn, [data])
    assert codes(out) == [250, 250, 250, 354]  # still in DATA: the fake end was data
    out, events = drive(conn, [b"more\r\n.\r\nNOOP\r\n"])
    assert codes(out) == [550, 250]
    assert not messages(events)
    assert [e.reply.code for e in events if isinstance(e, MessageRefused)] == [550]


def test_bare_lf_command_line():
    conn = new_conn()
    out, _ = drive(conn, [b"EHLO c\nNOOP\r\n"])
    assert codes(out) == [500, 250]
    assert conn.state is State.INIT


@pytest.mark.parametrize("length", [999, 1000, 1001, 10000])
def test_command_line_cap(length):
    line = b"NOOP " + b"x" * (length - 7) + b"\r\n"
    assert len(line) == length
    for chunks in [[line + b"NOOP\r\n"], [line[i : i + 100] for i in range(0, length, 100)]]:
        conn = new_conn()
        out, _ = drive(conn, chunks + [b"NOOP\r\n"])
        expected = [250] if length <= 1000 else [500]
        assert codes(out)[: len(expected)] == expected
        assert codes(out)[-1] == 250
        assert conn.buffered < 1000


def test_unbounded_line_is_never_buffered():
    conn = new_conn()
    for _ in range(200):
        drive(conn, [b"y" * 4096])
        assert conn.buffered <= 1000
    out, _ = drive(conn, [b"\r\nNOOP\r\n"])
    assert codes(out) == [500, 250]


def test_eof_inside_data_aborts():
    conn = new_conn()
    # Postfix gives up on a message by sending QUIT inside the data stream and closing
    out, events = drive(
        conn,
        [b"EHLO c\r\nMAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\npart\r\nQUIT\r\n", b""],
    )
    assert codes(out) == [250, 250, 250, 354]
    assert not messages(events)
    assert events[-1] == ConnectionClosed("EOF in DATA", aborted=True)


def test_eof_between_commands():
    conn = new_conn()
    out, events = drive(conn, [b"EHLO c\r\nNOOP", b""])
    assert codes(out) == [250]
    assert events[-1] == ConnectionClosed("EOF", aborted=False)


def test_too_many_errors_disconnect():
    conn = new_conn()
    out, events = drive(conn, [b"BAD\r\n" * 25])
    assert codes(out) == [500] * 20 + [421]
    assert isinstance(events[-1], ConnectionClosed)


def test_reply_formatting():
    assert Reply(250, "ok").to_bytes() == b"250 ok\r\n"
    assert Reply(550, "5.1.1 a\n5.1.1 b").to_bytes() == b"550-5.1.1 a\r\n550 5.1.1 b\r\n"
    assert Reply(523, "Encryption Needed: Invalid Unencrypted Mail").to_bytes() == (
        b"523 Encryption Needed: Invalid Unencrypted Mail\r\n"
    )


def test_answer_without_event_raises():
    conn = new_conn()
    with pytest.raises(RuntimeError):
        conn.answer(None)
