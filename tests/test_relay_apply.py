"""`render --root`: the production rendering applied to a file system, only what differs."""

import json
import os
import subprocess
import sys
from pathlib import Path

from chatmaild.config import read_config
from chatmaild.render.apply import apply_files
from chatmaild.render.serverfiles import render_server_files

from conftest import write_ini


def test_apply_writes_only_what_differs_and_keeps_mode(tmp_path):
    files = {Path("/etc/a.conf"): "one\n", Path("/etc/sub/b.conf"): "two\n"}
    changed, unchanged = apply_files(files, tmp_path)
    assert changed == ["/etc/a.conf", "/etc/sub/b.conf"] and unchanged == []
    assert (tmp_path / "etc/sub/b.conf").read_text() == "two\n"
    assert (tmp_path / "etc/a.conf").stat().st_mode & 0o777 == 0o644
    (tmp_path / "etc/a.conf").chmod(0o640)
    assert apply_files(files, tmp_path) == ([], ["/etc/a.conf", "/etc/sub/b.conf"])
    files[Path("/etc/a.conf")] = "changed\n"
    assert apply_files(files, tmp_path, dry_run=True)[0] == ["/etc/a.conf"]
    assert (tmp_path / "etc/a.conf").read_text() == "one\n"  # dry run wrote nothing
    assert apply_files(files, tmp_path)[0] == ["/etc/a.conf"]
    assert (tmp_path / "etc/a.conf").read_text() == "changed\n"
    assert (tmp_path / "etc/a.conf").stat().st_mode & 0o777 == 0o640  # mode kept
    assert not [p for p in (tmp_path / "etc").iterdir() if p.name.startswith(".")]


def test_server_files(tmp_path):
    config = read_config(write_ini(tmp_path / "chatmail.ini", mail_domain="relay.example"))
    files = {str(k): v for k, v in render_server_files(config).items()}
    assert files["/etc/mailname"] == "relay.example\n"
    assert "nameserver 127.0.0.1" in files["/etc/resolv.conf"]
    assert "interface: 127.0.0.1" in files["/etc/unbound/unbound.conf.d/chatmail.conf"]
    rsyslog = files["/etc/rsyslog.d/chatmail-logmetrics.conf"]
    assert 'port="3904"' in rsyslog and 'protocol="udp"' in rsyslog
    v4 = read_config(
        write_ini(tmp_path / "v4.ini", mail_domain="relay.example", disable_ipv6="true")
    )
    unbound = render_server_files(v4)[Path("/etc/unbound/unbound.conf.d/chatmail.conf")]
    assert "::1" not in unbound and "do-ip6: no" in unbound


def test_render_root_cli_is_idempotent(tmp_path):
    ini = write_ini(tmp_path / "chatmail.ini", mail_domain="relay.example")
    root = tmp_path / "root"
    argv = [sys.executable, "-m", "chatmaild.relay", "render", "--config", str(ini), "--root"]
    first = json.loads(subprocess.check_output([*argv, str(root)]))
    assert "/etc/postfix/main.cf" in first["changed"]
    assert "/etc/unbound/unbound.conf.d/chatmail.conf" in first["changed"]
    assert (root / "etc/nginx/nginx.conf").exists()
    second = json.loads(subprocess.check_output([*argv, str(root)]))
    assert second["changed"] == [] and sorted(second["unchanged"]) == sorted(first["changed"])
    os.unlink(root / "etc/postfix/main.cf")
    dry = json.loads(subprocess.check_output([*argv, str(root), "--dry-run"]))
    assert dry["changed"] == ["/etc/postfix/main.cf"]
    assert not (root / "etc/postfix/main.cf").exists()
