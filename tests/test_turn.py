"""chatmail-turn without coturn: the credential line, the secret database, the socket server,
coturn's rendered configuration and the chatmail.ini keys of TURN and the admin contact."""

import asyncio
import base64
import hashlib
import hmac
import os
import sqlite3
import subprocess

import pytest

from chatmaild.config import ConfigError, read_config
from chatmaild.render.files import admin_aliases, admin_mailbox, admin_uri
from chatmaild.turn import secretdb
from chatmaild.turn.coturn import (
    TurnLayout,
    local_turn_layout,
    production_turn_layout,
    render_turnserver_conf,
)
from chatmaild.turn.credentials import VALIDITY, credential_line, password
from chatmaild.turn.server import CredentialServer

from conftest import write_ini

NOW = 1_800_000_000


def _config(tmp_path, **params):
    return read_config(write_ini(tmp_path / "chatmail.ini", mail_domain="chat.example", **params))


# -- credentials


def test_credential_line_matches_rfc_turn_rest_scheme():
    line = credential_line("s3cret", NOW)
    username, pw = line.decode().rstrip("\n").split(":")
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert username == str(NOW + VALIDITY) and VALIDITY == 5 * 86400
    expected = base64.b64encode(hmac.new(b"s3cret", username.encode(), hashlib.sha1).digest())
    assert pw == expected.decode() == password("s3cret", username)
    # a known vector: HMAC-SHA1("key", "The quick brown fox jumps over the lazy dog")
    assert password("key", "The quick brown fox jumps over the lazy dog") == (
        base64.b64encode(bytes.fromhex("de7c9b85b8b78aa6bc8a7a36f70a90701c9db4d9")).decode()
    )


def test_credential_line_truncates_fractional_time():
    assert credential_line("x", NOW + 0.9, validity=10).startswith(f"{NOW + 10}:".encode())


# -- secret database


def test_secret_made_once_and_never_replaced(tmp_path):
    db = tmp_path / "turn" / "turndb"
    assert secretdb.ensure_secret(db, "chat.example", owner=None) is True
    first = secretdb.read_secret(db, "chat.example")
    assert len(first) >= 40
    assert secretdb.ensure_secret(db, "chat.example", owner=None) is False
    assert secretdb.read_secret(db, "chat.example") == first
    assert os.stat(db).st_mode & 0o777 == 0o600
    assert os.stat(db.parent).st_mode & 0o777 == 0o700
    # another install gets another secret
    other = tmp_path / "other" / "turndb"
    secretdb.ensure_secret(other, "chat.example", owner=None)
    assert secretdb.read_secret(other, "chat.example") != first


def test_secret_table_is_coturns(tmp_path):
    db = tmp_path / "turndb"
    secretdb.ensure_secret(db, "chat.example", owner=None)
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT realm, value FROM turn_secret").fetchall()
    assert [realm for realm, _ in rows] == ["chat.example"]


def test_read_secret_missing(tmp_path):
    with pytest.raises(secretdb.SecretMissing):
        secretdb.read_secret(tmp_path / "absent", "chat.example")
    db = tmp_path / "turndb"
    secretdb.ensure_secret(db, "other.example", owner=None)
    with pytest.raises(secretdb.SecretMissing):
        secretdb.read_secret(db, "chat.example")


# -- the socket server


async def test_server_answers_every_connection_with_one_line(tmp_path):
    path = tmp_path / "run" / "turn.socket"
    path.parent.mkdir()
    server = CredentialServer(path, "s3cret", clock=lambda: NOW)
    await server.start()
    try:
        assert os.stat(path).st_mode & 0o777 == 0o666
        for _ in range(3):
            reader, writer = await asyncio.open_unix_connection(str(path))
            assert await reader.read() == credential_line("s3cret", NOW)  # then EOF
            writer.close()
        # a client that writes something and leaves at once does not hurt the server
        _, writer = await asyncio.open_unix_connection(str(path))
        writer.write(b"GET / HTTP/1.0\r\n\r\n")
        writer.close()
        reader, writer = await asyncio.open_unix_connection(str(path))
        assert (await reader.read()).endswith(b"\n")
        writer.close()
    finally:
        await server.close()
    assert server.served >= 4


