"""chatmail-extra-metrics with fake fail2ban-client, wg, postqueue and doveadm on PATH."""

import math
import os
import subprocess
import sys
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from chatmaild.metrics import extraparse

from conftest import daemon_env, write_ini, write_self_signed_cert

F2B_STATUS = "Status\n|- Number of jail:\t2\n`- Jail list:\tsshd, dovecot\n"
F2B_JAIL = """Status for the jail: {jail}
|- Filter
|  |- Currently failed:\t2
|  |- Total failed:\t40
|  `- File list:\t/var/log/auth.log
`- Actions
   |- Currently banned:\t{cur}
   |- Total banned:\t{tot}
   `- Banned IP list:\t192.0.2.1 192.0.2.2
"""
NOW = 1_780_000_000
WG_DUMP = (
    "wg0\tcHJpdmF0ZQ==\tcHVibGlj\t51820\toff\n"
    f"wg0\tcGVlckE=\t(none)\t198.51.100.1:51820\t10.0.0.2/32\t{NOW - 42}\t1000\t2000\t25\n"
    "wg0\tcGVlckI=\t(none)\t(none)\t10.0.0.3/32\t0\t0\t0\toff\n"
)
POSTQUEUE = (
    '{"queue_name": "deferred", "queue_id": "5C3D22C0789", "arrival_time": 1780000000, '
    '"message_size": 2876, "sender": "a@eijo.im", "recipients": [{"address": "b@x.org"}]}\n'
    '{"queue_name": "active", "queue_id": "6D4E33C0ABC", "arrival_time": 1780000001, '
    '"message_size": 100, "sender": "", "recipients": [{"address": "c@y.org"}]}\n'
)
DOVEADM_WHO = (
    "username         proto pid   ip\n"
    "alice@eijo.im    imap  20630 198.51.100.23\n"
    "alice@eijo.im    imap  20631 198.51.100.24\n"
    "bob@eijo.im      imap  20640 203.0.113.9\n"
)


def test_parsers():
    assert extraparse.fail2ban_jails(F2B_STATUS) == ["sshd", "dovecot"]
    assert extraparse.fail2ban_jails("Status\n`- Jail list:\t\n") == []
    assert extraparse.fail2ban_jail_counts(F2B_JAIL.format(jail="x", cur=1, tot=7)) == (1, 7)
    peers = extraparse.wireguard_peers(WG_DUMP, NOW)
    assert [(p["peer"], p["handshake_age"], p["rx"], p["tx"]) for p in peers] == [
        ("cGVlckE=", 42, 1000, 2000),
        ("cGVlckI=", math.inf, 0, 0),
    ]
    assert extraparse.postqueue_depth(POSTQUEUE) == 2
    assert extraparse.postqueue_depth("") == 0
    assert extraparse.doveadm_who_users(DOVEADM_WHO) == 2
    assert extraparse.doveadm_who_users("") == 0


@pytest.mark.parametrize(
    "parser, text",
    [
        (extraparse.fail2ban_jails, "Sorry, unknown command"),
        (extraparse.fail2ban_jail_counts, "Status for the jail: x\n"),
        (lambda t: extraparse.wireguard_peers(t, NOW), "wg0\tonly\tthree"),
        (lambda t: extraparse.wireguard_peers(t, NOW), "wg0\ta\tb\tc\td\tnot-a-number\t1\t2\t3"),
        (extraparse.postqueue_depth, "Mail queue is empty"),
        (extraparse.postqueue_depth, '{"no_queue_id": 1}'),
    ],
)
def test_parsers_refuse_garbage(parser, text):
    with pytest.raises(ValueError):
        parser(text)


def make_tools(bindir, failing=None, missing=None):
    """Fake tools printing the recorded outputs; `failing` exits 1, `missing` is absent."""
    outputs = {
        "fail2ban-client": None,
        "wg": WG_DUMP,
        "postqueue": POSTQUEUE,
        "doveadm": DOVEADM_WHO,
    }
    bindir.mkdir(exist_ok=True)
    for tool, output in outputs.items():
        if tool == missing:
            continue
        path = bindir / tool
        if tool == failing:
            path.write_text(f"#!/bin/sh\necho '{tool}: something broke' >&2\nexit 1\n")
        elif tool == "fail2ban-client":
            (bindir / "f2b-status").write_text(F2B_STATUS)
            (bindir / "f2b-sshd").write_text(F2B_JAIL.format(jail="sshd", cur=3, tot=17))
            (bindir / "f2b-dovecot").write_text(F2B_JAIL.format(jail="dovecot", cur=0, tot=5))
            path.write_text(
                f'#!/bin/sh\n[ "$1" = status ] || exit 2\n'
                f'if [ -z "$2" ]; then exec /bin/cat {bindir}/f2b-status; fi\n'
                f'exec /bin/cat {bindir}/f2b-"$2"\n'
            )
        else:
            (bindir / f"{tool}.out").write_text(output)
            path.write_text(f"#!/bin/sh\nexec /bin/cat {bindir}/{tool}.out\n")
        path.chmod(0o755)


