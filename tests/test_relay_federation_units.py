"""The pure pieces of two federated relays: zone data, unbound.conf, the peering layout.

The rendered unbound.conf and main.cf are also given to the real `unbound-checkconf` and
`postconf`, so a line they do not take fails here, not at `up --pair`.
"""

import dataclasses
import subprocess

import pytest

from chatmaild.config import read_config
from chatmaild.relay.netns import resolv_conf_text
from chatmaild.relay.peering import Peering
from chatmaild.relay.resolver import unbound_conf
from chatmaild.render.files import local_layout, production_layout, render_relay
from chatmaild.render.zone import (
    Record,
    Zone,
    dkim_record,
    dkim_txt,
    local_data_lines,
    relay_zone,
    txt_strings,
)

from conftest import require_tool, write_ini

KEY_B64 = "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA" + "x" * 348


def test_relay_zone_has_what_a_relay_publishes():
    zone = relay_zone("relay-a.test", "10.77.0.1", dkim_txt(KEY_B64), mta_sts_id="42")
    records = {(r.name, r.type): r.value for r in zone.records}
    assert records == {
        ("relay-a.test", "A"): "10.77.0.1",
        ("mta-sts.relay-a.test", "A"): "10.77.0.1",
        ("www.relay-a.test", "A"): "10.77.0.1",
        ("relay-a.test", "MX"): "10 relay-a.test",
        ("relay-a.test", "TXT"): "v=spf1 a mx -all",
        ("_dmarc.relay-a.test", "TXT"): "v=DMARC1; p=reject; adkim=s; aspf=s",
        ("_mta-sts.relay-a.test", "TXT"): "v=STSv1; id=42",
        ("opendkim._domainkey.relay-a.test", "TXT"): f"v=DKIM1; k=rsa; p={KEY_B64}",
        ("_submission._tcp.relay-a.test", "SRV"): "0 1 587 relay-a.test",
        ("_submissions._tcp.relay-a.test", "SRV"): "0 1 465 relay-a.test",
        ("_imap._tcp.relay-a.test", "SRV"): "0 1 143 relay-a.test",
        ("_imaps._tcp.relay-a.test", "SRV"): "0 1 993 relay-a.test",
    }


def test_zone_without_dkim_key_publishes_none():
    zone = relay_zone("relay-b.test", "10.77.0.2")
    assert not [r for r in zone.records if "_domainkey" in r.name]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", '""'),
        ("v=STSv1; id=1", '"v=STSv1; id=1"'),
        ("a" * 255, '"' + "a" * 255 + '"'),
        ("a" * 255 + "b", '"' + "a" * 255 + '" "b"'),
        ("a" * 600, '"' + "a" * 255 + '" "' + "a" * 255 + '" "' + "a" * 90 + '"'),
    ],
)
def test_txt_text_is_split_into_255_octet_strings(text, expected):
    assert txt_strings(text) == expected


@pytest.mark.parametrize("text", ['say "hi"', "it's", "back\\slash", "new\nline"])
def test_txt_text_that_would_need_escaping_is_refused(text):
    with pytest.raises(ValueError):
        txt_strings(text)


def test_local_data_lines_make_every_zone_static_and_the_root_too():
    zones = [
        relay_zone("relay-a.test", "10.77.0.1", dkim_txt("")),
        Zone("sender.test", (dkim_record("sender.test", dkim_txt("AAAA"), selector="good"),)),
    ]
    lines = local_data_lines(zones)
    assert lines[0] == 'local-zone: "." static'
    assert 'local-zone: "relay-a.test." static' in lines
    assert 'local-zone: "sender.test." static' in lines
    assert "local-data: 'relay-a.test. 300 IN MX 10 relay-a.test.'" in lines
    assert "local-data: 'relay-a.test. 300 IN A 10.77.0.1'" in lines
    assert "local-data: '_imaps._tcp.relay-a.test. 300 IN SRV 0 1 993 relay-a.test.'" in lines
    assert "local-data: 'opendkim._domainkey.relay-a.test. 300 IN TXT \"v=DKIM1; k=rsa; p=\"'" in (
        lines
    )
    assert "local-data: 'good._domainkey.sender.test. 300 IN TXT \"v=DKIM1; k=rsa; p=AAAA\"'" in (
        lines
    )


