import signal
import socket
import subprocess
import time

from conftest import daemon_argv, daemon_env, write_ini


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_run_command_starts_and_stops_on_ctrl_c(tmp_path):
    ini = write_ini(
        tmp_path / "chatmail.ini",
        mailboxes_dir=tmp_path / "mailboxes",
        filtermail_smtp_port=free_port(),
        filtermail_smtp_port_incoming=free_port(),
        filtermail_http_port_incoming=free_port(),
        postfix_reinject_port=free_port(),
        postfix_reinject_port_incoming=free_port(),
        max_load_1m=1000,
    )
    proc = subprocess.Popen(
        daemon_argv("chatmaild.runall", "--state-dir", tmp_path / "state", "--config", ini),
        env=daemon_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        lines.append(line)
        if "Ctrl-C stops everything" in line or not line:
            break
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=30)
    text = "".join(lines) + out
    assert proc.returncode == 0, text
    assert "chatmaild-run: all stopped" in text
    started = [line for line in text.splitlines() if line.startswith("  + ")]
    skipped = [line for line in text.splitlines() if line.startswith("  - ")]
    assert len(started) + len(skipped) == 5
    for line in started:
        name = line[4:].split(" (pid")[0]
        assert f"chatmaild-run: stopped {name}" in text
        assert f"{name} exited" not in text


def test_run_command_embedded_default_config(tmp_path):
    proc = subprocess.run(
        daemon_argv("chatmaild.runall", "--state-dir", tmp_path, "--seconds", "0.5"),
        env=daemon_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    ini = (tmp_path / "chatmail.ini").read_text()
    assert "mail_domain = chat.example" in ini
    assert "all stopped" in proc.stdout
