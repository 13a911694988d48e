"""Every entry point that reads chatmail.ini refuses a bad one with one line and exit 2."""

import subprocess

import pytest

from conftest import daemon_argv, daemon_env, write_ini

ENTRY_POINTS = [
    ("chatmaild.filtermail", ["{ini}", "outgoing"]),
    ("chatmaild.filtermail", ["{ini}", "incoming"]),
    ("chatmaild.doveauth", ["{tmp}/doveauth.socket", "{ini}"]),
    ("chatmaild.lastlogin", ["{tmp}/lastlogin.socket", "{ini}"]),
    ("chatmaild.metadata", ["{tmp}/metadata.socket", "{ini}"]),
    ("chatmaild.housekeeping.expire", ["{ini}"]),
    ("chatmaild.housekeeping.fsreport", ["{ini}"]),
    ("chatmaild.turn", ["serve", "{ini}"]),
    ("chatmaild.turn", ["init-secret", "{ini}"]),
    ("chatmaild.irohrelay", ["{ini}"]),
]

BAD_VALUES = [
    {"max_message_size": "big"},
    {"filtermail_smtp_port": "70000"},
    {"max_mailbox_size": "500X"},
    {"max_user_send_burst_size": "ten"},
    {"turn_relay_ports": "60000-50000"},
]


@pytest.mark.parametrize("module, args", ENTRY_POINTS, ids=lambda v: str(v))
@pytest.mark.parametrize("bad", BAD_VALUES, ids=lambda d: next(iter(d)))
def test_bad_value_one_line_nonzero_exit(tmp_path, module, args, bad):
    ini = write_ini(tmp_path / "chatmail.ini", mailboxes_dir=tmp_path / "mb", **bad)
    argv = [a.format(ini=ini, tmp=tmp_path) for a in args]
    proc = subprocess.run(
        daemon_argv(module, *argv), env=daemon_env(), capture_output=True, text=True, timeout=60
    )
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    key, value = next(iter(bad.items()))
    assert str(ini) in lines[0] and key in lines[0] and repr(value) in lines[0]
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("module, args", ENTRY_POINTS[:5], ids=lambda v: str(v))
def test_missing_mail_domain(tmp_path, module, args):
    ini = tmp_path / "chatmail.ini"
    ini.write_text("[params]\nmax_message_size = 1000\n")
    argv = [a.format(ini=ini, tmp=tmp_path) for a in args]
    proc = subprocess.run(
        daemon_argv(module, *argv), env=daemon_env(), capture_output=True, text=True, timeout=60
    )
    assert proc.returncode != 0
    assert proc.stderr.strip().count("\n") == 0
    assert "mail_domain: missing" in proc.stderr
