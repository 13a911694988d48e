"""chatmail-web over a real unix socket: keep-alive, pipelining, errors, the daemon."""

import asyncio
import json
import os
import signal
import socket
import stat
import subprocess
import time

from chatmaild.config import read_config
from chatmaild.doveauth.rules import Resources
from chatmaild.metrics.exporter import ListenSpec
from chatmaild.web.app import WebApp
from chatmaild.web.server import serve

from conftest import daemon_argv, daemon_env

IDLE = Resources(load_1m=0.1, available_memory=10**10, free_disk=10**12)
POST = b"POST /new HTTP/1.1\r\nHost: r\r\nContent-Length: 0\r\n\r\n"


def _responses(data):
    """(status, body) of each response in `data` (Content-Length framed)."""
    out = []
    while data:
        head, _, rest = data.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        length = int(
            [v for k, _, v in (x.partition(b": ") for x in lines) if k == b"Content-Length"][0]
        )
        out.append((int(lines[0].split()[1]), rest[:length]))
        data = rest[length:]
    return out


async def _exchange(path, payload):
    reader, writer = await asyncio.open_unix_connection(str(path))
    writer.write(payload)
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 10)  # until the server closes
    writer.close()
    return data


async def test_pipelined_keep_alive_then_close(ini_path, tmp_path):
    app = WebApp(read_config(ini_path), read_resources=lambda _: IDLE)
    sock_path = tmp_path / "run" / "web.socket"
    server, _ = await serve(app, ListenSpec(path=sock_path))
    try:
        assert stat.S_IMODE(os.stat(sock_path).st_mode) == 0o666
        last = b"POST /cgi-bin/newemail.py HTTP/1.1\r\nHost: r\r\nConnection: close\r\n\r\n"
        data = await _exchange(sock_path, POST + POST + last)
        answers = _responses(data)
        assert [status for status, _ in answers] == [200, 200, 200]
        emails = {json.loads(body)["email"] for _, body in answers}
        assert len(emails) == 3
        bad = await _exchange(sock_path, b"BAD\r\n\r\n")
        assert bad.startswith(b"HTTP/1.1 400") and b"Connection: close" in bad
    finally:
        server.close()
    assert app.handed_out == 3


def test_daemon_serves_and_stops_on_sigterm(ini_path, tmp_path):
    sock_path = tmp_path / "web.socket"
    proc = subprocess.Popen(
        daemon_argv("chatmaild.web", ini_path, "--listen", f"unix:{sock_path}"),
        env=daemon_env(),
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 20
        while not sock_path.exists():
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        client = socket.socket(socket.AF_UNIX)
        client.connect(str(sock_path))
        client.sendall(POST.replace(b"Host: r", b"Host: r\r\nConnection: close"))
        data = b""
        while chunk := client.recv(4096):
            data += chunk
        client.close()
        ((status, body),) = _responses(data)
        assert status == 200 and json.loads(body)["email"].endswith("@chat.example")
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert not sock_path.exists()


async def test_a_file_in_the_sockets_place_is_not_removed(ini_path, tmp_path):
    from chatmaild.daemon import StartupError

    app = WebApp(read_config(ini_path), read_resources=lambda _: IDLE)
    path = tmp_path / "web.socket"
    path.write_text("not a socket")
    try:
        await serve(app, ListenSpec(path=path))
    except StartupError as e:
        assert "exists and is not a socket" in str(e)
    else:
        raise AssertionError("serve() replaced a regular file")
    assert path.read_text() == "not a socket"
