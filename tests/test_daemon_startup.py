"""A daemon that cannot listen says so in one line and exits 1: no traceback."""

import socket
import subprocess

import pytest

from conftest import daemon_argv, daemon_env, write_ini


def run(argv, timeout=60):
    return subprocess.run(argv, env=daemon_env(), capture_output=True, text=True, timeout=timeout)


def assert_one_line_refusal(proc, *needles):
    assert proc.returncode == 1, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.fixture
def taken_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize(
    "mode, key",
    [
        ("outgoing", "filtermail_smtp_port"),
        ("incoming", "filtermail_smtp_port_incoming"),
        ("incoming", "filtermail_http_port_incoming"),  # /mxdeliv
    ],
)
def test_filtermail_port_in_use(tmp_path, taken_port, mode, key):
    ports = {"filtermail_http_port_incoming": free_port(), key: taken_port}
    ini = write_ini(tmp_path / "c.ini", mailboxes_dir=tmp_path / "mb", **ports)
    proc = run(daemon_argv("chatmaild.filtermail", ini, mode))
    assert_one_line_refusal(proc, f"127.0.0.1:{taken_port}", "in use")


def test_filtermail_metrics_port_in_use(tmp_path, taken_port):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        free = s.getsockname()[1]
    ini = write_ini(
        tmp_path / "c.ini",
        mailboxes_dir=tmp_path / "mb",
        filtermail_smtp_port=free,
        metrics_filtermail_outgoing=f"127.0.0.1:{taken_port}",
    )
    proc = run(daemon_argv("chatmaild.filtermail", ini, "outgoing"))
    assert_one_line_refusal(proc, f"127.0.0.1:{taken_port}", "metrics")


@pytest.mark.parametrize("module", ["chatmaild.doveauth", "chatmaild.lastlogin"])
def test_dict_socket_directory_impossible(tmp_path, module):
    ini = write_ini(tmp_path / "c.ini", mailboxes_dir=tmp_path / "mb")
    (tmp_path / "file").write_text("")
    sock = tmp_path / "file" / "d.socket"
    proc = run(daemon_argv(module, sock, ini))
    assert_one_line_refusal(proc, str(sock))


def test_dict_socket_path_not_a_socket(tmp_path):
    ini = write_ini(tmp_path / "c.ini", mailboxes_dir=tmp_path / "mb")
    path = tmp_path / "plain-file"
    path.write_text("keep me")
    proc = run(daemon_argv("chatmaild.doveauth", path, ini))
    assert_one_line_refusal(proc, str(path), "not a socket")
    assert path.read_text() == "keep me"


def test_metadata_metrics_port_in_use(tmp_path, taken_port):
    ini = write_ini(
        tmp_path / "c.ini",
        mailboxes_dir=tmp_path / "mb",
        metrics_metadata=f"127.0.0.1:{taken_port}",
    )
    proc = run(daemon_argv("chatmaild.metadata", tmp_path / "m.socket", ini))
    assert_one_line_refusal(proc, f"127.0.0.1:{taken_port}")


def test_dict_socket_directory_created(tmp_path):
    """A missing socket directory is made, as systemd's RuntimeDirectory= would."""
    import signal
    import time

    ini = write_ini(tmp_path / "c.ini", mailboxes_dir=tmp_path / "mb")
    sock = tmp_path / "run" / "sub" / "d.socket"
    proc = subprocess.Popen(daemon_argv("chatmaild.lastlogin", sock, ini), env=daemon_env())
    try:
        deadline = time.monotonic() + 30
        while not sock.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sock.exists()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    assert not sock.exists()
