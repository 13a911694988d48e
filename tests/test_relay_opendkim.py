"""OpenDKIM of the relay: rendering, the key and its DNS record, the syslog sink.

The rendering is checked on its text and by the real `opendkim -n` (configuration check);
the DNS record is compared with the one Debian's `opendkim-genkey` prints for the same key.
"""

import base64
import os
import pwd
import re
import socket
import stat
import subprocess
import sys
import time

import pytest

from chatmaild.config import read_config
from chatmaild.relay.dkimrun import check_argv, opendkim_argv
from chatmaild.relay.syslogsink import as_line
from chatmaild.render.dkimkey import ensure_key, new_private_pem
from chatmaild.render.files import local_layout, production_layout, render_relay
from chatmaild.render.opendkim import (
    OVERSIGN_HEADERS,
    DkimLayout,
    key_name,
    local_dkim_layout,
    postfix_milter,
    production_dkim_layout,
    public_key_b64,
    render_opendkim,
    txt_value,
    zone_line,
)
from chatmaild.render.zone import TXT_CHUNK

from conftest import REPO_ROOT, daemon_env, require, require_tool, write_ini


@pytest.fixture
def config(tmp_path):
    return read_config(write_ini(tmp_path / "chatmail.ini", mail_domain="eijo.im"))


@pytest.fixture
def ip_config(tmp_path):
    return read_config(write_ini(tmp_path / "ip.ini", mail_domain="1.2.3.4"))


def _settings(text):
    """opendkim.conf as {key: value} (tab-separated, comments skipped)."""
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.partition("\t")
            out[key] = value.strip()
    return out


def test_production_opendkim_files(config):
    files = render_relay(config, production_layout(config))
    conf = _settings(files[production_dkim_layout().config_file])
    assert conf["Socket"] == "local:/var/spool/postfix/opendkim/opendkim.sock"
    assert conf["UserID"] == "opendkim" and conf["UMask"] == "007"
    assert conf["Canonicalization"] == "relaxed/simple"
    assert conf["SignHeaders"] == "*,+autocrypt,+content-type"
    oversigned = conf["OversignHeaders"].split(",")
    for header in ("from", "reply-to", "subject", "date", "to", "cc", "in-reply-to"):
        assert header in oversigned
    assert {"references", "autocrypt", "resent-from", "list-id"} <= set(oversigned)
    assert oversigned == list(OVERSIGN_HEADERS)
    assert conf["KeyTable"] == "/etc/dkimkeys/KeyTable"
    assert conf["SigningTable"] == "refile:/etc/dkimkeys/SigningTable"
    assert conf["MTA"] == "ORIGINATING" and conf["InternalHosts"] == "-"
    assert conf["Mode"] == "s"
    assert conf["PidFile"] == "/run/opendkim/opendkim.pid"
    assert "RequireSafeKeys" not in conf  # a server keeps OpenDKIM's check
    assert files[production_dkim_layout().key_table] == (
        "opendkim._domainkey.eijo.im eijo.im:opendkim:/etc/dkimkeys/opendkim.private\n"
    )
    assert files[production_dkim_layout().signing_table] == (
        "*@eijo.im opendkim._domainkey.eijo.im\n"
    )
    # the milter on the outgoing reinjection and for Postfix's own bounces
    by_name = {p.name: t for p, t in files.items()}
    main, master = by_name["main.cf"], by_name["master.cf"]
    assert "non_smtpd_milters = unix:opendkim/opendkim.sock\n" in main
    assert "internal_mail_filter_classes = bounce\n" in main
    assert "milter_macro_daemon_name = ORIGINATING\n" in main
    assert "milter_default_action = tempfail\n" in main
    reinject = master[master.index("127.0.0.1:10025 inet") :].split("\n# ")[0]
    assert "-o milter_macro_daemon_name=ORIGINATING" in reinject
    assert "-o smtpd_milters=unix:opendkim/opendkim.sock" in reinject
    assert master.count("smtpd_milters=") == 1  # nowhere else: incoming mail is not signed


@pytest.mark.parametrize("layout", ["production", "local"])
def test_ip_only_relay_signs_nothing(ip_config, tmp_path, layout):
    lay = production_layout(ip_config) if layout == "production" else local_layout(tmp_path)
    files = render_relay(ip_config, lay)
    assert not any("dkim" in str(p) for p in files)
    by_name = {p.name: t for p, t in files.items()}
    assert "smtpd_milters" not in by_name["master.cf"]
    assert "non_smtpd_milters" not in by_name["main.cf"]
    assert "internal_mail_filter_classes" not in by_name["main.cf"]
    assert render_opendkim(ip_config, lay.dkim) == {}


def test_local_opendkim_lives_in_the_state_dir(config, tmp_path):
    layout = local_layout(tmp_path)
    dkim = layout.dkim
    assert dkim.socket == tmp_path / "spool" / "opendkim" / "opendkim.sock"
    assert postfix_milter(dkim, layout.postfix_queue_dir) == "unix:opendkim/opendkim.sock"
    files = render_relay(config, layout)
    conf = _settings(files[dkim.config_file])
    assert conf["Socket"] == f"local:{dkim.socket}"
    assert conf["KeyTable"] == str(tmp_path / "dkimkeys" / "KeyTable")
    assert conf["PidFile"] == str(tmp_path / "run" / "opendkim" / "opendkim.pid")
    assert conf["RequireSafeKeys"] == "no"  # test relays live under /tmp
    argv = opendkim_argv(dkim)
    link = argv.index("--symlink")
    assert argv[link : link + 3] == ["--symlink", str(dkim.syslog_socket), "/dev/log"]
    assert argv[-3:] == ["-f", "-x", str(dkim.config_file)]


