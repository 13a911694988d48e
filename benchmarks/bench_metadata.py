"""Benchmark of chatmail-metadata: dict request rates, push delivery, dead notification server.

Starts the daemon from this checkout (`python -m chatmaild.metadata`) on a temp dir with a local
aiohttp notification server, drives it over its unix socket with 16 concurrent clients, and
prints the rates (and JSON with --json). Bounded: a few seconds per measurement.

The dict rates come from the shared load client of benchmarks/dictload.py (forked client
processes, epoll over raw sockets, requests pre-built), so that the client is not what limits
them; each rate is printed with the daemon's CPU and the clients' CPU (in cores) to show which
side is saturated.

    python benchmarks/bench_metadata.py [--seconds 3] [--clients 16] [--processes 2] [--json]
"""

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import dictload
from aiohttp import web
from benchutil import proc_cpu_seconds, proc_status_kb, stop_process

ROOT = Path(__file__).resolve().parent.parent
DOMAIN = "chat.example"
GUID = "0123456789abcdef0123456789abcdef"
TOKEN_KEY = f"priv/{GUID}/devicetoken"
MESSAGENEW_KEY = f"priv/{GUID}/messagenew"
SERVER_KEY = f"shared/{GUID}/vendor/vendor.dovecot/pvt/server/vendor/deltachat/maxsmtprecipients"
PREVIOUS = {
    "token_sets_per_s": 1030,
    "messagenew_per_s": 790,
    "token_lookups_conn_per_request_per_s": 3600,
    "server_lookups_conn_per_request_per_s": 5200,
}
HELLO = b"H3\t2\t0\t\tmetadata\n"
WINDOW = 64  # requests in flight per pipelined connection


def user(i):
    return f"user{i:05d}@{DOMAIN}"


# -- the daemon under test


class Daemon:
    def __init__(self, workdir: Path, url: str):
        self.dir = workdir
        self.mailboxes = workdir / "mailboxes"
        self.socket = workdir / "metadata.socket"
        ini = workdir / "chatmail.ini"
        ini.write_text(
            f"[params]\nmail_domain = {DOMAIN}\nmailboxes_dir = {self.mailboxes}\n"
            f"turn_socket_path = {workdir}/turn.socket\nnotification_url = {url}\n"
        )
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        self.log_path = workdir / "metadata.log"
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "chatmaild.metadata", str(self.socket), str(ini)],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=self.log,
        )

    async def ready(self):
        for _ in range(200):
            if self.socket.exists():
                return
            await asyncio.sleep(0.05)
        raise RuntimeError("daemon did not start: " + self.log_path.read_text())

    def cpu_seconds(self) -> float:
        return proc_cpu_seconds(self.proc.pid)

    def rss_mib(self) -> float:
        return (proc_status_kb(self.proc.pid, "VmRSS") or 0) / 1024

    def queue_depth(self) -> int:
        d = self.mailboxes / "pending_notifications"
        return len(os.listdir(d)) if d.exists() else 0

    def log_lines(self) -> int:
        return len(self.log_path.read_text(errors="replace").splitlines())

    def stop(self):
        stop_process(self.proc)
        self.log.close()


# -- request shapes


def lookup(key, addr):
    return f"L{key}\t{addr}\n".encode()


def txn(txid, addr, key, value):
    return f"B{txid}\t{addr}\nS{txid}\t{key}\t{value}\nC{txid}\n".encode()


async def read_replies(reader, count):
    for _ in range(count):
        line = await reader.readline()
        if not line or line[:1] not in (b"O", b"N"):
            raise RuntimeError(f"unexpected reply {line!r}")


