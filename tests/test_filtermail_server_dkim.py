"""filtermail incoming with DKIM verification over real sockets: raw client -> filter (keys
from a private unbound) -> aiosmtpd recording sink. Refused mail never reaches the sink, and
the filter keeps serving the same connection after every refusal."""

import logging
import socket
import subprocess
import time

import pytest
from dkim_samples import SELECTOR, ed25519_key, rsa_key, sign
from filtermail_samples import armor, encrypt, encrypted_mail, plain_mail
from filtermail_server_helpers import Client, Filter, closed_port
from unbound_instance import Unbound, require_unbound, txt

from chatmaild.filtermail.dkimcheck import MAX_TRIED
from chatmaild.filtermail.dkimkeys import REFRESH_MIN_AGE, KeyFetcher

from conftest import daemon_argv, daemon_env, write_ini

DOMAIN = "sender.example"
SENDER = f"alice@{DOMAIN}"
LOCAL = "bob@chat.example"
KEY = rsa_key("a")
WRONG_KEY = rsa_key("b")
ED_KEY = ed25519_key("a")
WRONG_ED_KEY = ed25519_key("b")
REFUSED_DOMAIN = "refused.example"  # its nameserver answers REFUSED: no key can be had
DKIM_550 = (550, "5.7.1 No valid DKIM signature found")


@pytest.fixture(scope="module")
def unbound(tmp_path_factory):
    require_unbound()
    zones = {
        DOMAIN: [
            (f"{SELECTOR}._domainkey", 300, "TXT", txt(KEY.record())),
            ("revoked._domainkey", 300, "TXT", txt("v=DKIM1; k=rsa; p=")),
            ("rotated._domainkey", 3600, "TXT", txt(KEY.record())),
            ("ed._domainkey", 300, "TXT", txt(ED_KEY.record())),
        ]
    }
    refused = (REFUSED_DOMAIN,)
    with Unbound(tmp_path_factory.mktemp("unbound"), zones, refused=refused) as server:
        yield server


def dkim_filter(tmp_path, sink, nameserver, clock=time.monotonic, **params):
    fetcher = KeyFetcher(nameserver, timeout=0.5, clock=clock)
    params.setdefault("filtermail_dkim_check", "true")
    return Filter(tmp_path, "incoming", sink.port, key_fetcher=fetcher, **params)


def encrypted(sender=SENDER) -> bytes:
    return encrypted_mail(armor(encrypt(("x25519",), 1500)), sender=sender, to=LOCAL)


def dkim_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if "DKIM" in r.getMessage()]


async def test_signed_encrypted_mail_is_reinjected_unchanged(tmp_path, sink, unbound):
    signed = sign(encrypted(), DOMAIN, KEY)
    async with dkim_filter(tmp_path, sink, ("127.0.0.1", unbound.port)) as f:
        client = await Client.connect(f.port)
        before = unbound.queries()
        for _ in range(3):
            code, text = await client.send_mail(SENDER, [LOCAL], signed)
            assert code == 250, text
        assert unbound.queries() - before == 1  # the key is cached by its TTL
        await client.close()
    assert [m.data for m in sink.messages] == [signed] * 3


async def test_a_key_rotated_within_its_ttl_is_fetched_again(tmp_path, sink, unbound, caplog):
    """A sender that replaced its key is refused only until our cached answer is a minute
    old: the failing verification asks DNS again (once per name per REFRESH_MIN_AGE)."""
    now = [1000.0]
    old_mail = sign(encrypted(), DOMAIN, KEY, "rotated")
    new_mail = sign(encrypted(), DOMAIN, WRONG_KEY, "rotated")
    owner = f"rotated._domainkey.{DOMAIN}"
    caplog.set_level(logging.INFO, logger="filtermail")
    async with dkim_filter(tmp_path, sink, ("127.0.0.1", unbound.port), lambda: now[0]) as f:
        client = await Client.connect(f.port)
        before = unbound.queries()
        assert (await client.send_mail(SENDER, [LOCAL], old_mail))[0] == 250
        unbound.replace_record(owner, 3600, "TXT", txt(WRONG_KEY.record()))
        # the cached answer is fresh: no new query, the new signature fails for now
        assert await client.send_mail(SENDER, [LOCAL], new_mail) == DKIM_550
        assert unbound.queries() - before == 1
        now[0] += REFRESH_MIN_AGE
        code, text = await client.send_mail(SENDER, [LOCAL], new_mail)
        assert code == 250, text
        assert unbound.queries() - before == 2
        # mail signed with the retired key now fails; the fresh answer is not asked again
        for _ in range(3):
            assert await client.send_mail(SENDER, [LOCAL], old_mail) == DKIM_550
        assert unbound.queries() - before == 2
        await client.close()
    assert [m.data for m in sink.messages] == [old_mail, new_mail]