def run_extra(tmp_path, bindir, *args):
    env = daemon_env()
    env["PATH"] = str(bindir)
    proc = subprocess.run(
        [sys.executable, "-m", "chatmaild.metrics.extra", "--textfile-dir", tmp_path, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    prom = tmp_path / "chatmail_extra.prom"
    samples = {}
    for family in text_string_to_metric_families(prom.read_text()):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert leftovers == []
    return samples, proc.stderr


FULL = {
    ("fail2ban_banned_total", (("jail", "sshd"),)): 3,
    ("fail2ban_banned_total", (("jail", "dovecot"),)): 0,
    ("fail2ban_bans_total", (("jail", "sshd"),)): 17,
    ("fail2ban_bans_total", (("jail", "dovecot"),)): 5,
    ("wireguard_received_bytes_total", (("interface", "wg0"), ("peer", "cGVlckE="))): 1000,
    ("wireguard_sent_bytes_total", (("interface", "wg0"), ("peer", "cGVlckE="))): 2000,
    ("wireguard_received_bytes_total", (("interface", "wg0"), ("peer", "cGVlckI="))): 0,
    ("wireguard_sent_bytes_total", (("interface", "wg0"), ("peer", "cGVlckI="))): 0,
    ("postfix_queue_depth", ()): 2,
    ("dovecot_connected_users", ()): 2,
}
FAMILY_OF = {
    "fail2ban-client": "fail2ban_",
    "wg": "wireguard_",
    "postqueue": "postfix_queue_depth",
    "doveadm": "dovecot_connected_users",
}


def check_samples(samples, dropped_prefix=None):
    expected = {
        k: v for k, v in FULL.items() if not (dropped_prefix and k[0].startswith(dropped_prefix))
    }
    got = {k: v for k, v in samples.items() if not k[0].startswith(("wireguard_last", "tls_"))}
    assert got == expected
    if dropped_prefix != "wireguard_":
        peer_a = (("interface", "wg0"), ("peer", "cGVlckE="))
        peer_b = (("interface", "wg0"), ("peer", "cGVlckI="))
        age = samples[("wireguard_last_handshake_seconds", peer_a)]
        assert abs(age - (time.time() - (NOW - 42))) < 60
        assert samples[("wireguard_last_handshake_seconds", peer_b)] == math.inf


def test_all_sources(tmp_path):
    bindir = tmp_path / "bin"
    make_tools(bindir)
    out = tmp_path / "out"
    out.mkdir()
    samples, stderr = run_extra(out, bindir)
    check_samples(samples)
    assert stderr == ""


@pytest.mark.parametrize("tool", list(FAMILY_OF))
def test_failing_tool_drops_only_its_family(tmp_path, tool):
    bindir = tmp_path / "bin"
    make_tools(bindir, failing=tool)
    out = tmp_path / "out"
    out.mkdir()
    samples, stderr = run_extra(out, bindir)
    check_samples(samples, dropped_prefix=FAMILY_OF[tool])
    assert len(stderr.splitlines()) == 1
    assert tool in stderr and "exited 1" in stderr


@pytest.mark.parametrize("tool", list(FAMILY_OF))
def test_missing_tool_drops_only_its_family(tmp_path, tool):
    bindir = tmp_path / "bin"
    make_tools(bindir, missing=tool)
    out = tmp_path / "out"
    out.mkdir()
    samples, stderr = run_extra(out, bindir)
    check_samples(samples, dropped_prefix=FAMILY_OF[tool])
    assert stderr.strip().endswith(f"{tool} not found")


def test_certificates(tmp_path):
    bindir = tmp_path / "bin"
    make_tools(bindir)
    write_self_signed_cert(tmp_path / "a.pem", "eijo.im", 30)
    write_self_signed_cert(tmp_path / "b.pem", "mta-sts.eijo.im", 2)
    out = tmp_path / "out"
    out.mkdir()
    samples, stderr = run_extra(
        out, bindir, "--cert", tmp_path / "a.pem", "--cert", f"www.eijo.im={tmp_path / 'b.pem'}"
    )
    assert 29.9 < samples[("tls_cert_expiry_days", (("domain", "eijo.im"),))] <= 30
    assert 1.9 < samples[("tls_cert_expiry_days", (("domain", "www.eijo.im"),))] <= 2
    check_samples(samples)
    # a broken certificate drops the tls family only
    (tmp_path / "bad.pem").write_text("not a certificate\n")
    samples, stderr = run_extra(out, bindir, "--cert", tmp_path / "bad.pem")
    assert not any(k[0] == "tls_cert_expiry_days" for k in samples)
    check_samples(samples)
    assert "tls certificates: dropped" in stderr


def test_output_file_and_stdout(tmp_path):
    bindir = tmp_path / "bin"
    make_tools(bindir, missing="wg")
    env = daemon_env()
    env["PATH"] = str(bindir)
    target = tmp_path / "x.prom"
    target.write_text("old content\n")
    subprocess.run(
        [sys.executable, "-m", "chatmaild.metrics.extra", "--output", target],
        env=env, check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    assert "postfix_queue_depth 2.0" in target.read_text()
    assert oct(os.stat(target).st_mode & 0o777) == "0o644"
    proc = subprocess.run(
        [sys.executable, "-m", "chatmaild.metrics.extra"],
        env=env, check=True, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert "dovecot_connected_users 2.0" in proc.stdout


def test_relay_certificate_from_the_config(tmp_path):
    """With CONFIG, <acme-dir>/<mail_domain>/fullchain is reported under the mail_domain."""
    bindir = tmp_path / "bin"
    make_tools(bindir)
    ini = write_ini(tmp_path / "chatmail.ini", mail_domain="relay.example")
    acme = tmp_path / "acme-live"
    (acme / "relay.example").mkdir(parents=True)
    write_self_signed_cert(acme / "relay.example" / "fullchain", "relay.example", 60)
    write_self_signed_cert(tmp_path / "mta-sts.pem", "mta-sts.relay.example", 10)
    out = tmp_path / "out"
    out.mkdir()
    samples, stderr = run_extra(
        out, bindir, ini, "--acme-dir", acme, "--cert", tmp_path / "mta-sts.pem"
    )
    assert stderr == ""
    tls = {k: v for k, v in samples.items() if k[0] == "tls_cert_expiry_days"}
    assert set(tls) == {
        ("tls_cert_expiry_days", (("domain", "relay.example"),)),
        ("tls_cert_expiry_days", (("domain", "mta-sts.relay.example"),)),
    }
    assert 59.9 < tls[("tls_cert_expiry_days", (("domain", "relay.example"),))] <= 60
    check_samples(samples)
    # an explicit --cert for the mail domain replaces the default one
    write_self_signed_cert(tmp_path / "other.pem", "relay.example", 5)
    samples, stderr = run_extra(
        out, bindir, ini, "--acme-dir", acme, "--cert", f"relay.example={tmp_path / 'other.pem'}"
    )
    tls = {k: v for k, v in samples.items() if k[0] == "tls_cert_expiry_days"}
    assert list(tls) == [("tls_cert_expiry_days", (("domain", "relay.example"),))]
    assert 4.9 < tls[("tls_cert_expiry_days", (("domain", "relay.example"),))] <= 5


def test_missing_relay_certificate_is_one_line_and_no_family(tmp_path):
    bindir = tmp_path / "bin"
    make_tools(bindir)
    ini = write_ini(tmp_path / "chatmail.ini", mail_domain="relay.example")
    out = tmp_path / "out"
    out.mkdir()
    samples, stderr = run_extra(out, bindir, ini, "--acme-dir", tmp_path / "nothing")
    missing = tmp_path / "nothing" / "relay.example" / "fullchain"
    assert stderr == f"chatmail-extra-metrics: tls certificates: {missing} not found\n"
    assert not any(k[0] == "tls_cert_expiry_days" for k in samples)
    check_samples(samples)
    assert "tls_cert_expiry_days" not in (out / "chatmail_extra.prom").read_text()


def test_a_bad_certificate_costs_only_its_own_sample(tmp_path):
    bindir = tmp_path / "bin"
    make_tools(bindir)
    write_self_signed_cert(tmp_path / "good.pem", "relay.example", 30)
    (tmp_path / "bad.pem").write_text("not a certificate\n")
    out = tmp_path / "out"
    out.mkdir()
    samples, stderr = run_extra(
        out, bindir, "--cert", tmp_path / "bad.pem", "--cert", tmp_path / "good.pem"
    )
    tls = [k for k in samples if k[0] == "tls_cert_expiry_days"]
    assert tls == [("tls_cert_expiry_days", (("domain", "relay.example"),))]
    assert stderr.count("\n") == 1 and "bad.pem: not a PEM certificate" in stderr


def test_default_certificate_path_is_the_relays(ini_path):
    """The path the relay's Postfix and Dovecot are configured with (production layout)."""
    from chatmaild.config import read_config
    from chatmaild.metrics.extra import relay_cert
    from chatmaild.render.files import production_layout

    config = read_config(ini_path)
    assert relay_cert(str(ini_path)) == (config.mail_domain, production_layout(config).tls_cert)
