"""filtermail over real sockets: raw client -> filter -> aiosmtpd recording sink."""

import asyncio
import logging

import pytest
from filtermail_samples import SENDER, armor, encrypt, encrypted_mail, plain_mail
from filtermail_server_helpers import Client, Filter, closed_port

OUT_SENDER = SENDER  # alice@chat.example, the default write_ini domain
LOCAL = "bob@chat.example"


@pytest.fixture
def encrypted():
    return encrypted_mail(armor(encrypt(("x25519",), 2000)))


TRICKY = (
    b"From: x@remote.test\r\nTo: bob@chat.example\r\nSubject: =?utf-8?q?t?=\r\n\r\n"
    b".leading dot\r\n..two dots\r\n.\r\x00\r\n"
    b"8-bit: \xc3\xa4\xff\xfe\r\n"
    b"bare CR \r inside\r\n" + b"L" * 996 + b"\r\n" + b"\r\n" * 3 + b"last line\r\n"
)


async def test_bytes_arrive_identical(tmp_path, sink):
    async with Filter(tmp_path, "incoming", sink.port) as f:
        client = await Client.connect(f.port)
        code, text = await client.send_mail("x@remote.test", [LOCAL], TRICKY)
        assert code == 250, text
        assert "queued as 1" in text  # the downstream reply text comes back
        await client.cmd(b"QUIT")
        await client.close()
    [msg] = sink.messages
    assert msg.data == TRICKY
    assert msg.mail_from == "x@remote.test"
    assert msg.rcpt_tos == [LOCAL]
    assert msg.peer[0] == "127.0.0.1"


async def test_encrypted_outgoing_identical(tmp_path, sink, encrypted):
    async with Filter(tmp_path, "outgoing", sink.port) as f:
        client = await Client.connect(f.port)
        code, text = await client.send_mail(OUT_SENDER, ["carol@other.test"], encrypted)
        assert code == 250, text
        code, text = await client.send_mail(OUT_SENDER, ["carol@other.test"], plain_mail())
        assert code == 523
        assert text == "Encryption Needed: Invalid Unencrypted Mail"
        await client.close()
    assert [m.data for m in sink.messages] == [encrypted]


async def test_pipelined_transactions_in_one_write(tmp_path, sink):
    bodies = [b"Subject: %d\r\n\r\nbody %d\r\n" % (i, i) for i in range(4)]
    chunk = b"EHLO c.test\r\n"
    for body in bodies:
        chunk += b"MAIL FROM:<x@remote.test>\r\nRCPT TO:<%s>\r\nDATA\r\n" % LOCAL.encode()
        chunk += body + b".\r\n"
    chunk += b"NOOP\r\nQUIT\r\n"
    async with Filter(tmp_path, "incoming", sink.port) as f:
        client = await Client.connect(f.port, ehlo=False)
        client.write(chunk)
        replies = await client.replies(1 + 4 * 4 + 2)
        await client.close()
    assert [c for c, _ in replies] == [250] + [250, 250, 354, 250] * 4 + [250, 221]
    assert [m.data for m in sink.messages] == bodies


async def test_several_recipients_and_transactions(tmp_path, sink):
    async with Filter(tmp_path, "incoming", sink.port) as f:
        client = await Client.connect(f.port)
        for i in range(3):
            rcpts = [f"r{j}@chat.example" for j in range(i + 1)]
            code, _ = await client.send_mail("x@remote.test", rcpts, b"n: %d\r\n\r\n" % i)
            assert code == 250
        assert (await client.cmd(b"RSET"))[0] == 250
        await client.close()
    assert [len(m.rcpt_tos) for m in sink.messages] == [1, 2, 3]


@pytest.mark.parametrize(
    "params,forwarded",
    [
        (b"", []),
        (b" BODY=8BITMIME", ["BODY=8BITMIME"]),
        (b" SMTPUTF8 BODY=8BITMIME", ["BODY=8BITMIME", "SMTPUTF8"]),
        (b" SIZE=100 BODY=7BIT RET=HDRS ENVID=abc AUTH=<>", ["BODY=7BIT"]),
    ],
)
async def test_esmtp_parameters(tmp_path, sink, params, forwarded):
    async with Filter(tmp_path, "incoming", sink.port) as f:
        client = await Client.connect(f.port)
        rcpt = b"RCPT TO:<%s> NOTIFY=NEVER ORCPT=rfc822;%s" % (LOCAL.encode(), LOCAL.encode())
        assert (await client.cmd(b"MAIL FROM:<x@remote.test>" + params))[0] == 250
        assert (await client.cmd(rcpt))[0] == 250
        assert (await client.cmd(b"DATA"))[0] == 354
        client.write(b"Subject: \xc3\xa4\r\n\r\nx\r\n.\r\n")
        assert (await client.reply())[0] == 250
        await client.close()
    [msg] = sink.messages
    assert sorted(o.upper() for o in msg.mail_options) == forwarded