def test_milter_outside_the_queue_is_absolute(tmp_path):
    dkim = DkimLayout(tmp_path / "c", tmp_path / "k", tmp_path / "s.sock", tmp_path / "p")
    assert postfix_milter(dkim, tmp_path / "spool") == f"unix:{tmp_path}/s.sock"


def test_txt_record_matches_the_public_key():
    from cryptography.hazmat.primitives import serialization

    pem = new_private_pem()
    value = txt_value(pem)
    assert value.startswith("v=DKIM1; k=rsa; p=")
    der = base64.b64decode(value.split("p=")[1])
    public = serialization.load_der_public_key(der)
    private = serialization.load_pem_private_key(pem, password=None)
    assert public.public_numbers() == private.public_key().public_numbers()
    assert public.key_size == 2048
    line = zone_line("eijo.im", value)
    assert line.startswith("opendkim._domainkey.eijo.im. TXT ")
    chunks = re.findall(r'"([^"]*)"', line)
    assert len(chunks) == 2 and all(len(c) <= TXT_CHUNK for c in chunks)
    assert "".join(chunks) == value
    assert key_name("eijo.im") == "opendkim._domainkey.eijo.im"


def test_record_equals_opendkim_genkeys(tmp_path):
    """Debian's opendkim-genkey prints p= for its key: ours, from that key, is the same."""
    require_tool("opendkim-genkey")
    subprocess.run(
        ["opendkim-genkey", "-b", "2048", "-s", "opendkim", "-d", "eijo.im", "-D", tmp_path],
        check=True,
    )
    theirs = (tmp_path / "opendkim.txt").read_text()
    p = "".join(re.findall(r'"([^"]*)"', theirs)).split("p=")[1]
    assert public_key_b64((tmp_path / "opendkim.private").read_bytes()) == p


def _root_and_opendkim_user():
    require(os.geteuid() == 0, "root (chown to the opendkim user)")
    try:
        return pwd.getpwnam("opendkim")
    except KeyError:
        require(False, "the opendkim user (Debian package opendkim)")


def test_key_is_made_once_and_never_replaced(tmp_path):
    user = _root_and_opendkim_user()
    dkim = local_dkim_layout(tmp_path, tmp_path / "spool")
    created, value = ensure_key(dkim, "eijo.im")
    assert created
    st = dkim.key_file.stat()
    assert stat.S_IMODE(st.st_mode) == 0o600 and st.st_uid == user.pw_uid
    assert stat.S_IMODE(dkim.keys_dir.stat().st_mode) == 0o700
    first = dkim.key_file.read_bytes()
    assert value == txt_value(first)
    assert dkim.record_file.read_text() == zone_line("eijo.im", value) + "\n"
    created, again = ensure_key(dkim, "eijo.im")
    assert not created and again == value and dkim.key_file.read_bytes() == first


def test_an_operators_key_is_kept_and_made_readable_for_opendkim(tmp_path):
    user = _root_and_opendkim_user()
    dkim = local_dkim_layout(tmp_path, tmp_path / "spool")
    dkim.keys_dir.mkdir()
    own = new_private_pem()
    dkim.key_file.write_bytes(own)
    os.chmod(dkim.key_file, 0o644)
    created, value = ensure_key(dkim, "eijo.im")
    assert not created and dkim.key_file.read_bytes() == own and value == txt_value(own)
    st = dkim.key_file.stat()
    assert stat.S_IMODE(st.st_mode) == 0o600 and st.st_uid == user.pw_uid


def test_real_opendkim_accepts_the_local_rendering(config, tmp_path):
    require_tool("opendkim")
    _root_and_opendkim_user()
    layout = local_layout(tmp_path)
    for path, text in render_opendkim(config, layout.dkim).items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    ensure_key(layout.dkim, config.mail_domain)
    ok = subprocess.run(check_argv(layout.dkim), capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    # and it would refuse a broken one: the check is real
    layout.dkim.config_file.write_text(layout.dkim.config_file.read_text() + "Bogus yes\n")
    bad = subprocess.run(check_argv(layout.dkim), capture_output=True, text=True)
    assert bad.returncode != 0 and "unrecognized parameter" in bad.stderr


@pytest.mark.parametrize(
    "data,line",
    [
        (b"<22>Dec  6 20:21:39 opendkim[7]: x\n", b"<22>Dec  6 20:21:39 opendkim[7]: x\n"),
        (b"no newline", b"no newline\n"),
        (b"two\nlines\r\n", b"two\\nlines\n"),
    ],
)
def test_sink_writes_one_line_per_datagram(data, line):
    assert as_line(data) == line


def test_sink_process_receives_syslog_datagrams(tmp_path):
    sock_path, log = tmp_path / "log.sock", tmp_path / "opendkim.log"
    argv = [sys.executable, "-m", "chatmaild.relay.syslogsink", str(sock_path), str(log)]
    proc = subprocess.Popen(argv, env=daemon_env(), cwd=REPO_ROOT)
    try:
        deadline = time.monotonic() + 10
        while not sock_path.exists():
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.02)
        assert stat.S_IMODE(sock_path.stat().st_mode) == 0o666
        client = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        for n in range(3):
            client.sendto(f"<22>Dec  6 20:21:39 opendkim[7]: line {n}".encode(), str(sock_path))
        client.close()
        while log.read_bytes().count(b"\n") < 3:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert log.read_text().splitlines()[2] == "<22>Dec  6 20:21:39 opendkim[7]: line 2"
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0
    assert not sock_path.exists()
