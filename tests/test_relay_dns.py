"""`python -m chatmaild.relay dns`: the records a relay publishes, and `--check`.

The printout is compared with the zone the two-relay test network serves (RelayPair.zones,
rendered into its unbound.conf), and `--check` asks a real Debian unbound serving that
configuration: everything ok, then a removed record and a changed one reported.
"""

import subprocess
import sys
import time

import pytest
from unbound_instance import UNBOUND, Unbound, free_udp_tcp_port, require_unbound

from chatmaild.config import read_config
from chatmaild.relay.federation import RelayPair
from chatmaild.relay.resolver import unbound_conf
from chatmaild.render import dnscheck, dnsrecords
from chatmaild.render.dkimkey import new_private_pem
from chatmaild.render.dnsrecords import (
    DIFFERENT,
    MISSING,
    OK,
    Check,
    Record,
    compare,
    relay_records,
    zone_lines,
)
from chatmaild.render.opendkim import txt_value
from chatmaild.render.zone import Zone

from conftest import REPO_ROOT, daemon_env, write_ini

KEY_TXT = "v=DKIM1; k=rsa; p=" + "A" * 392


def test_records_of_a_relay():
    records = relay_records(
        "eijo.im", ipv4="192.0.2.7", ipv6="2001:db8::7", dkim=KEY_TXT, mta_sts="abc", caa="ca.test"
    )
    got = {(r.name, r.type, r.value, r.required) for r in records}
    hosts = ("eijo.im", "www.eijo.im", "mta-sts.eijo.im")
    assert got == {
        *((h, "A", "192.0.2.7", True) for h in hosts),
        *((h, "AAAA", "2001:db8::7", True) for h in hosts),
        ("eijo.im", "MX", "10 eijo.im", True),
        ("eijo.im", "TXT", "v=spf1 a mx -all", True),
        ("opendkim._domainkey.eijo.im", "TXT", KEY_TXT, True),
        ("_dmarc.eijo.im", "TXT", "v=DMARC1; p=reject; adkim=s; aspf=s", True),
        ("_mta-sts.eijo.im", "TXT", "v=STSv1; id=abc", True),
        ("_submission._tcp.eijo.im", "SRV", "0 1 587 eijo.im", False),
        ("_submissions._tcp.eijo.im", "SRV", "0 1 465 eijo.im", False),
        ("_imap._tcp.eijo.im", "SRV", "0 1 143 eijo.im", False),
        ("_imaps._tcp.eijo.im", "SRV", "0 1 993 eijo.im", False),
        ("eijo.im", "CAA", '0 issue "ca.test"', False),
    }


def test_zone_snippet_comments_out_placeholders_and_splits_long_txt():
    lines = zone_lines(relay_records("eijo.im", mta_sts="abc"), ttl=600)
    assert lines[0] == "; required"
    assert "; optional" in lines
    a_lines = [line for line in lines if " IN A " in line]
    assert len(a_lines) == 3
    assert all(line.startswith("; ") and "<IPv4 of the server: --ipv4>" in line for line in a_lines)
    assert not any(" AAAA " in line for line in lines)  # no IPv6 given: none printed
    dkim = [line for line in lines if "_domainkey" in line]
    assert dkim[0].startswith("; opendkim._domainkey.eijo.im.")
    assert any(
        line.startswith("eijo.im. ") and line.endswith("IN MX    10 eijo.im.") for line in lines
    )
    long = zone_lines(relay_records("eijo.im", dkim=KEY_TXT, mta_sts="abc"))
    (dkim_line,) = [line for line in long if "_domainkey" in line]
    assert '"v=DKIM1; k=rsa; p=' in dkim_line and '" "' in dkim_line  # two strings, 255 max


def check_of(name, rtype, kind="", *expected, required=True):
    return Check(name, rtype, tuple(expected), required, kind)


