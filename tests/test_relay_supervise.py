"""The supervisor of `relay up` (chatmaild/relay/supervise.py) as a real process."""

import os
import signal
import subprocess
import sys
import time

from chatmaild.relay.processes import pid_alive, read_pid

from conftest import REPO_ROOT, daemon_env


def supervise(tmp_path, *command, nofile=None):
    pid_file = tmp_path / "child.pid"
    argv = [sys.executable, "-m", "chatmaild.relay.supervise", "--name=test"]
    argv += [f"--pid-file={pid_file}", "--stop-timeout=3"]
    if nofile:
        argv.append(f"--nofile={nofile}")
    proc = subprocess.Popen(
        [*argv, "--", *command],
        env=daemon_env(),
        cwd=REPO_ROOT,
        stderr=subprocess.PIPE,
        text=True,
    )
    return proc, pid_file


def wait_for(predicate, timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(0.05)
    raise AssertionError("timed out")


def test_a_killed_child_is_restarted_and_sigterm_stops_both(tmp_path):
    proc, pid_file = supervise(tmp_path, "sleep", "60", nofile=4096)
    try:
        first = wait_for(lambda: read_pid(pid_file))
        limits = open(f"/proc/{first}/limits").read()
        assert [x.split()[3:5] for x in limits.splitlines() if "open files" in x] == [
            ["4096", "4096"]
        ]
        os.kill(first, signal.SIGKILL)
        second = wait_for(lambda: (p := read_pid(pid_file)) not in (None, first) and p)
        assert pid_alive(second)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
        assert not pid_alive(second)
        assert not pid_file.exists()
    finally:
        proc.kill()
        err = proc.communicate()[1]
    assert f"supervisor: test (pid {first}) was killed by signal 9 (SIGKILL)" in err
    assert "restarting in 0.5 s" in err
    assert f"supervisor: test restarted (pid {second}, restart 1)" in err


def test_a_first_run_that_fails_at_start_is_not_restarted(tmp_path):
    proc, pid_file = supervise(tmp_path, "sh", "-c", "echo bad config >&2; exit 3")
    assert proc.wait(10) == 3
    err = proc.communicate()[1]
    assert "bad config" in err
    assert "supervisor: test exited with status 3 at start; not restarting it" in err
    assert not pid_file.exists()


def test_a_daemon_that_keeps_dying_backs_off(tmp_path):
    marker = tmp_path / "ran"
    # the first run lives past the start grace, then every run dies at once
    script = f"if [ -e {marker} ]; then exit 1; fi; touch {marker}; sleep 3.2; exit 1"
    proc, _ = supervise(tmp_path, "sh", "-c", script)
    try:
        time.sleep(6)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)
        err = proc.communicate()[1]
    delays = [
        line.rsplit("restarting in ", 1)[1] for line in err.splitlines() if "restarting in" in line
    ]
    assert delays[:3] == ["0.5 s", "1 s", "2 s"], err
