#!/usr/bin/env python3
"""Receiving benchmark: filtermail incoming over HTTP (/mxdeliv) vs over SMTP.

One real daemon (`python -m chatmaild.filtermail INI incoming`, DKIM check off: this measures
the transport, the checks are the same code either way) re-injects into Postfix's
`smtp-sink`. The same OpenPGP-encrypted messages are sent, at --concurrency parallel
clients each, in three ways (taking turns, --rounds times, so that load from elsewhere on the
machine hits all three alike):

- smtp-conn:  SMTP, a new connection per message (what Postfix's before-queue proxy does);
- smtp-keep:  SMTP, one connection per client reused for every message;
- http-keep:  POST /mxdeliv (upstream's form: envelope headers, dot-stuffed body) on one
              HTTP/1.1 keep-alive connection per client (what nginx's upstream keepalive
              does).

The load clients are small asyncio clients in this process (same cost model for all three),
timestamping each message from its first byte to the final answer. Reported per message
size and concurrency: msgs/s, p50/p99 latency, the filter's CPU-seconds per 1000 messages
(/proc/<pid>/stat), and the filter's own count of accepted messages (must equal the sent).

    python benchmarks/bench_mxdeliv.py [--quick] [--json] [--messages N]
"""

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from bench_filtermail import SMTP_SINK, FilterProcess, Sink, make_message  # noqa: E402
from benchutil import p50_p99_ms, smtp_reply_code, wait_port  # noqa: E402

from chatmaild.filtermail.mxdeliv import request_headers, stuff_body  # noqa: E402

SENDER = "alice@chat.example"
RECIPIENT = "bob@chat.example"
SIZES = {"4KB": 4 * 1024, "50KB": 50 * 1024}
MODES = ("smtp-conn", "smtp-keep", "http-keep")


async def _expect(reader, code: int) -> None:
    got = await smtp_reply_code(reader)
    if got != code:
        raise RuntimeError(f"expected {code}, got {got}")


SMTP_ENVELOPE = f"MAIL FROM:<{SENDER}>\r\nRCPT TO:<{RECIPIENT}>\r\nDATA\r\n".encode()


async def _smtp_transaction(reader, writer, data_with_dot: bytes) -> None:
    # MAIL, RCPT, DATA in lock step as Postfix's proxy sends them to a filter
    for line in SMTP_ENVELOPE.split(b"\r\n")[:-1]:
        writer.write(line + b"\r\n")
        await _expect(reader, 354 if line == b"DATA" else 250)
    writer.write(data_with_dot)
    await _expect(reader, 250)


async def smtp_client(port, data_with_dot, count, keep, latencies):
    conn = None
    for _ in range(count):
        start = time.perf_counter()
        if conn is None:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            await _expect(reader, 220)
            writer.write(b"EHLO bench.test\r\n")
            await _expect(reader, 250)
            conn = reader, writer
        reader, writer = conn
        await _smtp_transaction(reader, writer, data_with_dot)
        if not keep:
            writer.write(b"QUIT\r\n")
            await _expect(reader, 221)
            writer.close()
            conn = None
        latencies.append(time.perf_counter() - start)
    if conn is not None:
        conn[1].write(b"QUIT\r\n")
        conn[1].close()


