"""The relay's Postfix and Dovecot configuration, rendered from chatmail.ini.

Pure rendering is checked on its text; the local rendering is also parsed by the real
`postconf` and `doveconf`, so a setting they do not know fails here, not at `up`.
"""

import subprocess
from pathlib import Path

import pytest

from chatmaild.config import read_config
from chatmaild.relay.instance import default_ini_text
from chatmaild.render.files import (
    local_layout,
    production_layout,
    render_relay,
)
from chatmaild.render.templating import PLACEHOLDER, substitute

from conftest import require_tool, write_ini

REPO = Path(__file__).resolve().parent.parent
EXAMPLE_INI = REPO / "chatmail.ini.example"


@pytest.fixture
def config(tmp_path):
    return read_config(
        write_ini(
            tmp_path / "chatmail.ini",
            mail_domain="eijo.im",
            max_message_size=31457280,
            max_mailbox_size="500M",
            filtermail_smtp_port=10080,
            postfix_reinject_port=10025,
            filtermail_smtp_port_incoming=10081,
            postfix_reinject_port_incoming=10026,
        )
    )


def _by_name(files):
    return {p.name: text for p, text in files.items()}


def test_substitute_replaces_and_refuses_unknown_names():
    assert substitute("a {{ x }} b {{ y }}", {"x": 1, "y": "z"}) == "a 1 b z"
    assert substitute("${1} $myhostname {}", {}) == "${1} $myhostname {}"
    with pytest.raises(KeyError):
        substitute("{{ missing }}", {})


def test_production_rendering_uses_ini_values_and_debian_paths(config):
    files = render_relay(config, production_layout(config))
    paths = {str(p) for p in files}
    assert {
        "/etc/postfix/main.cf",
        "/etc/postfix/master.cf",
        "/etc/postfix/login_map",
        "/etc/postfix/submission_header_cleanup",
        "/etc/dovecot/dovecot.conf",
        "/etc/dovecot/auth.conf",
        "/etc/dovecot/push_notification.lua",
        "/etc/opendkim.conf",
        "/etc/dkimkeys/KeyTable",
        "/etc/dkimkeys/SigningTable",
        "/etc/nginx/nginx.conf",
        "/var/www/html/index.html",
        "/var/www/html/qr-new.svg",
        "/var/www/html/.well-known/mta-sts.txt",
        "/var/www/html/.well-known/autoconfig/mail/config-v1.1.xml",
        "/etc/postfix/admin_aliases",
        "/etc/dovecot/admin-users",
        "/etc/turnserver.conf",
    } == paths
    text = _by_name(files)
    for name, body in text.items():
        assert not PLACEHOLDER.search(body), name
    main, master = text["main.cf"], text["master.cf"]
    assert "myhostname = eijo.im" in main
    assert "virtual_mailbox_domains = eijo.im" in main
    assert "virtual_transport = lmtp:unix:private/dovecot-lmtp" in main
    assert "message_size_limit = 31457280" in main
    assert "smtpd_sender_login_maps = regexp:/etc/postfix/login_map" in main
    assert "reject_sender_login_mismatch" in main
    assert "smtpd_tls_cert_file = /var/lib/acme/live/eijo.im/fullchain" in main
    assert "queue_directory" not in main and "maillog_file" not in main
    assert "smtpd_proxy_filter=127.0.0.1:10081" in master
    assert master.count("smtpd_proxy_filter=127.0.0.1:10080") == 2
    assert "127.0.0.1:10025 inet" in master and "127.0.0.1:10026 inet" in master
    assert "smtpd_milters=unix:opendkim/opendkim.sock" in master
    assert "smtps     inet  n       -       y" in master

    dovecot, auth = text["dovecot.conf"], text["auth.conf"]
    assert "uri = proxy:/run/doveauth/doveauth.socket:auth" in auth
    # no key carries the password (Dovecot logs keys); creation goes through checkpassword
    assert "password_key = passdb/%Eu\n" in auth and "%w" not in auth
    assert "args = /etc/dovecot/auth.conf" in dovecot
    assert (
        "args = /usr/local/lib/chatmaild/venv/bin/python3 -m chatmaild.doveauth.checkpassword"
        " /run/doveauth/doveauth.socket" in dovecot
    )
    assert "%w" not in dovecot
    # eijo.im: local parts of 9 characters; other names never start checkpassword
    assert "  username_filter = ?????????@eijo.im\n" in dovecot
    assert "proxy:/run/chatmail-metadata/metadata.socket:metadata" in dovecot
    assert "proxy:/run/chatmail-lastlogin/lastlogin.socket:lastlogin" in dovecot
    assert "imap_metadata = yes" in dovecot
    assert "imap_capability = +XDELTAPUSH XCHATMAIL" in dovecot
    assert "mail_location = maildir:/home/vmail/mail/eijo.im/%u" in dovecot
    assert "push_notification_driver = lua:file=/etc/dovecot/push_notification.lua" in dovecot
    assert "mail_lua notify push_notification push_notification_lua" in dovecot
    assert "quota_rule = *:storage=500M" in dovecot
    # the quota_warning hook: 90% of 500M -> chatmail-quota-expire 350 <home>
    assert "quota_warning = storage=90%% quota-warning 350 %h" in dovecot
    assert "executable = script /usr/local/lib/chatmaild/venv/bin/chatmail-quota-expire" in dovecot
    assert "/var/spool/postfix/private/dovecot-lmtp" in dovecot
    assert "ssl = required" in dovecot
    assert "base_dir" not in dovecot and "log_path" not in dovecot


