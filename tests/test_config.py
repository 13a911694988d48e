import subprocess
import sys
from pathlib import Path

import pytest

from chatmaild.config import ConfigError, parse_size, read_config

from conftest import REPO_ROOT, daemon_env, write_ini

EXAMPLE = REPO_ROOT / "chatmail.ini.example"


def test_example_is_the_eijo_production_file():
    config = read_config(EXAMPLE)
    assert config.mail_domain == "eijo.im"
    assert config.address_domain == "eijo.im"
    assert not config.ipv4_relay
    assert config.max_mailbox_size == 500 * 1024 * 1024
    assert config.max_mailbox_size_mb == 500
    assert config.max_message_size == 31457280
    assert config.params["acme_email"] == "admin@registrar.earth"
    assert config.params["mtail_address"] == "127.0.0.1"


def test_defaults(tmp_path):
    config = read_config(write_ini(tmp_path / "c.ini", mail_domain="x.org"))
    expected = {
        "max_user_send_per_minute": 60,
        "max_user_send_burst_size": 10,
        "max_mailbox_size": 500 * 2**20,
        "max_message_size": 31457280,
        "delete_mails_after": 20,
        "delete_large_after": 7,
        "delete_inactive_users_after": 90,
        "username_min_length": 9,
        "username_max_length": 9,
        "password_min_length": 9,
        "filtermail_smtp_port": 10080,
        "filtermail_smtp_port_incoming": 10081,
        "postfix_reinject_port": 10025,
        "postfix_reinject_port_incoming": 10026,
        "mailboxes_dir": Path("/home/vmail/mail/x.org"),
        "passthrough_senders": (),
        "passthrough_recipients": (),
        "iroh_relay": "https://x.org",
        "turn_socket_path": Path("/run/chatmail-turn/turn.socket"),
        "notification_url": "https://notifications.delta.chat/notify",
        "max_load_1m": 5.0,
        "min_available_memory": 200 * 2**20,
        "min_free_disk_space": 2**30,
        "nocreate_file": Path("/etc/chatmail-nocreate"),
        "metrics_doveauth": "",
        "metrics_filtermail_outgoing": "",
        "filtermail_http_port_incoming": 10082,
        "filtermail_lmtp_port_transport": 10083,
        "filtermail_dkim_check": True,
        "filtermail_dkim_nameserver": (),
        "max_smtp_connections": 1000,
        "max_imap_connections": 10000,
        "tls_external_cert_and_key": (),
        "www_folder": "",
        "privacy_mail": "",
        "disable_ipv6": False,
        "imap_rawlog": False,
        "imap_compress": False,
    }
    for key, value in expected.items():
        assert getattr(config, key) == value, key


@pytest.mark.parametrize(
    "key, text, value",
    [
        ("max_mailbox_size", "1G", 2**30),
        ("max_mailbox_size", "100K", 100 * 1024),
        ("max_mailbox_size", "100k", 100 * 1024),
        ("max_mailbox_size", "2048", 2048),
        ("max_mailbox_size", "10MB", 10 * 2**20),
        ("max_message_size", "1000", 1000),
        ("max_user_send_per_minute", "120", 120),
        ("max_load_1m", "2.5", 2.5),
        ("min_free_disk_space", "5G", 5 * 2**30),
        ("mailboxes_dir", "/srv/mail", Path("/srv/mail")),
        ("passthrough_senders", "a@x.org b@x.org", ("a@x.org", "b@x.org")),
        ("passthrough_recipients", "@y.org\n  c@z.org", ("@y.org", "c@z.org")),
        ("iroh_relay", "https://iroh.example", "https://iroh.example"),
        ("iroh_relay", "", ""),
        ("notification_url", "http://127.0.0.1:9/notify", "http://127.0.0.1:9/notify"),
        ("nocreate_file", "/tmp/nocreate", Path("/tmp/nocreate")),
        ("metrics_doveauth", "127.0.0.1:9101", "127.0.0.1:9101"),
        ("metrics_metadata", "unix:/run/m.sock", "unix:/run/m.sock"),
        ("filtermail_dkim_check", "false", False),
        ("filtermail_dkim_nameserver", "127.0.0.1:5353", ("127.0.0.1", 5353)),
        ("filtermail_dkim_nameserver", "[::1]:53", ("::1", 53)),
        ("max_smtp_connections", "50", 50),
        ("max_imap_connections", "200", 200),
        ("disable_ipv6", "True", True),
        ("imap_compress", "yes", True),
        ("www_folder", "/var/www/chat", "/var/www/chat"),
        ("privacy_mail", "privacy@x.org", "privacy@x.org"),
        (
            "tls_external_cert_and_key",
            "/etc/ssl/c.pem /etc/ssl/k.pem",
            (Path("/etc/ssl/c.pem"), Path("/etc/ssl/k.pem")),
        ),
    ],
)
def test_parsing(tmp_path, key, text, value):
    path = tmp_path / "c.ini"
    path.write_text(f"[params]\nmail_domain = x.org\n{key} = {text}\n")
    assert getattr(read_config(path), key) == value