async def test_ed25519_only_mail_is_accepted_with_its_published_key(tmp_path, sink, unbound):
    """RFC 8463: mail signed only with ed25519-sha256 (by dkimpy) passes with the key from
    DNS; the same mail signed with another Ed25519 key is refused."""
    good = sign(encrypted(), DOMAIN, ED_KEY, "ed")
    wrong = sign(encrypted(), DOMAIN, WRONG_ED_KEY, "ed")
    assert b"a=ed25519-sha256" in good and b"a=rsa-sha256" not in good
    async with dkim_filter(tmp_path, sink, ("127.0.0.1", unbound.port)) as f:
        client = await Client.connect(f.port)
        code, text = await client.send_mail(SENDER, [LOCAL], good)
        assert code == 250, text
        assert await client.send_mail(SENDER, [LOCAL], wrong) == DKIM_550
        await client.close()
    assert [m.data for m in sink.messages] == [good]


def many_signatures(domain: str, count: int) -> bytes:
    """Encrypted mail from `domain` with `count` aligned signatures (right body hash, a key
    that is not published, selectors s0..s{count-1})."""
    mail = encrypted(f"alice@{domain}")
    for i in range(count):
        mail = sign(mail, domain, WRONG_KEY, f"s{i}")
    return mail


MANY_SIGNATURE_CASES = {
    # no key published under any of the selectors: NXDOMAIN, a permanent refusal
    "unpublished": (DOMAIN, DKIM_550),
    # the domain's nameserver refuses: every lookup fails for now
    "dns refused": (REFUSED_DOMAIN, 451),
}


@pytest.mark.parametrize("case", sorted(MANY_SIGNATURE_CASES))
async def test_fifty_aligned_signatures_cost_at_most_the_capped_queries(
    tmp_path, sink, unbound, caplog, case
):
    """Issue 19: the keys of at most MAX_TRIED signatures are asked for (counted by unbound),
    and the decision is one short log line."""
    domain, expected = MANY_SIGNATURE_CASES[case]
    sender = f"alice@{domain}"
    mail = many_signatures(domain, 50)
    caplog.set_level(logging.INFO, logger="filtermail")
    async with dkim_filter(tmp_path, sink, ("127.0.0.1", unbound.port)) as f:
        client = await Client.connect(f.port)
        before = unbound.queries()
        reply = await client.send_mail(sender, [LOCAL], mail)
        queries = unbound.queries() - before
        await client.close()
    if isinstance(expected, int):
        assert reply[0] == expected, reply
    else:
        assert reply == expected
    assert 1 <= queries <= MAX_TRIED
    assert sink.messages == []
    lines = [r.getMessage() for r in caplog.records if r.name == "filtermail"]
    decisions = [line for line in lines if "DKIM" in line]
    assert len(decisions) == 1, lines
    assert len(decisions[0].encode()) <= 500, decisions[0]


def tampered_body(mail: bytes) -> bytes:
    """Text added after the closing boundary: still encrypted, no longer what was signed."""
    return mail + b"added by someone on the way\r\n"


REFUSALS = {
    "unsigned": (lambda: encrypted(), "no signature"),
    "other domain": (
        lambda: sign(encrypted(), "other.example", KEY),
        f"d=other.example does not match From domain {DOMAIN}",
    ),
    "body changed": (
        lambda: tampered_body(sign(encrypted(), DOMAIN, KEY)),
        f"d={DOMAIN} s={SELECTOR}: body hash mismatch",
    ),
    "wrong key": (
        lambda: sign(encrypted(), DOMAIN, WRONG_KEY),
        f"d={DOMAIN} s={SELECTOR}: signature did not verify",
    ),
    "revoked key": (
        lambda: sign(encrypted(), DOMAIN, KEY, "revoked"),
        f"d={DOMAIN} s=revoked: key revoked (empty p=)",
    ),
    "no key": (
        lambda: sign(encrypted(), DOMAIN, KEY, "gone"),
        f"gone._domainkey.{DOMAIN}: no such name gone._domainkey.{DOMAIN}",
    ),
}


