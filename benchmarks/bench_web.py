"""Account creation over HTTP: chatmail-web (asyncio, behind nginx) vs the newemail CGI
behind fcgiwrap, as upstream relays run it.

    python benchmarks/bench_web.py [--seconds 5] [--concurrency 8] [--json]

Starts, on loopback ports of this machine, `chatmail-web` and `fcgiwrap` (the CGI is
`python -m chatmaild.housekeeping.newemail`, one process per request as fcgiwrap runs it),
and a plain-HTTP nginx in front of both (no TLS and no rate limit: this measures what
answers /new, not TLS or limit_req). A keep-alive asyncio client POSTs /new for a fixed
time per target and counts answers with an address in them; latency p50/p99 per request.
Needs nginx and fcgiwrap (Debian packages); runs as any user that may start nginx.
"""

import argparse
import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchutil import free_port, percentile, wait_port  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
REQUEST = b"POST /new HTTP/1.1\r\nHost: bench\r\nContent-Length: 0\r\n\r\n"


async def _one_client(port, path, deadline, latencies, counts):
    """POST until the deadline on one keep-alive connection (a new one when it is closed,
    e.g. after nginx's keepalive_requests)."""
    request = REQUEST.replace(b"/new", path.encode())
    while time.perf_counter() < deadline:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            await _requests(reader, writer, request, deadline, latencies, counts)
        except asyncio.IncompleteReadError:
            counts["reconnects"] += 1
        finally:
            writer.close()


async def _read_body(reader, head):
    """The body after `head`: Content-Length framed, or chunked (nginx relaying a CGI)."""
    lower = head.lower()
    if b"transfer-encoding: chunked" not in lower:
        length = 0
        for line in lower.split(b"\r\n"):
            if line.startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        return await reader.readexactly(length)
    body = b""
    while size := int((await reader.readuntil(b"\r\n")).strip(), 16):
        body += await reader.readexactly(size)
        await reader.readexactly(2)
    await reader.readexactly(2)  # the CRLF after the last chunk
    return body


async def _requests(reader, writer, request, deadline, latencies, counts):
    while time.perf_counter() < deadline:
        started = time.perf_counter()
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        body = await _read_body(reader, head)
        latencies.append(time.perf_counter() - started)
        ok = head.startswith(b"HTTP/1.1 200") and b'"email"' in body
        counts["ok" if ok else "failed"] += 1
        if b"connection: close" in head.lower():
            return


async def _load(port, path, seconds, concurrency):
    latencies, counts = [], {"ok": 0, "failed": 0, "reconnects": 0}
    deadline = time.perf_counter() + seconds
    started = time.perf_counter()
    await asyncio.gather(
        *(_one_client(port, path, deadline, latencies, counts) for _ in range(concurrency))
    )
    elapsed = time.perf_counter() - started
    latencies.sort()

    def pct(q):
        return percentile(latencies, q) * 1000

    return {
        "requests_per_s": round(counts["ok"] / elapsed, 1),
        "ok": counts["ok"],
        "failed": counts["failed"],
        "reconnects": counts["reconnects"],
        "p50_ms": round(pct(0.50), 2),
        "p99_ms": round(pct(0.99), 2),
    }


def _nginx_conf(tmp, port, web_port, fcgi_socket, cgi_script):
    temp = "\n".join(
        f"    {k}_temp_path {tmp}/nginx-{k};"
        for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return textwrap.dedent(
        f"""\
        worker_processes 1;
        pid {tmp}/nginx.pid;
        error_log {tmp}/nginx-error.log warn;
        events {{ worker_connections 1024; }}
        http {{
            access_log off;
        {temp}
            upstream chatmail_web {{ server 127.0.0.1:{web_port}; keepalive 16; }}
            server {{
                listen 127.0.0.1:{port};
                location = /new {{
                    proxy_pass http://chatmail_web;
                    proxy_http_version 1.1;
                    proxy_set_header Connection "";
                }}
                location = /cgi-bin/newemail.py {{
                    fastcgi_pass unix:{fcgi_socket};
                    include /etc/nginx/fastcgi_params;
                    fastcgi_param SCRIPT_FILENAME {cgi_script};
                }}
            }}
        }}
        """
    )


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    for tool in ("nginx", "fcgiwrap"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is needed (apt-get install {tool})")

    tmp = Path(tempfile.mkdtemp(prefix="bench-web-"))
    os.chmod(tmp, 0o755)  # nginx workers and fcgiwrap read from here
    ini = tmp / "chatmail.ini"
    ini.write_text(
        "[params]\nmail_domain = bench.example\n"
        f"mailboxes_dir = {tmp}/mailboxes\nnocreate_file = {tmp}/nocreate\n"
        "max_load_1m = 1000\nmin_available_memory = 1K\nmin_free_disk_space = 1K\n"
    )
    env = dict(os.environ, PYTHONPATH=str(REPO), CHATMAIL_INI=str(ini))
    cgi = tmp / "newemail.cgi"
    cgi.write_text(
        f"#!/bin/sh\nexport CHATMAIL_INI={ini} PYTHONPATH={REPO}\n"
        f"exec {sys.executable} -m chatmaild.housekeeping.newemail\n"
    )
    cgi.chmod(0o755)
    web_port, nginx_port = free_port(), free_port()
    fcgi_socket = tmp / "fcgiwrap.socket"
    (tmp / "nginx.conf").write_text(_nginx_conf(tmp, nginx_port, web_port, fcgi_socket, cgi))
    procs = []
    try:
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "chatmaild.web",
                    str(ini),
                    "--listen",
                    f"127.0.0.1:{web_port}",
                ],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
        )
        procs.append(
            subprocess.Popen(
                ["fcgiwrap", "-c", str(os.cpu_count() or 2), "-s", f"unix:{fcgi_socket}"],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,  # its preforked workers go with the group
            )
        )
        subprocess.run(
            ["nginx", "-c", str(tmp / "nginx.conf")],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_port(web_port)
        wait_port(nginx_port)
        while not fcgi_socket.exists():
            time.sleep(0.05)
        os.chmod(fcgi_socket, 0o666)
        targets = [
            ("chatmail-web direct", web_port, "/new"),
            ("nginx -> chatmail-web", nginx_port, "/new"),
            ("nginx -> fcgiwrap -> newemail CGI", nginx_port, "/cgi-bin/newemail.py"),
        ]
        results = {}
        for name, port, path in targets:
            results[name] = asyncio.run(_load(port, path, args.seconds, args.concurrency))
    finally:
        pid_file = tmp / "nginx.pid"
        if pid_file.exists():
            os.kill(int(pid_file.read_text()), signal.SIGTERM)
        for proc in procs:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=10)
        time.sleep(0.2)
        shutil.rmtree(tmp, ignore_errors=True)
    meta = {"seconds": args.seconds, "concurrency": args.concurrency, "cpus": os.cpu_count()}
    if args.json:
        print(json.dumps({"meta": meta, "results": results}, indent=1))
        return
    print(f"POST /new for {args.seconds:g} s each, {args.concurrency} keep-alive clients")
    for name, r in results.items():
        print(
            f"  {name:36} {r['requests_per_s']:9.1f} req/s  p50 {r['p50_ms']:7.2f} ms"
            f"  p99 {r['p99_ms']:7.2f} ms  ({r['ok']} ok, {r['failed']} failed)"
        )


if __name__ == "__main__":
    main()