def test_ipv4_relay(tmp_path):
    config = read_config(write_ini(tmp_path / "c.ini", mail_domain="1.2.3.4"))
    assert config.ipv4_relay
    assert config.mail_domain == "1.2.3.4"
    assert config.address_domain == "[1.2.3.4]"
    assert config.mailboxes_dir == Path("/home/vmail/mail/1.2.3.4")


def test_comments_and_deployment_keys(tmp_path):
    path = tmp_path / "c.ini"
    path.write_text(
        "# top comment\n[params]\n# a comment\nmail_domain = x.org\n"
        "disable_ipv6 = True\nimap_rawlog = false\nwww_folder = /var/www\n"
        "privacy_mail = privacy@x.org\n"
    )
    config = read_config(path)
    assert config.params["disable_ipv6"] == "True"
    assert config.params["www_folder"] == "/var/www"


def test_unknown_keys_warn(tmp_path, caplog):
    path = write_ini(tmp_path / "c.ini", mail_domain="x.org", frobnicate="1", zap="2")
    read_config(path)
    assert "unknown keys ignored: frobnicate, zap" in caplog.text


@pytest.mark.parametrize(
    "key, text",
    [
        ("max_message_size", "big"),
        ("max_mailbox_size", "500X"),
        ("max_mailbox_size", ""),
        ("max_user_send_per_minute", "-1"),
        ("max_user_send_burst_size", "ten"),
        ("filtermail_smtp_port", "70000"),
        ("postfix_reinject_port", "0"),
        ("max_load_1m", "high"),
        ("min_free_disk_space", "lots"),
        ("delete_mails_after", "1.5"),
        ("disable_ipv6", "maybe"),
        ("metrics_doveauth", "nonsense"),
        ("mailboxes_dir", ""),
        ("tls_external_cert_and_key", "/only/one.pem"),
        ("tls_external_cert_and_key", "relative.pem key.pem"),
        ("filtermail_dkim_check", "perhaps"),
        ("filtermail_dkim_nameserver", "127.0.0.1"),
        ("filtermail_dkim_nameserver", "dns.example:53"),
        ("filtermail_dkim_nameserver", "127.0.0.1:0"),
        ("max_smtp_connections", "many"),
    ],
)
def test_bad_value_names_file_key_value(tmp_path, key, text):
    path = tmp_path / "c.ini"
    path.write_text(f"[params]\nmail_domain = x.org\n{key} = {text}\n")
    with pytest.raises(ConfigError) as e:
        read_config(path)
    message = str(e.value)
    assert "\n" not in message
    assert str(path) in message and key in message and repr(text) in message


@pytest.mark.parametrize(
    "content, needle",
    [
        ("[params]\nmax_message_size = 10\n", "mail_domain: missing"),
        ("[params]\nmail_domain = \n", "mail_domain = ''"),
        ("[params]\nmail_domain = a/b\n", "mail_domain = 'a/b'"),
        ("[other]\nmail_domain = x.org\n", "no [params] section"),
        ("mail_domain = x.org\n", "not an ini file"),
        ("[params]\nmail_domain = x.org\nusername_min_length = 10\n", "username_min_length"),
    ],
)
def test_structural_errors(tmp_path, content, needle):
    path = tmp_path / "c.ini"
    path.write_text(content)
    with pytest.raises(ConfigError) as e:
        read_config(path)
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="file not found"):
        read_config(tmp_path / "nope.ini")


def test_parse_size_rejects_garbage():
    for text in ["", "M", "1.5G", "-1", "12 34"]:
        with pytest.raises(ValueError):
            parse_size(text)


def test_entry_point_exits_with_one_line(tmp_path):
    """A daemon entry point refuses to start on a bad value: one line, no traceback."""
    path = write_ini(tmp_path / "c.ini", mail_domain="x.org", max_message_size="big")
    code = "import sys; from chatmaild.config import load_config_or_exit as l; l(sys.argv[1])"
    proc = subprocess.run(
        [sys.executable, "-c", code, str(path)],
        capture_output=True,
        text=True,
        env=daemon_env(),
        timeout=30,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert str(path) in lines[0] and "max_message_size" in lines[0] and "'big'" in lines[0]
    assert "Traceback" not in proc.stderr
