"""The upstream 1.12 chatmail.ini keys in the Postfix and Dovecot rendering.

Each variant is rendered from its own ini and must be accepted by the real `postconf`,
`postfix check` and `doveconf`, so no switch can produce a configuration the servers refuse.
"""

import grp
import os
import pwd
import subprocess

import pytest

from chatmaild.config import read_config
from chatmaild.render.files import local_layout, production_layout, render_relay

from conftest import require, require_tool, write_ini

VARIANTS = {
    "defaults": {},
    "connections": {"max_smtp_connections": 50, "max_imap_connections": 77},
    "rawlog": {"imap_rawlog": "true"},
    "compress": {"imap_compress": "true"},
    "rawlog+compress": {"imap_rawlog": "true", "imap_compress": "true"},
    "ipv4-only": {"disable_ipv6": "true"},
    "external-tls": {"tls_external_cert_and_key": "/etc/x/cert.pem /etc/x/key.pem"},
    "ip-only": {"mail_domain": "10.9.8.7"},
}


def _config(tmp_path, **params):
    params.setdefault("mail_domain", "eijo.im")
    return read_config(write_ini(tmp_path / "chatmail.ini", **params))


def _by_name(files):
    return {p.name: t for p, t in files.items()}


def _service(master, name):
    """A master.cf service line and its -o lines."""
    start = master.index(f"\n{name} ") + 1
    lines = [master[start:].splitlines()[0]]
    for line in master[start:].splitlines()[1:]:
        if not line.startswith("  -o"):
            break
        lines.append(line)
    return lines


def test_defaults_are_upstreams(tmp_path):
    text = _by_name(render_relay(c := _config(tmp_path), production_layout(c)))
    for name in ("submission", "smtps"):
        service = _service(text["master.cf"], name)
        assert service[0].split()[6] == "1000"  # maxproc = max_smtp_connections
        assert "  -o smtpd_client_connection_count_limit=200" in service
    assert "service imap {\n  process_limit = 10000\n}" in text["dovecot.conf"]
    assert "imap_hibernate_timeout = 30s" in text["dovecot.conf"]
    assert "imap_zlib" not in text["dovecot.conf"]
    assert "rawlog" not in text["dovecot.conf"].replace("# imap_rawlog = false", "")
    assert "smtpd_tls_cert_file = /var/lib/acme/live/eijo.im/fullchain" in text["main.cf"]


def test_connection_limits(tmp_path):
    config = _config(tmp_path, max_smtp_connections=50, max_imap_connections=77)
    for layout in (production_layout(config), local_layout(tmp_path / "s")):
        text = _by_name(render_relay(config, layout))
        for name in ("submission", "smtps"):
            service = _service(text["master.cf"], name)
            assert service[0].split()[6] == "50"
            assert "  -o smtpd_client_connection_count_limit=10" in service
        assert "service imap {\n  process_limit = 77\n}" in text["dovecot.conf"]


def test_external_certificate_replaces_acme_paths(tmp_path):
    config = _config(tmp_path, tls_external_cert_and_key="/etc/x/cert.pem /etc/x/key.pem")
    text = _by_name(render_relay(config, production_layout(config)))
    assert "smtpd_tls_cert_file = /etc/x/cert.pem" in text["main.cf"]
    assert "smtpd_tls_key_file = /etc/x/key.pem" in text["main.cf"]
    assert "ssl_cert = </etc/x/cert.pem" in text["dovecot.conf"]
    assert "ssl_key = </etc/x/key.pem" in text["dovecot.conf"]
    assert "/var/lib/acme" not in text["main.cf"] + text["dovecot.conf"]


def test_imap_rawlog(tmp_path):
    dovecot = _by_name(
        render_relay(c := _config(tmp_path, imap_rawlog="true"), production_layout(c))
    )
    dovecot = dovecot["dovecot.conf"]
    assert "executable = script-login -d rawlog" in dovecot
    assert "executable = imap postlogin" in dovecot
    assert "rawlog_dir = %h" in dovecot


def test_imap_compress_loads_imap_zlib_and_drops_hibernation(tmp_path):
    config = _config(tmp_path, imap_compress="true")
    dovecot = _by_name(render_relay(config, production_layout(config)))["dovecot.conf"]
    assert "mail_plugins = $mail_plugins imap_quota last_login imap_zlib" in dovecot
    assert "imap_compress_deflate_level = 6" in dovecot
    assert "imap_hibernate_timeout" not in dovecot and "imap-hibernate" not in dovecot