def test_ini_ports_and_size_flow_into_postfix(tmp_path):
    config = read_config(
        write_ini(
            tmp_path / "c.ini",
            mail_domain="x.example",
            max_message_size=1000,
            filtermail_smtp_port=20080,
            filtermail_smtp_port_incoming=20081,
            postfix_reinject_port=20025,
            postfix_reinject_port_incoming=20026,
        )
    )
    text = _by_name(render_relay(config, production_layout(config)))
    assert "message_size_limit = 1000" in text["main.cf"]
    for port in (20080, 20081):
        assert f"smtpd_proxy_filter=127.0.0.1:{port}" in text["master.cf"]
    for port in (20025, 20026):
        assert f"127.0.0.1:{port} inet" in text["master.cf"]


def test_ipv4_relay_has_no_dkim_milter_and_disable_ipv6(tmp_path):
    config = read_config(write_ini(tmp_path / "c.ini", mail_domain="1.2.3.4", disable_ipv6="True"))
    text = _by_name(render_relay(config, production_layout(config)))
    assert "smtpd_milters" not in text["master.cf"]
    assert "inet_protocols = ipv4" in text["main.cf"]
    assert "listen = *\n" in text["dovecot.conf"]


def test_local_rendering_keeps_everything_under_the_state_dir(config, tmp_path):
    state = tmp_path / "state"
    files = render_relay(config, local_layout(state, first_valid_uid=123))
    assert all(str(p).startswith(str(state)) for p in files)
    text = _by_name(files)
    main, master, dovecot = text["main.cf"], text["master.cf"], text["dovecot.conf"]
    assert f"queue_directory = {state}/spool" in main
    assert f"maillog_file = {state}/log/postfix.log" in main
    assert "inet_interfaces = 127.0.0.1" in main and "inet_protocols = ipv4" in main
    assert "alias_maps = \n" in main
    assert "smtpd_milters=unix:opendkim/opendkim.sock" in master  # its own OpenDKIM
    services = [line.split() for line in master.splitlines() if line[:1].isalnum()]
    assert len(services) > 20
    assert {fields[4] for fields in services} == {"n"}  # no chroot anywhere
    assert f"base_dir = {state}/dovecot-run" in dovecot
    assert f"log_path = {state}/log/dovecot.log" in dovecot
    assert f"{state}/spool/private/auth" in dovecot
    assert f"proxy:{state}/run/doveauth/doveauth.socket:auth" in text["auth.conf"]
    assert "first_valid_uid = 123" in dovecot
    assert "listen = 127.0.0.1" in dovecot


def test_without_push_script_lmtp_has_no_lua(config, tmp_path):
    files = render_relay(config, local_layout(tmp_path, push=False))
    dovecot = _by_name(files)["dovecot.conf"]
    assert "push_notification_lua" not in dovecot
    assert "lua:file" not in dovecot
    assert not any(p.name.endswith(".lua") for p in files)


def test_default_ini_is_a_valid_config(tmp_path):
    path = tmp_path / "chatmail.ini"
    path.write_text(default_ini_text(tmp_path, notification_url="http://127.0.0.1:1/n"))
    config = read_config(path)
    assert config.mail_domain == "_chat.example"
    assert config.mailboxes_dir == tmp_path / "mailboxes"
    assert config.notification_url == "http://127.0.0.1:1/n"
    assert config.max_load_1m >= 100
    # the demo relay posts no push notification to the public notification server
    path.write_text(default_ini_text(tmp_path))
    assert read_config(path).notification_url == ""


def _write(files):
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_real_postconf_and_doveconf_accept_the_local_rendering(config, tmp_path):
    require_tool("postconf", "doveconf")
    layout = local_layout(tmp_path, first_valid_uid=500)
    _write(render_relay(config, layout))
    layout.tls_cert.parent.mkdir(parents=True)
    layout.tls_cert.write_text("cert\n")
    layout.tls_key.write_text("key\n")

    main = subprocess.run(
        ["postconf", "-c", str(layout.postfix_config_dir), "-n"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "warning" not in main.stderr, main.stderr
    assert "virtual_mailbox_domains = eijo.im" in main.stdout
    master = subprocess.run(
        ["postconf", "-c", str(layout.postfix_config_dir), "-M"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "warning" not in master.stderr, master.stderr
    assert "smtps" in master.stdout and "authclean" in master.stdout

    dove = subprocess.run(
        ["doveconf", "-c", str(layout.dovecot_config_dir / "dovecot.conf"), "-n"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert dove.returncode == 0, dove.stderr
    assert "imap_metadata = yes" in dove.stdout
    assert "quota_warning = storage=90%% quota-warning 350 %h" in dove.stdout
    assert "service quota-warning {" in dove.stdout


def test_example_ini_renders_for_production():
    config = read_config(EXAMPLE_INI)
    text = _by_name(render_relay(config, production_layout(config)))
    assert "myhostname = eijo.im" in text["main.cf"]