async def test_server_refuses_to_start_in_one_line(tmp_path):
    from chatmaild.daemon import StartupError

    with pytest.raises(StartupError, match="cannot listen on .*missing"):
        await CredentialServer(tmp_path / "missing" / "turn.socket", "a").start()
    (tmp_path / "file").write_text("not a socket")
    with pytest.raises(StartupError, match="not a socket"):
        await CredentialServer(tmp_path / "file", "a").start()
    assert (tmp_path / "file").read_text() == "not a socket"  # never removed


async def test_server_replaces_a_stale_socket(tmp_path):
    path = tmp_path / "turn.socket"
    first = CredentialServer(path, "a")
    await first.start()
    await first.close()  # asyncio leaves the socket file behind
    second = CredentialServer(path, "a")
    await second.start()
    await second.close()


# -- coturn's configuration


def _conf_lines(text):
    return [line for line in text.splitlines() if line and not line.startswith("#")]


def test_production_turnserver_conf(tmp_path):
    config = _config(tmp_path, turn_external_ip="203.0.113.7/10.0.0.7")
    layout = production_turn_layout()
    assert str(layout.conf) == "/etc/turnserver.conf"
    lines = _conf_lines(render_turnserver_conf(config, layout))
    for expected in (
        "listening-port=3478",
        "min-port=49152",
        "max-port=65535",
        "realm=chat.example",
        "use-auth-secret",
        "userdb=/var/lib/chatmail-turn/turndb",
        "external-ip=203.0.113.7/10.0.0.7",
        "fingerprint",
        "no-tls",
        "no-dtls",
        "no-cli",
        "no-tcp-relay",
        "no-multicast-peers",
        "denied-peer-ip=10.0.0.0-10.255.255.255",
        "denied-peer-ip=127.0.0.0-127.255.255.255",
        "denied-peer-ip=192.168.0.0-192.168.255.255",
        "denied-peer-ip=172.16.0.0-172.31.255.255",
        "denied-peer-ip=::1",
        "log-file=stdout",
    ):
        assert expected in lines, expected
    assert "allow-loopback-peers" not in lines
    assert not any(line.startswith(("static-auth-secret", "listening-ip")) for line in lines)


def test_local_turnserver_conf_allows_loopback_peers(tmp_path):
    config = _config(tmp_path, turn_relay_ports="50000-50100", turn_port="3479")
    layout = local_turn_layout(tmp_path)
    lines = _conf_lines(render_turnserver_conf(config, layout))
    assert "allow-loopback-peers" in lines
    assert "listening-ip=127.0.0.1" in lines and "relay-ip=127.0.0.1" in lines
    assert "listening-port=3479" in lines and "min-port=50000" in lines
    assert "denied-peer-ip=127.0.0.0-127.255.255.255" not in lines
    assert "denied-peer-ip=10.0.0.0-10.255.255.255" in lines
    assert f"log-file={tmp_path / 'log' / 'coturn.log'}" in lines
    assert not any(line.startswith("external-ip") for line in lines)


def test_allowed_peers_for_a_test_link(tmp_path):
    layout = TurnLayout(conf=tmp_path / "c", allowed_peers=("10.77.0.0-10.77.0.255",))
    lines = _conf_lines(render_turnserver_conf(_config(tmp_path), layout))
    assert "allowed-peer-ip=10.77.0.0-10.77.0.255" in lines


# -- chatmail.ini keys