COMPARISONS = [
    # (check, published, status)
    (check_of("d", "A", "", "192.0.2.7"), ["192.0.2.7"], OK),
    (check_of("d", "A", "", "192.0.2.7"), [], MISSING),
    (check_of("d", "A", "", "192.0.2.7"), ["192.0.2.8"], DIFFERENT),
    (check_of("d", "A", "", "192.0.2.7"), ["192.0.2.7", "192.0.2.8"], DIFFERENT),
    (check_of("d", "A", "", None), ["192.0.2.9"], OK),  # no address given: any will do
    (check_of("d", "A", "", None), [], MISSING),
    (check_of("d", "AAAA", "", "2001:db8::7"), ["2001:db8:0::7"], OK),
    (check_of("d", "MX", "", "10 d"), ["20 d"], OK),  # the preference is the operator's
    (check_of("d", "MX", "", "10 d"), ["10 mx.other"], DIFFERENT),
    (check_of("d", "TXT", "spf", "v=spf1 a mx -all"), ["v=spf1  a mx -all", "site=x"], OK),
    (check_of("d", "TXT", "spf", "v=spf1 a mx -all"), ["google-site-verification=x"], MISSING),
    (check_of("d", "TXT", "spf", "v=spf1 a mx -all"), ["v=spf1 a ~all"], DIFFERENT),
    (check_of("k", "TXT", "dkim", KEY_TXT), [KEY_TXT.replace("; k=rsa", "") + "; t=s"], OK),
    (check_of("k", "TXT", "dkim", KEY_TXT), ["v=DKIM1; k=rsa; p=" + "B" * 392], DIFFERENT),
    (check_of("k", "TXT", "dkim", None), ["v=DKIM1; k=rsa; p=AB"], OK),  # no key here
    (check_of("k", "TXT", "dkim", None), ["v=DKIM1; k=rsa; p="], DIFFERENT),  # revoked
    (check_of("m", "TXT", "dmarc", dnsrecords.DMARC), ["v=DMARC1;p=reject;adkim=s;aspf=s"], OK),
    (
        check_of("m", "TXT", "dmarc", dnsrecords.DMARC),
        ["v=DMARC1; p=reject; adkim=s; aspf=s; rua=mailto:x@d"],
        OK,
    ),
    (check_of("m", "TXT", "dmarc", dnsrecords.DMARC), ["v=DMARC1; p=none"], DIFFERENT),
    (check_of("s", "TXT", "sts", "v=STSv1; id=abc"), ["v=STSv1; id=abc"], OK),
    (check_of("s", "TXT", "sts", "v=STSv1; id=abc"), ["v=STSv1; id=202401011200"], DIFFERENT),
    (check_of("v", "SRV", "", "0 1 993 d"), ["0 1 993 d"], OK),
    (check_of("v", "SRV", "", "0 1 993 d"), ["0 1 994 d"], DIFFERENT),
    (check_of("d", "CAA", "", '0 issue "ca.test"'), ['0 issue "ca.test"'], OK),
    (check_of("d", "CAA", "", '0 issue "ca.test"'), ['0 issue "other.test"'], DIFFERENT),
]


@pytest.mark.parametrize("check, published, status", COMPARISONS)
def test_compare(check, published, status):
    assert compare(check, published) == status


@pytest.mark.parametrize(
    "text, expected",
    [
        ("127.0.0.1", ("127.0.0.1", 53)),
        ("127.0.0.1:5353", ("127.0.0.1", 5353)),
        ("::1", ("::1", 53)),
        ("[::1]:5353", ("::1", 5353)),
    ],
)
def test_nameserver_option(text, expected):
    assert dnscheck.split_nameserver(text) == expected


def test_ip_only_relay_publishes_nothing(tmp_path):
    ini = write_ini(tmp_path / "chatmail.ini", mail_domain="192.0.2.7")
    done = run_dns("--config", str(ini))
    assert done.returncode == 0, done.stderr
    assert "IP-only relay" in done.stdout and " IN " not in done.stdout


# -- against the two-relay test network --------------------------------------------------------


def run_dns(*args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "chatmaild.relay", "dns", *args],
        env=daemon_env(),
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def pair(tmp_path):
    """A relay pair as `up --pair` sees it once its relays are prepared: configs and DKIM
    keys (written to files here), nothing started."""
    pair = RelayPair(tmp_path / "pair", "dnstest")
    keys = {}
    for relay, domain in zip(pair.relays, pair.domains, strict=True):
        relay.config = read_config(write_ini(tmp_path / f"{domain}.ini", mail_domain=domain))
        keys[domain] = tmp_path / f"{domain}.private"
        keys[domain].write_bytes(new_private_pem(1024))
        relay.dkim_record = txt_value(keys[domain].read_bytes())
    return pair, keys


def served_records(zones, domain) -> set[tuple[str, str, str]]:
    """(name, type, rdata) the pair's unbound serves for `domain`, from its local-data."""
    conf_lines = [line.strip() for line in unbound_conf("/x", zones).splitlines()]
    served = set()
    for line in conf_lines:
        if not line.startswith("local-data: '"):
            continue
        name, _ttl, _in, rtype, data = line[len("local-data: '") : -1].split(None, 4)
        if name.rstrip(".").endswith(domain):
            served.add((name, rtype, data))
    return served


def printed_records(stdout) -> set[tuple[str, str, str]]:
    printed = set()
    for line in stdout.splitlines():
        if line and not line.startswith(";"):
            name, _ttl, _in, rtype, data = line.split(None, 4)
            printed.add((name, rtype, data))
    return printed