async def test_smtputf8_address(tmp_path, sink):
    async with Filter(tmp_path, "incoming", sink.port) as f:
        client = await Client.connect(f.port)
        client.write("MAIL FROM:<jörg@remote.test> SMTPUTF8\r\n".encode())
        assert (await client.reply())[0] == 250
        client.write("RCPT TO:<bøb@chat.example>\r\nDATA\r\nx: y\r\n\r\nz\r\n.\r\n".encode())
        assert [c for c, _ in await client.replies(3)] == [250, 354, 250]
        await client.close()
    [msg] = sink.messages
    assert (msg.mail_from, msg.rcpt_tos) == ("jörg@remote.test", ["bøb@chat.example"])
    assert "SMTPUTF8" in msg.mail_options


async def test_size_limit_552_and_session_usable(tmp_path, sink):
    async with Filter(tmp_path, "incoming", sink.port, max_message_size=10000) as f:
        client = await Client.connect(f.port)
        assert "SIZE 10000" in (await client.cmd(b"EHLO again"))[1]
        code, _ = await client.cmd(b"MAIL FROM:<x@remote.test> SIZE=10001")
        assert code == 552
        big = b"s: big\r\n\r\n" + (b"y" * 98 + b"\r\n") * 200
        code, text = await client.send_mail("x@remote.test", [LOCAL], big)
        assert code == 552, text
        code, _ = await client.send_mail("x@remote.test", [LOCAL], b"s: small\r\n\r\nok\r\n")
        assert code == 250
        await client.close()
    assert [m.data for m in sink.messages] == [b"s: small\r\n\r\nok\r\n"]


async def test_disconnect_mid_data_reinjects_nothing(tmp_path, sink):
    async with Filter(tmp_path, "incoming", sink.port) as f:
        client = await Client.connect(f.port)
        for cmd in (b"MAIL FROM:<x@remote.test>", b"RCPT TO:<%s>" % LOCAL.encode(), b"DATA"):
            assert (await client.cmd(cmd))[0] in (250, 354)
        # what Postfix does when it gives up on a message: QUIT inside the data, close
        client.write(b"s: aborted\r\n\r\npartial\r\nQUIT\r\n")
        await client.close()
        other = await Client.connect(f.port)
        code, _ = await other.send_mail("x@remote.test", [LOCAL], b"s: second\r\n\r\n")
        assert code == 250
        await other.close()
    assert [m.data for m in sink.messages] == [b"s: second\r\n\r\n"]


async def test_sink_down_gives_451(tmp_path, caplog):
    async with Filter(tmp_path, "incoming", closed_port()) as f:
        client = await Client.connect(f.port)
        with caplog.at_level(logging.INFO, logger="filtermail"):
            code, text = await client.send_mail("x@remote.test", [LOCAL], b"s: x\r\n\r\n")
        assert code == 451 and text.startswith("4.3.0")
        # and the session stays usable
        assert (await client.cmd(b"NOOP"))[0] == 250
        await client.close()
    lines = [r.getMessage() for r in caplog.records]
    assert any(line.startswith("Incoming: Filtering unencrypted mail.") for line in lines)
    assert any("reinjection" in line and "451" in line for line in lines)


@pytest.mark.parametrize(
    "rcpt,code,fragment",
    [
        ("nouser@chat.example", 550, "5.1.1 <nouser@chat.example>: Recipient address rejected"),
        ("busy@chat.example", 452, "4.2.2 <busy@chat.example>: Mailbox full"),
        ("tempdata@chat.example", 451, "4.3.5 Server configuration problem"),
    ],
)
async def test_sink_refusals_passed_through(tmp_path, sink, rcpt, code, fragment):
    async with Filter(tmp_path, "incoming", sink.port) as f:
        client = await Client.connect(f.port)
        got, text = await client.send_mail("x@remote.test", [LOCAL, rcpt], b"s: x\r\n\r\n")
        assert got == code
        assert fragment in text
        # a refusal is never a 250, and the next transaction works on a fresh connection
        got, _ = await client.send_mail("x@remote.test", [LOCAL], b"s: y\r\n\r\n")
        assert got == 250
        await client.close()
    assert [m.data for m in sink.messages] == [b"s: y\r\n\r\n"]


