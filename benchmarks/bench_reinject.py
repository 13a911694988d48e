#!/usr/bin/env python3
"""In-process cost of reinjection: CPU-seconds per 1000 messages of `Reinjector.send`.

Sends --count transactions (about 4 KB each) over --concurrency concurrent senders to
Postfix's `smtp-sink` (its own process, so only the client's CPU is counted) and reports
msgs/s and this process's CPU-seconds per 1000 messages (time.process_time), with the
downstream's PIPELINING on (smtp-sink default) and off (`smtp-sink -p`).

    python benchmarks/bench_reinject.py [--count N] [--concurrency N] [--json]
"""

import argparse
import asyncio
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT)]

from benchutil import free_port, wait_port  # noqa: E402

from chatmaild.smtp.proto import Transaction  # noqa: E402
from chatmaild.smtp.reinject import Reinjector  # noqa: E402

SMTP_SINK = shutil.which("smtp-sink") or "/usr/sbin/smtp-sink"


def transaction(i: int) -> Transaction:
    tx = Transaction("bench.test", "alice@chat.example", {})
    tx.rcpt_tos.append("bob@other.example")
    line = b"x" * 76 + b"\r\n"
    tx.data = b"Subject: %d\r\n\r\n" % i + line * 52
    tx.unstuffed_dots = 0
    return tx


async def run(port: int, count: int, concurrency: int) -> dict:
    reinjector = Reinjector("127.0.0.1", port, timeout=30)
    txs = [transaction(i) for i in range(count)]
    await asyncio.gather(*(reinjector.send(t) for t in txs[:concurrency]))  # warm the pool
    queue = iter(txs)
    failures = 0

    async def worker():
        nonlocal failures
        for tx in queue:
            if (await reinjector.send(tx)).code != 250:
                failures += 1

    cpu0, wall0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    await reinjector.close()
    return {
        "messages": count,
        "failures": failures,
        "msgs_per_s": round(count / wall, 1),
        "cpu_s_per_1000": round(cpu / count * 1000, 3),
        "connections_opened": reinjector.connections_opened,
    }


def measure(pipelining: bool, count: int, concurrency: int) -> dict:
    port = free_port()
    argv = [SMTP_SINK, "-u", "nobody"] + ([] if pipelining else ["-p"])
    sink = subprocess.Popen(
        argv + [f"127.0.0.1:{port}", "256"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_port(port)
        try:
            import uvloop

            return uvloop.run(run(port, count, concurrency))
        except ImportError:
            return asyncio.run(run(port, count, concurrency))
    finally:
        sink.terminate()
        sink.wait(5)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if not Path(SMTP_SINK).exists():
        sys.exit(f"needs {SMTP_SINK} (Debian package postfix)")
    results = {
        "pipelining": measure(True, args.count, args.concurrency),
        "no_pipelining": measure(False, args.count, args.concurrency),
    }
    if args.json:
        print(json.dumps(results, indent=2))
        return
    for name, r in results.items():
        print(
            f"{name:>13}: {r['msgs_per_s']} msg/s, {r['cpu_s_per_1000']} CPU-s/1000 msgs, "
            f"{r['connections_opened']} connections, {r['failures']} failures"
        )


if __name__ == "__main__":
    main()
