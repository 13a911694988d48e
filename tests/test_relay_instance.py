"""Small pieces of the relay runner that need no Postfix or Dovecot."""

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from chatmaild.relay.daemons import relay_daemons
from chatmaild.relay.instance import unreachable_parent
from chatmaild.relay.netns import exec_prefix, hosts_text
from chatmaild.render.files import local_layout


@pytest.fixture
def open_base():
    """A directory every user can traverse (pytest's tmp_path sits under a 0700 dir)."""
    base = Path(tempfile.mkdtemp(prefix="chatmaild-reach-", dir="/tmp"))
    os.chmod(base, 0o755)
    yield base
    shutil.rmtree(base)


def test_unreachable_parent_finds_a_closed_directory(open_base):
    closed = open_base / "closed"
    (closed / "inner").mkdir(parents=True)
    os.chmod(closed, 0o700)
    other_uid = closed.stat().st_uid + 12345
    assert unreachable_parent(closed / "inner" / "state", other_uid) == closed
    os.chmod(closed, 0o711)
    assert unreachable_parent(closed / "inner" / "state", other_uid) is None


def test_unreachable_parent_lets_the_owner_in(open_base):
    own = open_base / "own"
    own.mkdir()
    os.chmod(own, 0o700)
    assert unreachable_parent(own / "state", own.stat().st_uid) is None


def test_hosts_file_maps_domain_and_hostname_to_loopback():
    text = hosts_text(["chat.example", "myhost", "chat.example"])
    first = text.splitlines()[0].split()
    assert first == ["127.0.0.1", "localhost", "chat.example", "myhost"]
    assert "::1" in text


def test_exec_prefix():
    assert exec_prefix(None) == []
    assert exec_prefix("ns1") == ["ip", "netns", "exec", "ns1"]


def test_daemon_table_matches_the_relay_wiring(ini_path, tmp_path):
    from chatmaild.config import read_config

    config = read_config(ini_path)
    layout = local_layout(tmp_path)
    daemons = {d.name: d for d in relay_daemons(config, layout)}
    assert list(daemons) == [
        "doveauth",
        "lastlogin",
        "metadata",
        "filtermail-outgoing",
        "filtermail-incoming",
        "filtermail-transport",
        "turn",
        "iroh-relay",
        "web",
    ]
    # chatmail-turn runs as coturn's user, the owner of the secret; the others as vmail
    assert daemons["turn"].user == "turnserver"
    assert daemons["turn"].args == ("serve", str(config.path))
    assert daemons["turn"].socket == config.turn_socket_path
    assert {d.user for name, d in daemons.items() if name != "turn"} == {"vmail"}
    assert daemons["iroh-relay"].args == (str(config.path),)
    assert daemons["iroh-relay"].port == 3340
    assert daemons["web"].socket == layout.web.web_socket
    web = (str(config.path), "--listen", f"unix:{layout.web.web_socket}")
    # chatmail-web and nginx agree on the certificate: self-signed, /new adds a dclogin_url
    assert daemons["web"].args == (*web, "--self-signed")
    from_ca = {d.name: d for d in relay_daemons(config, local_layout(tmp_path, self_signed=False))}
    assert from_ca["web"].args == web
    assert daemons["doveauth"].args == (str(layout.doveauth_socket), str(config.path))
    assert daemons["metadata"].socket == layout.metadata_socket
    assert daemons["filtermail-outgoing"].args == (str(config.path), "outgoing")
    assert daemons["filtermail-incoming"].port == config.filtermail_smtp_port_incoming
    transport = daemons["filtermail-transport"]
    assert (transport.module, transport.args) == ("chatmaild.transport", (str(config.path),))
    assert transport.port == config.filtermail_lmtp_port_transport
    assert transport.env == ()  # system roots; a test network's relays get their CA


def test_iroh_relay_follows_iroh_relay_listen(tmp_path):
    from chatmaild.config import read_config

    layout = local_layout(tmp_path)
    path = tmp_path / "chatmail.ini"
    for listen, port, socket in (
        ("0.0.0.0:3341", 3341, None),
        ("unix:/run/iroh.sock", None, Path("/run/iroh.sock")),
    ):
        path.write_text(f"[params]\nmail_domain = x.org\niroh_relay_listen = {listen}\n")
        iroh = {d.name: d for d in relay_daemons(read_config(path), layout)}["iroh-relay"]
        assert (iroh.port, iroh.socket) == (port, socket)
    path.write_text("[params]\nmail_domain = x.org\niroh_relay_listen =\n")
    assert "iroh-relay" not in {d.name for d in relay_daemons(read_config(path), layout)}


def test_local_relay_runs_logmetrics_following_every_log(tmp_path):
    from chatmaild.config import read_config
    from chatmaild.relay.instance import default_ini_text

    path = tmp_path / "chatmail.ini"
    path.write_text(default_ini_text(tmp_path))
    config = read_config(path)
    layout = local_layout(tmp_path)
    log_dir = tmp_path / "log"
    daemons = {d.name: d for d in relay_daemons(config, layout, log_dir)}
    assert list(daemons)[0] == "logmetrics"  # first, so it follows the others from their start
    logmetrics = daemons["logmetrics"]
    assert logmetrics.module == "chatmaild.metrics"
    assert logmetrics.metrics == "127.0.0.1:3903"
    args = list(logmetrics.args)
    assert args[:3] == [str(path), "--listen", "127.0.0.1:3903"]
    followed = args[4::2]
    assert set(args[3::2]) == {"--follow"}
    assert followed[:2] == [str(layout.postfix_log), str(layout.dovecot_log)]
    # every daemon's own log, and the file the syslog sink writes OpenDKIM's messages to
    daemon_logs = [str(log_dir / f"{name}.log") for name in daemons if name != "logmetrics"]
    assert sorted(followed[2:]) == sorted([*daemon_logs, str(log_dir / "opendkim.log")])
    assert daemons["opendkim-syslog"].args == (
        str(layout.dkim.syslog_socket),
        str(log_dir / "opendkim.log"),
    )
    # the embedded default config turns on every daemon's endpoint, on the documented ports
    assert {name: d.metrics for name, d in daemons.items()} == {
        "logmetrics": "127.0.0.1:3903",
        "filtermail-outgoing": "127.0.0.1:9601",
        "filtermail-incoming": "127.0.0.1:9602",
        "doveauth": "127.0.0.1:9603",
        "metadata": "127.0.0.1:9604",
        "lastlogin": "127.0.0.1:9605",
        "filtermail-transport": "127.0.0.1:9607",
        "iroh-relay": "127.0.0.1:9606",
        "web": "",  # chatmail-web has no metrics endpoint (nginx's stub_status is on 8484)
        "turn": "",  # chatmail-turn: one line per connection, nothing to count
        "opendkim-syslog": "",
    }


def test_the_self_signed_certificate_names_the_relay_and_follows_a_new_domain(tmp_path):
    from chatmaild.relay.instance import certificate_names, make_certificate

    from conftest import require_tool

    require_tool("openssl")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    make_certificate(cert, key, "_chat.example")
    assert certificate_names(cert) == {
        "DNS:_chat.example",
        "DNS:www._chat.example",
        "DNS:mta-sts._chat.example",
        "IP:127.0.0.1",
    }
    first = cert.read_bytes()
    make_certificate(cert, key, "_chat.example")
    assert cert.read_bytes() == first  # kept
    make_certificate(cert, key, "10.9.8.7")  # a state dir reused for an IP-only relay
    assert certificate_names(cert) == {"IP:10.9.8.7", "IP:127.0.0.1"}
