"""A daemon at its descriptor limit (issue: fd starvation): the connections it cannot take are
closed at once (not left hanging), one log line says so, and it serves again once descriptors
free up. Each server runs in a child process whose RLIMIT_NOFILE is 60."""

import socket
import subprocess
import sys
import time

import pytest

from conftest import REPO_ROOT, daemon_env

PRELUDE = """
import asyncio, logging, resource, sys
from chatmaild import daemon
resource.setrlimit(resource.RLIMIT_NOFILE, (60, 60))
logging.basicConfig(level=logging.INFO)
"""

SERVERS = {
    # the dict protocol (doveauth, lastlogin, metadata)
    "dict": """
from chatmaild.dictproxy import serve_unix
class Echo:
    def lookup(self, key, user): return "v"
async def main():
    await serve_unix(sys.argv[1], Echo())
""",
    # chatmail-iroh-relay
    "irohrelay": """
from chatmaild.irohrelay.cli import listen
from chatmaild.irohrelay.server import Limits, RelayServer
from chatmaild.metrics.exporter import parse_listen_spec
async def main():
    await listen(RelayServer(Limits()), parse_listen_spec("unix:" + sys.argv[1]))
""",
    # the Prometheus endpoint of every daemon
    "metrics": """
from prometheus_client import CollectorRegistry
from chatmaild.metrics.exporter import start_exporter
async def main():
    await start_exporter("unix:" + sys.argv[1], CollectorRegistry())
""",
    # filtermail incoming's /mxdeliv listener (TCP only): main() returns its port
    "mxdeliv": """
from pathlib import Path
from chatmaild.config import read_config
from chatmaild.filtermail.app import build_http_server, build_server
async def main():
    ini = Path(sys.argv[1]).with_name("chatmail.ini")
    ini.write_text("[params]\\nmail_domain = chat.example\\nfiltermail_dkim_check = false\\n")
    config = read_config(ini)
    server, _ = build_server(config, "incoming")
    http = build_http_server(config, server, listen_port=0)
    await http.start()
    return http.port
""",
    # chatmail-web
    "web": """
from chatmaild.metrics.exporter import parse_listen_spec
from chatmaild.web.server import serve
async def main():
    await serve(None, parse_listen_spec("unix:" + sys.argv[1]))
""",
}
RUN = """
async def run():
    port = await main()
    print("ready", port or "", flush=True)
    await asyncio.sleep(3600)
daemon.run(run())
"""
# a request each server answers, and the start of its answer
PROBES = {
    "dict": (b"H3\t2\t0\t\tx\nLshared/k\t\n", b"Ov\n"),
    "irohrelay": (b"GET /ping HTTP/1.1\r\nHost: r\r\n\r\n", b"HTTP/1.1 200"),
    "metrics": (b"GET /metrics HTTP/1.1\r\nHost: r\r\n\r\n", b"HTTP/1.1 200"),
    "mxdeliv": (b"GET /mxdeliv HTTP/1.1\r\nHost: r\r\n\r\n", b"HTTP/1.1 405"),
    "web": (b"GET /nothing-here HTTP/1.1\r\nHost: r\r\n\r\n", b"HTTP/1.1 "),
}


@pytest.mark.parametrize("name", sorted(SERVERS))
def test_out_of_descriptors_is_logged_and_the_server_recovers(tmp_path, name):
    path = tmp_path / "server.socket"
    proc = subprocess.Popen(
        [sys.executable, "-c", PRELUDE + SERVERS[name] + RUN, str(path)],
        env=daemon_env(),
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    held = []
    try:
        ready, _, port = proc.stdout.readline().strip().partition(" ")
        assert ready == "ready"
        family, address = (
            (socket.AF_INET, ("127.0.0.1", int(port))) if port else (socket.AF_UNIX, str(path))
        )
        for _ in range(100):
            s = socket.socket(family)
            s.settimeout(5)
            s.connect(address)
            held.append(s)
        for s in held:
            s.setblocking(False)
        # the server takes some 50 and closes the rest as soon as it runs (polled: a busy
        # machine may not run the child within a fixed half second)
        closed = set()
        deadline = time.monotonic() + 10
        while len(closed) < 30 and time.monotonic() < deadline:
            time.sleep(0.2)
            for i, s in enumerate(held):
                if i in closed:
                    continue
                try:
                    if s.recv(1) == b"":
                        closed.add(i)
                except BlockingIOError:
                    pass
        assert len(closed) >= 30, len(closed)
        for s in held:
            s.close()
        held.clear()
        time.sleep(0.3)
        request, answer = PROBES[name]
        with socket.socket(family) as s:
            s.settimeout(5)
            s.connect(address)
            s.sendall(request)
            assert s.recv(100).startswith(answer)
    finally:
        for s in held:
            s.close()
        proc.terminate()
        _, err = proc.communicate(timeout=10)
    assert err.count("out of file descriptors") == 1, err
    assert "Too many open files" in err
