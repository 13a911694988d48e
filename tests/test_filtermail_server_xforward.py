"""XFORWARD over real sockets: filtermail incoming announces it and exempts an IP-literal
From from DKIM only when the literal is the forwarded client address; outgoing does not
announce it. Raw client -> filter -> aiosmtpd recording sink. The filter's resolver is a
UDP socket nobody answers: an IP-literal decision must never ask DNS."""

import logging
import socket

import pytest
from filtermail_samples import armor, encrypt, encrypted_mail
from filtermail_server_helpers import Client, Filter

from chatmaild.filtermail.dkimkeys import KeyFetcher

LOCAL = "bob@chat.example"
DKIM_550 = (550, "5.7.1 No valid DKIM signature found")
LINE = "Incoming: Filtering encrypted mail."


@pytest.fixture
def silent_dns():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.setblocking(False)
        yield s


def asked(dns: socket.socket) -> bool:
    try:
        dns.recvfrom(4096)
    except BlockingIOError:
        return False
    return True


def dkim_filter(tmp_path, sink, dns):
    fetcher = KeyFetcher(dns.getsockname(), timeout=0.5)
    return Filter(
        tmp_path, "incoming", sink.port, key_fetcher=fetcher, filtermail_dkim_check="true"
    )


def mail_from(sender: str) -> bytes:
    return encrypted_mail(armor(encrypt(("x25519",), 1500)), sender=sender, to=LOCAL)


def dkim_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if "DKIM" in r.getMessage()]


async def ehlo_text(port) -> str:
    client = await Client.connect(port, ehlo=False)
    code, text = await client.cmd(b"EHLO postfix.test")
    await client.close()
    assert code == 250
    return text


async def test_incoming_announces_xforward_addr_outgoing_does_not(tmp_path, sink):
    (tmp_path / "in").mkdir()
    (tmp_path / "out").mkdir()
    async with Filter(tmp_path / "in", "incoming", sink.port) as f:
        assert "XFORWARD ADDR" in (await ehlo_text(f.port)).split("\n")
    async with Filter(tmp_path / "out", "outgoing", sink.port) as f:
        assert "XFORWARD" not in await ehlo_text(f.port)
        client = await Client.connect(f.port)
        code, text = await client.cmd(b"XFORWARD ADDR=192.0.2.1")
        assert (code, text) == (550, "5.7.0 Error: insufficient authorization")
        await client.close()


IP_LITERAL = [
    # (From domain, XFORWARD attributes, reply code, DKIM part of the log line)
    ("[192.0.2.1]", b"ADDR=192.0.2.1", 250, "exempt: IP literal [192.0.2.1] is the client address"),
    (
        "[IPv6:2001:db8::1]",
        b"NAME=[UNAVAILABLE] ADDR=IPv6:2001:db8:0::1",
        250,
        "exempt: IP literal [IPv6:2001:db8::1] is the client address",
    ),
    (
        "[192.0.2.1]",
        b"ADDR=192.0.2.7",
        550,
        "failed for mail from <alice@[192.0.2.1]>: "
        "IP literal [192.0.2.1] is not the client address 192.0.2.7",
    ),
    (
        "[192.0.2.1]",
        b"",
        550,
        "failed for mail from <alice@[192.0.2.1]>: "
        "IP literal [192.0.2.1] and no client address (XFORWARD ADDR)",
    ),
    (
        "[192.0.2.1]",
        b"ADDR=[UNAVAILABLE]",
        550,
        "failed for mail from <alice@[192.0.2.1]>: "
        "IP literal [192.0.2.1] and no client address (XFORWARD ADDR)",
    ),
]


@pytest.mark.parametrize("literal, xforward, code, dkim", IP_LITERAL)
async def test_ip_literal_from_is_exempt_only_from_that_address(
    tmp_path, sink, silent_dns, caplog, literal, xforward, code, dkim
):
    caplog.set_level(logging.INFO, logger="filtermail")
    sender = f"alice@{literal}"
    message = mail_from(sender)
    async with dkim_filter(tmp_path, sink, silent_dns) as f:
        client = await Client.connect(f.port)
        got = await client.send_mail(sender, [LOCAL], message, xforward=xforward)
        assert got[0] == code, got
        if code == 550:
            assert got == DKIM_550
        await client.close()
    assert [m.data for m in sink.messages] == ([message] if code == 250 else [])
    assert dkim_lines(caplog) == [f"{LINE} DKIM {dkim}"]
    assert not asked(silent_dns)


async def test_forwarded_address_holds_for_one_transaction(tmp_path, sink, silent_dns):
    sender = "alice@[192.0.2.1]"
    message = mail_from(sender)
    async with dkim_filter(tmp_path, sink, silent_dns) as f:
        client = await Client.connect(f.port)
        code, text = await client.send_mail(sender, [LOCAL], message, xforward=b"ADDR=192.0.2.1")
        assert code == 250, text
        # the next transaction on this connection had no XFORWARD: no exemption
        assert await client.send_mail(sender, [LOCAL], message) == DKIM_550
        # nor after a RSET
        assert await client.cmd(b"XFORWARD ADDR=192.0.2.1") == (250, "2.0.0 Ok")
        assert (await client.cmd(b"RSET"))[0] == 250
        assert await client.send_mail(sender, [LOCAL], message) == DKIM_550
        # and never inside a transaction
        assert (await client.cmd(b"MAIL FROM:<" + sender.encode() + b">"))[0] == 250
        assert await client.cmd(b"XFORWARD ADDR=192.0.2.1") == (
            503,
            "5.5.1 Error: MAIL transaction in progress",
        )
        await client.close()
    assert len(sink.messages) == 1