async def test_slow_sink_does_not_block_other_sessions(tmp_path, sink):
    async with Filter(tmp_path, "incoming", sink.port) as f:
        slow = await Client.connect(f.port)
        slow_reply = asyncio.ensure_future(
            slow.send_mail("x@remote.test", ["hold@chat.example"], b"s: slow\r\n\r\n")
        )
        await asyncio.wait_for(sink.held.wait(), 10)  # the sink now sits on the slow one
        fast = []
        for i in range(5):
            client = await Client.connect(f.port)
            fast.append(await client.send_mail("x@remote.test", [LOCAL], b"s: %d\r\n\r\n" % i))
            await client.close()
        assert [c for c, _ in fast] == [250] * 5
        assert not slow_reply.done()
        sink.release.set()
        assert (await slow_reply)[0] == 250
        await slow.close()
    assert len(sink.messages) == 6


async def test_bad_input_answers_and_keeps_serving(tmp_path, sink):
    async with Filter(tmp_path, "incoming", sink.port) as f:
        client = await Client.connect(f.port)
        client.write(b"RCPT TO:<a@b>\r\nDATA\r\nWHAT\r\nNOOP\n" + b"x" * 5000 + b"\r\n")
        codes = [c for c, _ in await client.replies(5)]
        assert codes == [503, 503, 500, 500, 500]
        code, _ = await client.send_mail("x@remote.test", [LOCAL], b"s: x\r\n\r\n")
        assert code == 250
        await client.close()


async def test_outgoing_mail_from_and_rate_limit(tmp_path, sink, encrypted, caplog):
    async with Filter(
        tmp_path, "outgoing", sink.port, max_user_send_per_minute=60, max_user_send_burst_size=2
    ) as f:
        client = await Client.connect(f.port)
        code, text = await client.cmd(b"MAIL FROM:<no-at-sign>")
        assert (code, text) == (500, "Invalid from address <no-at-sign>")
        results = []
        for _ in range(3):
            results.append(await client.send_mail(OUT_SENDER, ["c@other.test"], encrypted))
        await client.close()
    assert [c for c, _ in results] == [250, 250, 450]
    assert results[2][1] == f"4.7.1: Too much mail from {OUT_SENDER}"
    assert len(sink.messages) == 2


async def test_incoming_enforced_recipient(tmp_path, sink):
    async with Filter(tmp_path, "incoming", sink.port) as f:
        user = f.server.handler.boxes.user(LOCAL)
        user.dir.mkdir(parents=True)
        user.enforce_path.touch()
        client = await Client.connect(f.port)
        code, text = await client.send_mail("x@remote.test", [LOCAL], plain_mail())
        assert (code, text) == (523, "Encryption Needed: Invalid Unencrypted Mail")
        # an address that is no valid mailbox path counts as not enforcing
        code, _ = await client.send_mail("x@remote.test", ["../x@chat.example"], plain_mail())
        assert code == 250
        await client.close()


@pytest.mark.parametrize("direction", ["outgoing", "incoming"])
async def test_shared_corpus_through_the_filter(tmp_path, sink, direction):
    """fm-policy's .eml corpus over the wire: the expected reply, or identical bytes."""
    from test_filtermail_corpus import ALICE, CORPUS, EXPECTED

    delivered = []
    async with Filter(tmp_path, direction, sink.port, max_user_send_burst_size=100) as f:
        f.server.handler.enforces_e2ee = lambda addr: True
        for name, (rcpts, outgoing, incoming) in sorted(EXPECTED.items()):
            expected = outgoing if direction == "outgoing" else incoming
            message = (CORPUS / name).read_bytes()
            client = await Client.connect(f.port)
            code, text = await client.send_mail(ALICE, rcpts, message)
            await client.close()
            if expected is None:
                assert code == 250, (name, text)
                delivered.append(message)
            else:
                assert f"{code} {text}" == expected, name
    assert [m.data for m in sink.messages] == delivered