@pytest.mark.parametrize("case", sorted(REFUSALS))
async def test_refusals_get_550_and_reach_nothing(tmp_path, sink, unbound, caplog, case):
    make, reason = REFUSALS[case]
    good = sign(encrypted(), DOMAIN, KEY)
    caplog.set_level(logging.INFO, logger="filtermail")
    async with dkim_filter(tmp_path, sink, ("127.0.0.1", unbound.port)) as f:
        client = await Client.connect(f.port)
        assert await client.send_mail(SENDER, [LOCAL], make()) == DKIM_550
        code, text = await client.send_mail(SENDER, [LOCAL], good)  # same session goes on
        assert code == 250, text
        await client.close()
        metrics = f.server.handler.metrics
        assert metrics.outcome["dkim_failed"].value == 1
        assert metrics.outcome["encrypted"].value == 1
    assert [m.data for m in sink.messages] == [good]
    expected = f"Incoming: Filtering encrypted mail. DKIM failed for mail from <{SENDER}>: {reason}"
    assert dkim_lines(caplog) == [expected]


async def test_dns_down_gets_451_and_reaches_nothing(tmp_path, sink, caplog):
    caplog.set_level(logging.INFO, logger="filtermail")
    name = f"{SELECTOR}._domainkey.{DOMAIN}"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))  # a resolver that never answers
        async with dkim_filter(tmp_path, sink, silent.getsockname()) as f:
            client = await Client.connect(f.port)
            for _ in range(2):  # not cached: asked again, refused again
                code, text = await client.send_mail(SENDER, [LOCAL], sign(encrypted(), DOMAIN, KEY))
                assert code == 451, text
                assert text.startswith("4.7.1 Cannot verify the DKIM signature now")
                assert f"DNS timeout for {name}" in text
            # unsigned mail needs no DNS: still a permanent refusal
            assert await client.send_mail(SENDER, [LOCAL], encrypted()) == DKIM_550
            # an IP-only relay needs no DNS either
            literal = "alice@[192.0.2.1]"
            code, text = await client.send_mail(
                literal, [LOCAL], encrypted(literal), xforward=b"ADDR=192.0.2.1"
            )
            assert code == 250, text
            await client.close()
            assert f.server.handler.metrics.outcome["dkim_temporary"].value == 2
    assert len(sink.messages) == 1
    lines = dkim_lines(caplog)
    assert lines[0] == (
        "Incoming: Filtering encrypted mail. DKIM temporary failure for mail from "
        f"<{SENDER}>: DNS timeout for {name}"
    )
    assert lines[-1] == (
        "Incoming: Filtering encrypted mail. DKIM exempt: IP literal [192.0.2.1] is the client"
        " address"
    )


async def test_cleartext_refused_by_policy_before_any_dns(tmp_path, sink, unbound):
    async with dkim_filter(tmp_path, sink, ("127.0.0.1", unbound.port)) as f:
        mailbox = f.config.mailboxes_dir / LOCAL
        mailbox.mkdir(parents=True)
        (mailbox / "enforceE2EEincoming").write_text("")
        client = await Client.connect(f.port)
        before = unbound.queries()
        plain = sign(plain_mail(sender=SENDER, to=LOCAL), DOMAIN, KEY)
        code, _ = await client.send_mail(SENDER, [LOCAL], plain)
        assert code == 523
        assert unbound.queries() == before
        await client.close()
    assert sink.messages == []


async def test_off_switch_accepts_unsigned(tmp_path, sink):
    async with Filter(tmp_path, "incoming", sink.port, filtermail_dkim_check="false") as f:
        assert f.server.handler.key_fetcher is None
        client = await Client.connect(f.port)
        code, text = await client.send_mail(SENDER, [LOCAL], encrypted())
        assert code == 250, text
        await client.close()
    assert len(sink.messages) == 1


@pytest.mark.parametrize(
    "setting, expected",
    [
        (
            "false",
            "DKIM verification of incoming mail is OFF (filtermail_dkim_check = false): "
            "for tests only",
        ),
        ("true", "DKIM verification of incoming mail is on, keys from 127.0.0.1 port 53"),
    ],
)
def test_daemon_logs_the_setting_at_start(tmp_path, setting, expected):
    ini = write_ini(
        tmp_path / "chatmail.ini",
        mailboxes_dir=tmp_path / "mailboxes",
        filtermail_smtp_port_incoming=closed_port(),
        filtermail_http_port_incoming=closed_port(),
        filtermail_dkim_check=setting,
        filtermail_dkim_nameserver="127.0.0.1:53",
    )
    proc = subprocess.Popen(
        daemon_argv("chatmaild.filtermail", ini, "incoming"),
        env=daemon_env(),
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        lines = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and expected not in lines:
            line = proc.stderr.readline()
            if not line:
                break
            lines.append(line.rstrip("\n"))
    finally:
        proc.terminate()
        proc.wait(15)
    assert expected in lines, lines
    assert sum("DKIM" in line for line in lines) == 1, lines