@pytest.mark.parametrize(
    "key, value",
    [
        ("turn_relay_ports", "50000"),
        ("turn_relay_ports", "60000-50000"),
        ("turn_relay_ports", "0-100"),
        ("turn_external_ip", "relay.example"),
        ("turn_external_ip", "1.2.3.4/5.6.7.8/9.9.9.9"),
        ("turn_port", "70000"),
        ("iroh_relay_listen", "3340"),
        ("admin_contact", "root"),
        ("admin_contact", "a b@chat.example"),
        ("admin_contact", "https://"),
    ],
)
def test_bad_values_are_refused(tmp_path, key, value):
    with pytest.raises(ConfigError, match=key):
        _config(tmp_path, **{key: value})


def test_defaults(tmp_path):
    config = _config(tmp_path)
    assert config.turn_port == 3478 and config.turn_relay_ports == (49152, 65535)
    assert config.turn_external_ip == "" and config.iroh_relay_listen == "127.0.0.1:3340"
    assert config.admin_contact == "postmaster@chat.example"
    ip_config = read_config(write_ini(tmp_path / "ip.ini", mail_domain="1.2.3.4"))
    assert ip_config.admin_contact == "postmaster@[1.2.3.4]"
    assert _config(tmp_path, iroh_relay_listen="").iroh_relay_listen == ""


def test_admin_contact_on_the_relay_gets_a_mailbox_and_the_role_aliases(tmp_path):
    config = _config(tmp_path)
    assert admin_uri(config) == "mailto:postmaster@chat.example"
    assert admin_mailbox(config) == "postmaster@chat.example"
    assert admin_aliases(config) == {
        "abuse@chat.example": "postmaster@chat.example",
        "root@chat.example": "postmaster@chat.example",
    }


def test_admin_contact_elsewhere(tmp_path):
    config = _config(tmp_path, admin_contact="mailto:Ops@Example.org")
    assert admin_uri(config) == "mailto:Ops@Example.org"
    assert admin_mailbox(config) is None
    assert set(admin_aliases(config).values()) == {"Ops@Example.org"}
    assert len(admin_aliases(config)) == 3
    url = _config(tmp_path, admin_contact="https://chat.example/contact")
    assert admin_uri(url) == "https://chat.example/contact"
    assert admin_mailbox(url) is None and admin_aliases(url) == {}


# -- the command line


def _cli(*args, **kwargs):
    from conftest import daemon_argv, daemon_env

    return subprocess.run(
        daemon_argv("chatmaild.turn", *args),
        env=daemon_env(),
        capture_output=True,
        text=True,
        timeout=60,
        **kwargs,
    )


def test_serve_without_a_secret_says_what_to_run(tmp_path):
    ini = write_ini(
        tmp_path / "chatmail.ini",
        turn_db_path=tmp_path / "db" / "turndb",
        turn_socket_path=tmp_path / "turn.socket",
    )
    proc = _cli("serve", ini)
    assert proc.returncode == 1
    assert "init-secret" in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_init_secret_then_serve_then_stop(tmp_path):
    import pwd
    import signal
    import socket as socketlib
    import time

    owner = pwd.getpwuid(os.getuid()).pw_name
    db = tmp_path / "db" / "turndb"
    ini = write_ini(
        tmp_path / "chatmail.ini", turn_db_path=db, turn_socket_path=tmp_path / "t.sock"
    )
    first = _cli("init-secret", ini, "--owner", owner)
    second = _cli("init-secret", ini, "--owner", owner)
    assert first.returncode == second.returncode == 0
    assert "made" in first.stdout and "kept" in second.stdout
    secret = secretdb.read_secret(db, "chat.example")
    from conftest import daemon_argv, daemon_env

    proc = subprocess.Popen(
        daemon_argv("chatmaild.turn", "serve", ini),
        env=daemon_env(),
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not (tmp_path / "t.sock").exists():
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        with socketlib.socket(socketlib.AF_UNIX) as s:
            s.connect(str(tmp_path / "t.sock"))
            username, pw = s.makefile("rb").read().decode().strip().split(":")
        assert pw == password(secret, username)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "stopped after 1 credential lines" in err