async def http_client(port, request: bytes, count, latencies):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    for _ in range(count):
        start = time.perf_counter()
        writer.write(request)
        status_line = await reader.readline()
        length = 0
        while (line := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        body = await reader.readexactly(length)
        if not status_line.startswith(b"HTTP/1.1 200") or body != b"250 OK":
            raise RuntimeError(f"refused: {status_line!r} {body!r}")
        latencies.append(time.perf_counter() - start)
    writer.close()


def http_request(message: bytes) -> bytes:
    body = stuff_body(message)
    head = [b"POST /mxdeliv HTTP/1.1", b"Host: bench.test"]
    head += [f"{k}: {v}".encode() for k, v in request_headers(SENDER, [RECIPIENT])]
    head += [b"X-Real-IP: 127.0.0.1", f"Content-Length: {len(body)}".encode()]
    return b"\r\n".join(head) + b"\r\n\r\n" + body


async def run_phase(mode, filt, message, concurrency, total):
    """Send `total` messages in `mode`; (seconds, latencies, filter CPU-s, accepted)."""
    per_client = [total // concurrency + (i < total % concurrency) for i in range(concurrency)]
    latencies: list[float] = []
    if mode == "http-keep":
        request = http_request(message)
        jobs = [http_client(filt.http_port, request, n, latencies) for n in per_client]
    else:
        data = stuff_body(message) + b".\r\n"
        keep = mode == "smtp-keep"
        jobs = [smtp_client(filt.port, data, n, keep, latencies) for n in per_client]
    before_cpu, before_ok = filt.cpu_seconds(), filt.accepted()
    start = time.perf_counter()
    await asyncio.gather(*jobs)
    elapsed = time.perf_counter() - start
    cpu = filt.cpu_seconds() - before_cpu
    await asyncio.sleep(0.2)  # the log line of the last message
    return elapsed, latencies, cpu, filt.accepted() - before_ok


async def measure(filt, message, concurrency, total, rounds):
    """The modes in turn, `rounds` times (so load from elsewhere hits all alike); one row
    per mode over all its rounds."""
    sums = {mode: [0.0, [], 0.0, 0] for mode in MODES}
    per_round = max(concurrency, total // rounds)
    for _ in range(rounds):
        for mode in MODES:
            elapsed, latencies, cpu, accepted = await run_phase(
                mode, filt, message, concurrency, per_round
            )
            acc = sums[mode]
            acc[0] += elapsed
            acc[1] += latencies
            acc[2] += cpu
            acc[3] += accepted
    rows = []
    for mode, (elapsed, latencies, cpu, accepted) in sums.items():
        sent = per_round * rounds
        p50, p99 = p50_p99_ms(sorted(latencies))
        rows.append(
            {
                "mode": mode,
                "concurrency": concurrency,
                "messages": sent,
                "accepted": accepted,
                "msgs_per_s": round(sent / elapsed, 1),
                "p50_ms": round(p50, 2),
                "p99_ms": round(p99, 2),
                "filter_cpu_s_per_1000": round(1000 * cpu / sent, 3),
            }
        )
    return rows


async def main_async(args):
    results = []
    sink = Sink()
    with tempfile.TemporaryDirectory(prefix="bench-mxdeliv-") as tmp:
        filt = FilterProcess(
            Path(tmp),
            sink.port,
            "incoming",
            mode="incoming",
            extra={"filtermail_dkim_check": "false"},
        )
        wait_port(filt.http_port)
        try:
            for size_name in args.sizes:
                message = make_message(SIZES[size_name]).replace(
                    b"bob@other.example", RECIPIENT.encode()
                )
                for concurrency in args.concurrency:
                    for mode in MODES:  # warm-up: connections, pools, caches
                        await run_phase(mode, filt, message, concurrency, concurrency * 2)
                    rows = await measure(filt, message, concurrency, args.messages, args.rounds)
                    for row in rows:
                        row["size"] = size_name
                        results.append(row)
                        if not args.json:
                            print(
                                f"{size_name:>5} c={concurrency:<4} {row['mode']:<10} "
                                f"{row['msgs_per_s']:>8.1f} msg/s  p50 {row['p50_ms']:>7.2f} ms"
                                f"  p99 {row['p99_ms']:>7.2f} ms  "
                                f"CPU {row['filter_cpu_s_per_1000']:.3f} s/1000  "
                                f"accepted {row['accepted']}/{row['messages']}",
                                flush=True,
                            )
        finally:
            filt.stop()
            sink.stop()
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=2000, help="per mode and phase")
    parser.add_argument("--rounds", type=int, default=5, help="the modes alternate this often")
    parser.add_argument("--quick", action="store_true", help="600 messages, 4KB only")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--size", choices=list(SIZES), action="append", help="(all)")
    parser.add_argument("--concurrency", type=int, action="append", help="(10 and 100)")
    args = parser.parse_args()
    args.sizes = args.size or list(SIZES)
    args.concurrency = args.concurrency or [10, 100]
    if args.quick:
        args.messages = 600
        args.sizes = args.size or ["4KB"]
    if not Path(SMTP_SINK).exists():
        sys.exit(f"needs Postfix's smtp-sink ({SMTP_SINK})")
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    results = asyncio.run(main_async(args))
    if args.json:
        print(json.dumps({"benchmark": "mxdeliv-receive", "results": results}, indent=1))
    bad = [r for r in results if r["accepted"] != r["messages"]]
    if bad:
        sys.exit(f"the filter accepted fewer messages than were sent: {bad}")


if __name__ == "__main__":
    main()
