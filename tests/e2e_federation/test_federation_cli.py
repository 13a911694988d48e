"""`python -m chatmaild.relay up --pair | status | down` as an operator runs them: a pair of
its own (own state dir and namespaces), found again by `status` and `down` from its
pair.json, and nothing left behind."""

import json
import os
import subprocess
import tempfile
from pathlib import Path

import pytest
from e2e.conftest import relay_prerequisites

from chatmaild.relay.netns import NETNS_ETC_DIR
from chatmaild.relay.processes import pid_alive

from conftest import daemon_argv, daemon_env, require_tool


def _relay(*args):
    return subprocess.run(
        daemon_argv("chatmaild.relay", *map(str, args)),
        env=daemon_env(),
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )


@pytest.fixture
def pair_state():
    relay_prerequisites()
    require_tool("unbound")
    state = Path(tempfile.mkdtemp(prefix="chatmaild-fedcli-", dir="/tmp"))
    yield state, f"chatmaild-fedcli-{os.getpid()}"
    if (state / "pair.json").exists():
        _relay("down", "--state-dir", state)
    subprocess.run(["rm", "-rf", str(state)], check=False)


def test_up_pair_status_down(pair_state):
    state, prefix = pair_state
    up = _relay("up", "--pair", "--state-dir", state, "--netns", prefix)
    assert up.returncode == 0, up.stderr[-3000:]
    assert "relay-a.test at 10.77.0.1" in up.stdout and "relay-b.test at 10.77.0.2" in up.stdout
    assert f"down --state-dir {state}" in up.stdout

    status = _relay("status", "--state-dir", state)
    assert status.returncode == 0, status.stdout
    lines = status.stdout.splitlines()
    for side in ("a", "b"):
        for part in ("postfix", "dovecot", "opendkim", "filtermail-incoming", "unbound"):
            assert any(line.split() == [f"{side}:{part}", "running"] for line in lines), part
    resolver_pids = json.loads((state / "pair.json").read_text())["resolver_pids"]
    assert len(resolver_pids) == 2 and all(pid_alive(pid) for pid in resolver_pids)

    down = _relay("down", "--state-dir", state)
    assert down.returncode == 0, down.stderr
    assert not any(pid_alive(pid) for pid in resolver_pids)
    for side in ("a", "b"):
        assert not Path(f"/run/netns/{prefix}-{side}").exists()
        assert not (NETNS_ETC_DIR / f"{prefix}-{side}").exists()
    status = _relay("status", "--state-dir", state)
    assert status.returncode == 1
    assert " running" not in status.stdout


def test_pair_takes_no_config(tmp_path):
    result = _relay("up", "--pair", "--config", tmp_path / "x.ini", "--state-dir", tmp_path)
    assert result.returncode == 2
    assert "--config does not apply" in result.stderr
    assert not (tmp_path / "pair.json").exists()