def test_printout_agrees_with_the_pair_zone(pair):
    pair, keys = pair
    zones = pair.zones()
    for domain, address in zip(pair.domains, pair.addresses, strict=True):
        ini = pair.state_dir.parent / f"{domain}.ini"
        done = run_dns("--config", str(ini), "--ipv4", address, "--dkim-key", str(keys[domain]))
        assert done.returncode == 0, done.stderr
        printed = printed_records(done.stdout)
        assert printed == served_records(zones, domain)
        assert any(rtype == "TXT" and "v=STSv1; id=" in data for _, rtype, data in printed)


class ServedPair:
    """The pair's resolver configuration served by a real unbound on a loopback port."""

    def __init__(self, run_dir, zones):
        require_unbound()
        self.port = free_udp_tcp_port()
        run_dir.mkdir(parents=True, exist_ok=True)
        conf = run_dir / "unbound.conf"
        conf.write_text(unbound_conf(run_dir, zones, port=self.port))
        self.proc = subprocess.Popen(
            [UNBOUND, "-d", "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        resolver = dnscheck.resolver(f"127.0.0.1:{self.port}", timeout=0.5)
        deadline = time.monotonic() + 15
        while True:
            try:
                if dnscheck.lookup(resolver, zones[0].domain, "A"):
                    break
            except dnscheck.LookupFailed:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"unbound did not start: see {run_dir / 'unbound.log'}")
            time.sleep(0.05)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


def check_pair(pair_and_keys, tmp_path, zones, side=0):
    pair, keys = pair_and_keys
    domain, address = pair.domains[side], pair.addresses[side]
    served = ServedPair(tmp_path / f"unbound-{len(list(tmp_path.iterdir()))}", zones)
    try:
        return run_dns(
            "--config",
            str(tmp_path / f"{domain}.ini"),
            "--ipv4",
            address,
            "--dkim-key",
            str(keys[domain]),
            "--check",
            "--nameserver",
            f"127.0.0.1:{served.port}",
        )
    finally:
        served.stop()


def without(zones, domain, drop) -> list[Zone]:
    """`zones` with the records of `domain` for which `drop(record)` is true left out."""
    out = []
    for zone in zones:
        records = zone.records
        if zone.domain == domain:
            records = tuple(r for r in records if not drop(r))
        out.append(Zone(zone.domain, records))
    return out


def test_check_against_the_pair_zone_reports_ok_then_a_removed_record(pair, tmp_path):
    pair_and_keys = pair
    pair, keys = pair_and_keys
    zones = pair.zones()
    done = check_pair(pair_and_keys, tmp_path, zones)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 12  # 3 A, MX, SPF, DKIM, DMARC, _mta-sts, 4 SRV
    assert all(line.startswith("ok ") for line in lines), lines

    domain = pair.domains[0]
    changed = without(zones, domain, lambda r: r.name == f"_dmarc.{domain}")
    changed = [
        Zone(
            z.domain,
            tuple(
                Record(r.name, r.type, "v=spf1 a ~all")
                if z.domain == domain and r.value == dnsrecords.SPF
                else r
                for r in z.records
            ),
        )
        for z in changed
    ]
    done = check_pair(pair_and_keys, tmp_path, changed)
    assert done.returncode == 1, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert f"missing   _dmarc.{domain} TXT: expected v=DMARC1; p=reject; adkim=s; aspf=s" in lines
    assert f"different {domain} TXT: published v=spf1 a ~all; expected v=spf1 a mx -all" in lines
    assert sum(line.startswith("ok ") for line in lines) == 10
    assert "2 required record(s) missing, different or not answered" in done.stderr


def test_check_of_an_optional_record_does_not_fail(pair, tmp_path):
    pair_and_keys = pair
    pair, _ = pair_and_keys
    domain = pair.domains[0]
    zones = without(pair.zones(), domain, lambda r: r.name == f"_imap._tcp.{domain}")
    done = check_pair(pair_and_keys, tmp_path, zones)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"missing   _imap._tcp.{domain} SRV (optional): expected 0 1 143 {domain}" in (
        done.stdout.splitlines()
    )


def test_check_when_the_nameserver_refuses_fails(pair, tmp_path):
    pair, _ = pair
    domain = pair.domains[0]
    with Unbound(tmp_path / "refusing", {}, refused=(domain,)) as refusing:
        done = run_dns(
            "--config",
            str(pair.state_dir.parent / f"{domain}.ini"),
            "--check",
            "--nameserver",
            f"127.0.0.1:{refusing.port}",
        )
    assert done.returncode == 1
    lines = done.stdout.splitlines()
    assert lines[0] == f"error     {domain} A: no answer (no nameserver answered)"
    assert all(line.startswith("error ") for line in lines)