def test_real_unbound_checkconf_accepts_the_configuration(tmp_path):
    require_tool("unbound-checkconf")
    zones = [
        relay_zone("relay-a.test", "10.77.0.1", dkim_txt(KEY_B64)),
        relay_zone("relay-b.test", "10.77.0.2", dkim_txt("")),
        Zone("sender.test", (Record("sender.test", "A", "10.77.0.9"),)),
    ]
    conf = tmp_path / "unbound.conf"
    conf.write_text(unbound_conf(tmp_path, zones))
    result = subprocess.run(["unbound-checkconf", str(conf)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no errors" in result.stdout
    text = conf.read_text()
    assert "interface: 127.0.0.1" in text and "port: 53" in text
    assert 'module-config: "iterator"' in text  # no DNSSEC validation of test zones
    assert "control-enable: no" in text


def test_resolv_conf_points_at_the_local_resolver():
    assert resolv_conf_text() == "nameserver 127.0.0.1\n"


@pytest.fixture
def config(tmp_path):
    return read_config(write_ini(tmp_path / "chatmail.ini", mail_domain="relay-a.test"))


def test_peering_adds_the_link_address_and_the_test_ca_only(config, tmp_path):
    peering = Peering("10.77.0.1", tmp_path / "ca")
    plain = local_layout(tmp_path / "state")
    peered = dataclasses.replace(plain, **peering.layout_changes(plain))
    before = {p.name: t for p, t in render_relay(config, plain).items()}
    after = {p.name: t for p, t in render_relay(config, peered).items()}
    assert "inet_interfaces = 127.0.0.1, 10.77.0.1" in after["main.cf"]
    assert f"smtp_tls_CAfile = {tmp_path / 'ca' / 'ca.pem'}" in after["main.cf"]
    assert "smtp_tls_security_level = verify" in after["main.cf"]
    changed = set(after["main.cf"].splitlines()) ^ set(before["main.cf"].splitlines())
    assert changed == {
        "inet_interfaces = 127.0.0.1",
        "inet_interfaces = 127.0.0.1, 10.77.0.1",
        f"smtp_tls_CAfile = {tmp_path / 'ca' / 'ca.pem'}",
    }
    # nginx's 443 (the ALPN mux, /mxdeliv behind it) listens on the link address too
    changed = set(after["nginx.conf"].splitlines()) ^ set(before["nginx.conf"].splitlines())
    assert {line.strip() for line in changed} == {"listen 10.77.0.1:443;"}
    same = set(after) - {"main.cf", "nginx.conf"}
    assert {k: after[k] for k in same} == {k: before[k] for k in same}
    assert peering.certificate_names("relay-a.test") == [
        "relay-a.test",
        "www.relay-a.test",
        "mta-sts.relay-a.test",
        "127.0.0.1",
        "10.77.0.1",
    ]
    assert Peering.from_json(peering.to_json()) == peering
    assert Peering.from_json(None) is None


def test_production_rendering_trusts_only_the_system_cas(config):
    main = {p.name: t for p, t in render_relay(config, production_layout(config)).items()}
    assert "smtp_tls_CAfile" not in main["main.cf"]
    assert "smtp_tls_CApath = /etc/ssl/certs" in main["main.cf"]


def test_real_postconf_reads_the_peering_settings(config, tmp_path):
    require_tool("postconf")
    layout = dataclasses.replace(
        local_layout(tmp_path / "state"), **Peering("10.77.0.1", tmp_path / "ca").layout_changes()
    )
    for path, text in render_relay(config, layout).items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    out = subprocess.run(
        [
            "postconf",
            "-c",
            str(layout.postfix_config_dir),
            "-h",
            "smtp_tls_CAfile",
            "inet_interfaces",
            "smtp_tls_security_level",
            "smtp_host_lookup",
            "disable_dns_lookups",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.splitlines() == [
        str(tmp_path / "ca" / "ca.pem"),
        "127.0.0.1, 10.77.0.1",
        "verify",
        "dns",  # the peer's MX and A come from the resolver, not the hosts file
        "no",
    ]