def measure(daemon, make_request, clients, seconds, pipelined, processes):
    """Requests per second with `clients` concurrent connections, daemon and client CPU.

    Blocking (run it in a thread): the load runs in `processes` forked client processes
    (benchmarks/dictload.py), each request pre-built and reused round-robin until `seconds`."""
    pid = daemon.proc.pid
    if pipelined:
        # more lines per connection than its window: a transaction id is reused only after
        # its commit was answered
        conn_lines = [[make_request(n, seq) for seq in range(4 * WINDOW)] for n in range(clients)]
        load = dictload.pipelined(
            daemon.socket,
            HELLO,
            conn_lines,
            seconds,
            pid,
            window=WINDOW,
            batch=WINDOW // 2,
            processes=processes,
            cycle=True,
            ok=b"ON",
        )
    else:
        requests = [HELLO + make_request(i % clients, i // clients) for i in range(64 * clients)]
        load = dictload.conn_per_request(
            daemon.socket,
            requests,
            clients,
            seconds,
            pid,
            processes=processes,
            cycle=True,
            ok=b"ON",
        )
    if load.errors:
        raise RuntimeError(f"{load.errors} requests failed (see {daemon.log_path})")
    return {
        "rate": load.rps,
        "daemon_cpu": round(load.server_cpu, 2),
        "client_cpu": round(load.client_cpu, 2),
    }


# -- notification server


class PushServer:
    def __init__(self):
        self.count = 0

    async def handle(self, request):
        await request.read()
        self.count += 1
        return web.Response(status=200)

    async def start(self):
        app = web.Application()
        app.router.add_post("/notify", self.handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self.runner.addresses[0][1]}/notify"

    async def stop(self):
        await self.runner.cleanup()


async def register_tokens(daemon, users):
    reader, writer = await asyncio.open_unix_connection(str(daemon.socket))
    writer.write(HELLO)
    for start in range(0, len(users), 256):
        chunk = users[start : start + 256]
        writer.write(
            b"".join(txn(i + 1, u, TOKEN_KEY, f"openpgp:{u}") for i, u in enumerate(chunk))
        )
        await read_replies(reader, len(chunk))
    writer.close()


async def wait_for(predicate, timeout):
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    return predicate()


async def run(args):
    results = {}
    work = Path(tempfile.mkdtemp(prefix="bench-metadata-", dir=args.tmpdir))
    push = PushServer()
    await push.start()
    (work / "live").mkdir()
    daemon = Daemon(work / "live", push.url)
    try:
        await daemon.ready()
        C, S, P = args.clients, args.seconds, args.processes

        def record(name, r):
            results[f"{name}_per_s"] = r["rate"]
            results[f"{name}_daemon_cpu"] = r["daemon_cpu"]
            results[f"{name}_client_cpu"] = r["client_cpu"]

        def token_set(n, seq):
            return txn(seq + 1, user(n), TOKEN_KEY, f"openpgp:tok-{n}-{seq % 4}")

        def token_lookup(n, seq):
            return lookup(TOKEN_KEY, user(n))

        def server_lookup(n, seq):
            return lookup(SERVER_KEY, user(n))

        for name, make in [
            ("token_sets", token_set),
            ("token_lookups", token_lookup),
            ("server_lookups", server_lookup),
        ]:
            for mode, pipelined in [("pipelined", True), ("conn_per_request", False)]:
                r = await asyncio.to_thread(measure, daemon, make, C, S, pipelined, P)
                record(f"{name}_{mode}", r)

        # messagenew for users with one token each (one per client), pushes answered 200
        users = [f"mn{n:05d}@{DOMAIN}" for n in range(C)]
        await register_tokens(daemon, users)
        sent_before = push.count

        def messagenew(n, seq):
            return txn(seq + 1, users[n], MESSAGENEW_KEY, "")

        r = await asyncio.to_thread(measure, daemon, messagenew, C, S, False, P)
        record("messagenew_conn_per_request", r)
        r = await asyncio.to_thread(measure, daemon, messagenew, C, S, True, P)
        record("messagenew_pipelined", r)
        await wait_for(lambda: daemon.queue_depth() == 0, 10)
        results["messagenew_pushes_sent"] = push.count - sent_before

        # notifications/s: N distinct users with one token each, one messagenew each
        n = args.notifications
        users = [user(50000 + i) for i in range(n)]
        await register_tokens(daemon, users)
        before, cpu0 = push.count, daemon.cpu_seconds()
        t0 = time.monotonic()
        reader, writer = await asyncio.open_unix_connection(str(daemon.socket))
        writer.write(HELLO)
        peak_depth = 0
        for start in range(0, n, 256):
            chunk = users[start : start + 256]
            writer.write(b"".join(txn(i + 1, u, MESSAGENEW_KEY, "") for i, u in enumerate(chunk)))
            await read_replies(reader, len(chunk))
            peak_depth = max(peak_depth, daemon.queue_depth())
        writer.close()
        done = await wait_for(lambda: push.count - before >= n, 60)
        elapsed = time.monotonic() - t0
        results["notifications_per_s"] = round((push.count - before) / elapsed)
        results["notifications_delivered"] = push.count - before
        results["notifications_all_delivered"] = done
        results["notifications_peak_queue_depth"] = peak_depth
        results["notifications_daemon_cpu"] = round((daemon.cpu_seconds() - cpu0) / elapsed, 2)
        results["live_rss_mib"] = round(daemon.rss_mib(), 1)
    finally:
        daemon.stop()
        await push.stop()

    # notification server down: a closed port; queue, memory and log volume
    (work / "dead").mkdir()
    dead = Daemon(work / "dead", "http://127.0.0.1:9/notify")
    try:
        await dead.ready()
        rss0 = dead.rss_mib()
        n = args.dead_notifications
        users = [user(i) for i in range(n)]
        await register_tokens(dead, users)
        reader, writer = await asyncio.open_unix_connection(str(dead.socket))
        writer.write(HELLO)
        t0 = time.monotonic()
        for start in range(0, n, 256):
            chunk = users[start : start + 256]
            writer.write(b"".join(txn(i + 1, u, MESSAGENEW_KEY, "") for i, u in enumerate(chunk)))
            await read_replies(reader, len(chunk))
        writer.close()
        results["dead_enqueue_per_s"] = round(n / (time.monotonic() - t0))
        await asyncio.sleep(args.dead_seconds)  # first attempts and the 8 s retries fail
        results["dead_queue_files"] = dead.queue_depth()
        results["dead_rss_mib_before"] = round(rss0, 1)
        results["dead_rss_mib_after"] = round(dead.rss_mib(), 1)
        results["dead_log_lines"] = dead.log_lines()
        results["dead_seconds"] = args.dead_seconds
        dead.stop()
        results["dead_log_lines_after_stop"] = dead.log_lines()
        # restart: the queue resumes with its schedule, nothing fires immediately
        dead2 = Daemon(work / "dead", "http://127.0.0.1:9/notify")
        await dead2.ready()
        await asyncio.sleep(1)
        results["dead_restart_queue_files"] = dead2.queue_depth()
        results["dead_restart_rss_mib"] = round(dead2.rss_mib(), 1)
        dead2.stop()
    finally:
        if dead.proc.poll() is None:
            dead.stop()
        shutil.rmtree(work, ignore_errors=True)
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="per rate measurement")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument(
        "--processes", type=int, default=2, help="load client processes for the dict rates"
    )
    parser.add_argument("--notifications", type=int, default=2000)
    parser.add_argument("--dead-notifications", type=int, default=5000)
    parser.add_argument("--dead-seconds", type=float, default=12.0)
    parser.add_argument(
        "--tmpdir",
        help="where the mailboxes go (default: the system temp dir); /dev/shm shows the daemon"
        " without the disk (token sets replace metadata.json: ext4 mounted with `discard`"
        " waits on a discard per replaced file)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON only")
    args = parser.parse_args()
    results = asyncio.run(run(args))
    if args.json:
        print(json.dumps(results, indent=2))
        return
    width = max(map(len, results))
    for key, value in results.items():
        print(f"{key:<{width}}  {value}")
    print(
        "\nagainst the previous implementation (target 3x); CPU in cores, limit = saturated side:"
    )
    pairs = {
        "token_sets_per_s": "token_sets_conn_per_request",
        "messagenew_per_s": "messagenew_conn_per_request",
        "token_lookups_conn_per_request_per_s": "token_lookups_conn_per_request",
        "server_lookups_conn_per_request_per_s": "server_lookups_conn_per_request",
    }
    for key, name in pairs.items():
        value, daemon_cpu, client_cpu = (
            results[f"{name}_per_s"],
            results[f"{name}_daemon_cpu"],
            results[f"{name}_client_cpu"],
        )
        print(
            f"  {key:<40} {value:>7} vs {PREVIOUS[key]:>5}  ({value / PREVIOUS[key]:.1f}x)"
            f"  daemon {daemon_cpu:.2f}  client {client_cpu:.2f}"
            f"  limit: {limit(daemon_cpu, client_cpu, args.processes)}"
        )


def limit(daemon_cpu, client_cpu, processes):
    """Which side held the rate back, judged from CPU shares (a hint, not a measurement)."""
    if daemon_cpu >= 0.9:
        return "daemon (one core busy)"
    if daemon_cpu + client_cpu >= 0.9 * (os.cpu_count() or 1):
        return "machine (every core busy)"
    if client_cpu >= 0.9 * processes:
        return "load client"
    return "neither CPU-bound (waits: I/O, locks, push server)"


if __name__ == "__main__":
    main()
