"""`python -m chatmaild.relay up|status|down` as a user runs it (a second relay, own netns)."""

import os
import signal
import subprocess
import tempfile
from pathlib import Path

import pytest

from chatmaild.relay.netns import NETNS_ETC_DIR, tcp_port_open

from .conftest import relay_cli_cleanup, relay_prerequisites
from conftest import daemon_argv, daemon_env


@pytest.fixture
def cli_state(request):
    relay_prerequisites()
    state = Path(tempfile.mkdtemp(prefix="chatmaild-cli-", dir="/tmp"))
    netns = f"chatmaild-cli-{os.getpid()}"
    yield state, netns
    relay_cli_cleanup(state)  # whatever happened, leave nothing running


def _relay_cmd(*args):
    return daemon_argv("chatmaild.relay", *args)


def _status(state):
    return subprocess.run(
        _relay_cmd("status", "--state-dir", state),
        env=daemon_env(),
        capture_output=True,
        text=True,
        check=False,
    )


def _assert_gone(state, netns):
    assert not Path(f"/run/netns/{netns}").exists()
    assert not (NETNS_ETC_DIR / netns).exists()
    status = _status(state)
    assert status.returncode == 1
    assert "running" not in status.stdout


def test_up_status_down(cli_state):
    state, netns = cli_state
    up = subprocess.run(
        _relay_cmd("up", "--state-dir", state, "--netns", netns),
        env=daemon_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert up.returncode == 0, up.stderr
    assert "accept invalid certificates" in up.stdout
    assert "port 993" in up.stdout and "port 465" in up.stdout
    assert "chatmail-iroh-relay on 127.0.0.1:3340" in up.stdout
    assert (NETNS_ETC_DIR / netns / "hosts").read_text().split()[:2] == ["127.0.0.1", "localhost"]

    status = _status(state)
    assert status.returncode == 0, status.stdout
    assert "postfix" in status.stdout and "dovecot" in status.stdout
    assert "nginx" in status.stdout and "web" in status.stdout
    assert "iroh-relay" in status.stdout
    assert tcp_port_open(netns, 465) and tcp_port_open(netns, 993)
    assert tcp_port_open(netns, 3340)

    again = subprocess.run(
        _relay_cmd("up", "--state-dir", state, "--netns", netns),
        env=daemon_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert again.returncode == 1 and "already running" in again.stderr
    assert _status(state).returncode == 0  # the refused second `up` changed nothing

    down = subprocess.run(
        _relay_cmd("down", "--state-dir", state),
        env=daemon_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert down.returncode == 0, down.stderr
    _assert_gone(state, netns)
    leftovers = subprocess.run(["pgrep", "-f", str(state)], capture_output=True, text=True)
    assert leftovers.stdout.strip() == "", "daemons left running after down"


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "Ctrl-C"])
def test_foreground_stops_everything_on_signal(cli_state, signum):
    state, netns = cli_state
    proc = subprocess.Popen(
        _relay_cmd("up", "--foreground", "--state-dir", state, "--netns", netns),
        env=daemon_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if "Ctrl-C stops the relay" in line:
                break
        assert any("is up" in line for line in lines), "".join(lines)
        assert _status(state).returncode == 0
        proc.send_signal(signum)
        rest = proc.communicate(timeout=60)[0]
        assert proc.returncode == 0, rest
        assert "relay stopped" in rest
        assert f"Its state stays in {state}" in rest  # and is not removed
        assert (state / "chatmail.ini").exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    _assert_gone(state, netns)
    # Our daemons ended on SIGTERM: nothing runs from this state dir any more.
    leftovers = subprocess.run(["pgrep", "-f", str(state)], capture_output=True, text=True)
    assert leftovers.stdout.strip() == ""