def _write(files):
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def _run(argv):
    return subprocess.run(argv, capture_output=True, text=True, check=False)


def _render_local(tmp_path, params):
    """The local rendering of an ini with `params`, with what `relay up` prepares
    (queue, data and log dirs, a certificate file) so that `postfix check` can run."""
    config = _config(tmp_path, **params)
    layout = local_layout(tmp_path / "state", first_valid_uid=500)
    _write(render_relay(config, layout))
    layout.tls_cert.parent.mkdir(parents=True)
    layout.tls_cert.write_text("cert\n")
    layout.tls_key.write_text("key\n")
    for d in (layout.postfix_queue_dir, layout.postfix_data_dir, layout.postfix_log.parent):
        d.mkdir(parents=True, exist_ok=True)
    postfix = pwd.getpwnam("postfix")
    os.chown(layout.postfix_data_dir, postfix.pw_uid, grp.getgrnam("postfix").gr_gid)
    return config, layout


def _postfix_check(layout):
    """`postfix check` (a fatal error is its exit status; its text goes to syslog)."""
    check = _run(["postfix", "-c", str(layout.postfix_config_dir), "check"])
    return check.returncode == 0 and "warning" not in check.stderr, check.stderr


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_real_servers_accept_every_variant(tmp_path, variant):
    require_tool("postconf", "postfix", "doveconf")
    require(os.geteuid() == 0, "root (postfix check)")
    config, layout = _render_local(tmp_path, VARIANTS[variant])
    conf = str(layout.postfix_config_dir)
    for argv in (["postconf", "-c", conf, "-n"], ["postconf", "-c", conf, "-M"]):
        out = _run(argv)
        assert out.returncode == 0 and "warning" not in out.stderr, out.stderr
    ok, why = _postfix_check(layout)
    assert ok, why
    dove = _run(["doveconf", "-c", str(layout.dovecot_config_dir / "dovecot.conf"), "-n"])
    assert dove.returncode == 0, dove.stderr
    # doveconf prints the settings it parsed: the switches took effect in Dovecot itself
    assert ("imap_zlib" in dove.stdout) == config.imap_compress
    assert ("rawlog_dir = %h" in dove.stdout) == config.imap_rawlog
    assert f"process_limit = {config.max_imap_connections}" in dove.stdout


def test_an_ip_only_relay_renders_what_postfix_accepts(tmp_path):
    """`mail_domain = 10.9.8.7`: myhostname is the reverse name (Postfix refuses an address
    there), the literal [10.9.8.7] is the origin and a local destination handed to Dovecot,
    and nothing is DKIM-signed (no milter)."""
    require_tool("postfix", "postconf")
    require(os.geteuid() == 0, "root (postfix check)")
    _, layout = _render_local(tmp_path, VARIANTS["ip-only"])
    ok, why = _postfix_check(layout)
    assert ok, why
    out = _run(
        [
            "postconf",
            "-c",
            str(layout.postfix_config_dir),
            "-h",
            "myhostname",
            "myorigin",
            "mydestination",
            "local_transport",
            "virtual_mailbox_domains",
            "non_smtpd_milters",
        ]
    )
    assert out.stdout.splitlines() == [
        "7.8.9.10.in-addr.arpa",
        "[10.9.8.7]",
        "[10.9.8.7]",
        "lmtp:unix:private/dovecot-lmtp",
        "$virtual_mailbox_maps",  # Postfix's default: empty
        "",
    ]
    master = (layout.postfix_config_dir / "master.cf").read_text()
    assert "smtpd_milters" not in master.replace("(this relay does not DKIM-sign", "")


@pytest.mark.parametrize("total,per_client", [(1000, 200), (50, 10), (7, 1), (3, 1), (0, 0)])
def test_smtp_limits_give_one_client_a_fifth(total, per_client):
    from types import SimpleNamespace

    from chatmaild.render.options import smtp_limits

    # 0: Postfix's "no limit" for both maxproc and the per-client count
    assert smtp_limits(SimpleNamespace(max_smtp_connections=total)) == (total, per_client)


def test_creatable_users_names_every_allowed_length_in_the_domain():
    from types import SimpleNamespace

    from chatmaild.render.options import creatable_users

    config = SimpleNamespace(
        username_min_length=3, username_max_length=5, address_domain="[1.2.3.4]"
    )
    assert creatable_users(config) == "???@[1.2.3.4] ????@[1.2.3.4] ?????@[1.2.3.4]"
