"""chatmail-turn: credential lines per second over its unix socket, and the daemon's CPU.

Starts `python -m chatmaild.turn serve` on a temp secret database (as this user), then
`--clients` asyncio clients connect, read the line and close, for `--seconds`. Prints lines/s,
p50/p99 latency of one fetch and the daemon's CPU seconds per 10,000 lines (`--json` for one
JSON object). Delta Chat asks at every login, through chatmail-metadata, so this is the
ceiling of TURN lookups per second.
"""

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchutil import p50_p99_ms

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def load(socket_path, clients, seconds):
    latencies = []
    deadline = time.monotonic() + seconds

    async def client():
        while time.monotonic() < deadline:
            start = time.perf_counter()
            reader, writer = await asyncio.open_unix_connection(socket_path)
            line = await reader.read()
            writer.close()
            assert line.endswith(b"\n")
            latencies.append(time.perf_counter() - start)

    await asyncio.gather(*(client() for _ in range(clients)))
    return sorted(latencies)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    from chatmaild.turn import secretdb

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        secretdb.ensure_secret(tmp / "db" / "turndb", "bench.example", owner=None)
        ini = tmp / "chatmail.ini"
        ini.write_text(
            f"[params]\nmail_domain = bench.example\nturn_db_path = {tmp}/db/turndb\n"
            f"turn_socket_path = {tmp}/turn.socket\n"
        )
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        proc = subprocess.Popen(
            [sys.executable, "-m", "chatmaild.turn", "serve", str(ini)],
            env=env,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 15
            while not (tmp / "turn.socket").exists():
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("chatmail-turn did not start")
                time.sleep(0.05)
            cpu0 = cpu_seconds(proc.pid)
            latencies = asyncio.run(load(str(tmp / "turn.socket"), args.clients, args.seconds))
            cpu = cpu_seconds(proc.pid) - cpu0
        finally:
            proc.terminate()
            proc.wait(timeout=10)
    count = len(latencies)
    p50, p99 = p50_p99_ms(latencies)
    result = {
        "clients": args.clients,
        "lines_per_second": round(count / args.seconds),
        "p50_ms": round(p50, 3),
        "p99_ms": round(p99, 3),
        "daemon_cpu_s_per_10k_lines": round(cpu / count * 10_000, 3),
    }
    if args.json:
        print(json.dumps(result))
        return
    print(f"chatmail-turn, {args.clients} clients, {args.seconds:g} s:")
    print(f"  {result['lines_per_second']:,} credential lines/s")
    print(f"  one fetch: p50 {result['p50_ms']} ms, p99 {result['p99_ms']} ms")
    print(f"  daemon CPU: {result['daemon_cpu_s_per_10k_lines']} s per 10,000 lines")


if __name__ == "__main__":
    main()
