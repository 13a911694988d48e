"""The real daemon process (`python -m chatmaild.filtermail`), started on the unchanged
chatmail.ini of an existing relay, inside a private network namespace so the fixed ports of
that file (10080/10081 -> 10025/10026) are free."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from conftest import REPO_ROOT, daemon_argv, daemon_env, require

# SPEC section 2: the production file of eijo.im, plus deployment keys the daemons ignore
EIJO_INI = """\
[params]
mail_domain = eijo.im
max_user_send_per_minute = 60
max_user_send_burst_size = 10
max_mailbox_size = 500M
max_message_size = 31457280
delete_mails_after = 20
delete_large_after = 7
delete_inactive_users_after = 90
username_min_length = 9
username_max_length = 9
password_min_length = 9
filtermail_smtp_port = 10080
postfix_reinject_port = 10025
filtermail_smtp_port_incoming = 10081
postfix_reinject_port_incoming = 10026
acme_email = admin@registrar.earth
mtail_address = 127.0.0.1
# deployment keys of other relays
www_folder = /var/www/html
disable_ipv6 = False
imap_rawlog = False
privacy_postal = Example Street 1
privacy_mail = privacy@eijo.im
privacy_pdo = pdo@eijo.im
privacy_supervisor = supervisor
"""


@pytest.fixture
def netns():
    require(os.geteuid() == 0, "root, for a private network namespace")
    require(shutil.which("ip"), "tool 'ip' (iproute2)")
    name = f"fmsrv-test-{os.getpid()}"
    made = subprocess.run(["ip", "netns", "add", name], capture_output=True)
    require(made.returncode == 0, f"ip netns add: {made.stderr.decode().strip()}")
    try:
        subprocess.run(["ip", "netns", "exec", name, "ip", "link", "set", "lo", "up"], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name])


def test_existing_relay_config_starts_both_filters(tmp_path, netns):
    ini = tmp_path / "chatmail.ini"
    ini.write_text(EIJO_INI)
    script = REPO_ROOT / "tests" / "filtermail_netns_check.py"
    argv = ["ip", "netns", "exec", netns, sys.executable, str(script), str(ini), str(REPO_ROOT)]
    env = daemon_env()
    env["PYTHONPATH"] = f"{REPO_ROOT}{os.pathsep}{REPO_ROOT / 'tests'}"
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["listening"] == [True, True], result
    assert result["outgoing"][0] == 250, result
    assert result["outgoing_identical"], result
    assert result["outgoing_plain"] == [523, "Encryption Needed: Invalid Unencrypted Mail"]
    assert result["incoming_unsigned"] == [550, "5.7.1 No valid DKIM signature found"], result
    assert result["incoming"][0] == 250, result
    assert result["http"] == [200, "250 OK"], result
    assert result["incoming_count"] == 2
    assert result["simultaneous_banners"] == 500, result
    assert result["exit_codes"] == {"outgoing": 0, "incoming": 0}, result
    out_log = result["logs"]["outgoing"]
    assert any("listening on 127.0.0.1:10080" in line for line in out_log), out_log
    assert "Outgoing: Filtering encrypted mail." in out_log
    in_log = result["logs"]["incoming"]
    assert any("DKIM verification of incoming mail is on" in line for line in in_log), in_log
    assert any(
        line.endswith("DKIM failed for mail from <alice@chat.example>: no signature")
        for line in in_log
    ), in_log
    exempt = "DKIM exempt: IP literal [192.0.2.1] is the client address"
    assert any(line.endswith(exempt) for line in in_log), in_log
    assert any(line.endswith(exempt + " (HTTP)") for line in in_log), in_log
    assert any("/mxdeliv over HTTP on 127.0.0.1:10082" in line for line in in_log), in_log
    assert not any("Traceback" in line or "unknown keys" in line for line in out_log), out_log


def test_usage_and_bad_config(tmp_path):
    bad = subprocess.run(
        daemon_argv("chatmaild.filtermail", tmp_path / "missing.ini", "outgoing"),
        env=daemon_env(),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert bad.returncode == 2 and "missing.ini" in bad.stderr
    ini = tmp_path / "chatmail.ini"
    ini.write_text(EIJO_INI)
    wrong_mode = subprocess.run(
        daemon_argv("chatmaild.filtermail", ini, "sideways"),
        env=daemon_env(),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert wrong_mode.returncode == 2 and "sideways" in wrong_mode.stderr
