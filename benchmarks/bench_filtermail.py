#!/usr/bin/env python3
"""Load benchmark of filtermail (outgoing mode) with real OpenPGP-encrypted messages.

The filter runs as its own process (`python -m chatmaild.filtermail INI outgoing`) and
re-injects into Postfix's `smtp-sink`. Load comes from Postfix's `smtp-source` (C, one
connection per message like Postfix's before-queue proxy), so the load client is never the
bottleneck; the fixed-rate latency phase uses a small lock-step asyncio client that
timestamps each transaction.

Phases (each also run straight against the sink, as the ceiling):
1. throughput per message size (~4 KB, ~50 KB, ~1 MB) at --sessions concurrent sessions:
   msgs/s, ratio to the ceiling, filter CPU-seconds per 1000 messages (/proc/<pid>/stat);
2. latency at a fixed offered rate (--rate msg/s, 4 KB): p50/p99 of connect -> final reply;
3. slow sink: the sink answers the final dot after 1 s, --slow-sessions sessions: msgs/s;
4. metrics on/off (issue 8), 4 KB: the same load through a filter with its metrics endpoint
   off and one with `metrics_filtermail_outgoing` on and scraped every --scrape-interval s,
   alternating, --metrics-rounds rounds each: msgs/s and CPU-s/1000 of both; the scraped
   counter must equal the messages sent. (The daemon counts in memory either way; the
   in-process cost of one message's metric updates is reported as well.)
peak RSS (VmHWM) of each filter process is reported per phase.

    python benchmarks/bench_filtermail.py [--quick] [--json] [--metrics]

--metrics turns the metrics endpoint on for the filters of phases 1-3 too.

Targets (issue 3): >= 20% of the ceiling, <= 0.5 CPU-s per 1000 msgs, p99 <= 10 ms at
200 msg/s, >= 80 msg/s with the slow sink at 100 sessions, peak RSS <= 60 MB at 100 sessions.
"""

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from benchutil import (  # noqa: E402
    free_port,
    proc_cpu_seconds,
    proc_status_kb,
    smtp_reply_code,
    stop_process,
    wait_port,
)
from filtermail_samples import armor, encrypt, encrypted_mail  # noqa: E402

SENDER = "alice@chat.example"
RECIPIENT = "bob@other.example"
SMTP_SINK = shutil.which("smtp-sink") or "/usr/sbin/smtp-sink"
SMTP_SOURCE = shutil.which("smtp-source") or "/usr/sbin/smtp-source"

SIZES = {"4KB": 4 * 1024, "50KB": 50 * 1024, "1MB": 1024 * 1024}


def make_message(target: int) -> bytes:
    """An encrypted RFC 3156 mail of about `target` bytes (CRLF line ends)."""
    payload = max(64, int(target * 0.72) - 900)
    return encrypted_mail(armor(encrypt(("x25519",), payload)), sender=SENDER, to=RECIPIENT)


class Sink:
    """Postfix smtp-sink on an ephemeral port; `delay`: seconds before answering the dot."""

    def __init__(self, delay: float = 0.0):
        self.port = free_port()
        argv = [SMTP_SINK, "-u", "nobody"]
        if delay:
            argv += ["-W", f".:{delay:g}"]
        argv += [f"127.0.0.1:{self.port}", "1024"]
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port)

    def stop(self):
        self.proc.terminate()
        self.proc.wait(5)


class FilterProcess:
    """The real daemon (outgoing mode unless `mode`), re-injecting into `reinject_port`; with
    `metrics`, its metrics endpoint listens on 127.0.0.1:`metrics_port`; `extra`: more ini
    lines (key -> value)."""

    def __init__(
        self,
        workdir: Path,
        reinject_port: int,
        name: str,
        metrics: bool = False,
        mode: str = "outgoing",
        extra: dict | None = None,
    ):
        self.port = free_port()
        self.mode = mode
        extra = dict(extra or {})
        if mode == "incoming":  # its /mxdeliv listener, unless the caller chose the port
            extra.setdefault("filtermail_http_port_incoming", free_port())
            self.http_port = int(extra["filtermail_http_port_incoming"])
        self.metrics_port = free_port() if metrics else None
        suffix = "" if mode == "outgoing" else "_incoming"
        ini = workdir / f"{name}.ini"
        ini.write_text(
            "[params]\n"
            "mail_domain = chat.example\n"
            f"mailboxes_dir = {workdir}/mailboxes\n"
            f"filtermail_smtp_port{suffix} = {self.port}\n"
            f"postfix_reinject_port{suffix} = {reinject_port}\n"
            "max_user_send_per_minute = 100000000\n"
            "max_user_send_burst_size = 100000000\n"
            + (f"metrics_filtermail_{mode} = 127.0.0.1:{self.metrics_port}\n" if metrics else "")
            + "".join(f"{key} = {value}\n" for key, value in extra.items())
        )
        self.log_path = workdir / f"{name}.log"
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "chatmaild.filtermail", str(ini), mode],
                env=env,
                stdout=log,
                stderr=log,
            )
        wait_port(self.port)
        if metrics:
            wait_port(self.metrics_port)

    def scrape(self) -> str:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.read().decode()

    def encrypted_count(self) -> float:
        """chatmail_filtermail_messages_total{outcome="encrypted"} as scraped."""
        for line in self.scrape().splitlines():
            if line.startswith("chatmail_filtermail_messages_total{") and (
                'outcome="encrypted"' in line
            ):
                return float(line.rsplit(" ", 1)[1])
        raise RuntimeError("no encrypted-messages counter in the scrape")

    def cpu_seconds(self) -> float:
        return proc_cpu_seconds(self.proc.pid)

    def peak_rss_mb(self) -> float:
        return (proc_status_kb(self.proc.pid, "VmHWM") or 0) / 1024

    def accepted(self) -> int:
        return self.log_path.read_text().count(
            f"{self.mode.capitalize()}: Filtering encrypted mail."
        )

    def stop(self):
        stop_process(self.proc, timeout=15)


def smtp_source(port: int, msgfile: Path, sessions: int, count: int) -> float:
    """Send `count` messages over `sessions` parallel sessions; seconds taken."""
    argv = [SMTP_SOURCE, "-s", str(sessions), "-m", str(count)]
    argv += ["-f", SENDER, "-t", RECIPIENT, "-F", str(msgfile), f"127.0.0.1:{port}"]
    start = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"smtp-source failed: {proc.stderr.strip()[-500:]}")
    return elapsed


# -- fixed-rate latency client ---------------------------------------------------------------


async def _transaction(port: int, stuffed: bytes) -> float:
    start = time.perf_counter()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        await smtp_reply_code(reader)
        for command, expected in (
            (b"EHLO bench.test\r\n", 250),
            (f"MAIL FROM:<{SENDER}>\r\n".encode(), 250),
            (f"RCPT TO:<{RECIPIENT}>\r\n".encode(), 250),
            (b"DATA\r\n", 354),
            (stuffed, 250),
        ):
            writer.write(command)
            code = await smtp_reply_code(reader)
            if code != expected:
                raise RuntimeError(f"unexpected reply {code}")
        elapsed = time.perf_counter() - start
        writer.write(b"QUIT\r\n")
    finally:
        writer.close()
    return elapsed


async def fixed_rate(port: int, message: bytes | list, rate: float, seconds: float) -> dict:
    """Offer `rate` transactions per second for `seconds`; a list of messages is sent in turn."""
    messages = message if isinstance(message, list) else [message]
    stuffed = [m.replace(b"\r\n.", b"\r\n..") + b".\r\n" for m in messages]
    count = int(rate * seconds)
    loop = asyncio.get_running_loop()
    start = loop.time()
    tasks = []
    for i in range(count):
        delay = start + i / rate - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.ensure_future(_transaction(port, stuffed[i % len(stuffed)])))
    offered_for = loop.time() - start
    results = await asyncio.gather(*tasks, return_exceptions=True)
    latencies = sorted(r for r in results if isinstance(r, float))
    failures = len(results) - len(latencies)

    def pct(p):
        return latencies[min(len(latencies) - 1, int(p / 100 * len(latencies)))] * 1000

    return {
        "messages": count,
        "offered_rate": round(count / offered_for, 1),
        "failures": failures,
        "p50_ms": round(pct(50), 2) if latencies else None,
        "p99_ms": round(pct(99), 2) if latencies else None,
    }


def run_fixed_rate(port, message, rate, seconds):
    try:
        import uvloop

        return uvloop.run(fixed_rate(port, message, rate, seconds))
    except ImportError:
        return asyncio.run(fixed_rate(port, message, rate, seconds))


# -- phases ------------------------------------------------------------------------------------


def throughput(workdir: Path, sizes, counts, sessions: int, metrics: bool = False) -> dict:
    results = {}
    sent = 0
    sink = Sink()
    filt = FilterProcess(workdir, sink.port, "throughput", metrics)
    try:
        for label in sizes:
            message = make_message(SIZES[label])
            msgfile = workdir / f"msg-{label}.txt"
            msgfile.write_bytes(message.replace(b"\r\n", b"\n"))
            count = counts[label]
            smtp_source(sink.port, msgfile, sessions, max(sessions, count // 10))  # warm-up
            smtp_source(filt.port, msgfile, sessions, max(sessions, count // 10))
            sent += max(sessions, count // 10) + count
            ceiling_s = smtp_source(sink.port, msgfile, sessions, count)
            cpu0 = filt.cpu_seconds()
            filter_s = smtp_source(filt.port, msgfile, sessions, count)
            cpu = filt.cpu_seconds() - cpu0
            results[label] = {
                "message_bytes": len(message),
                "messages": count,
                "sessions": sessions,
                "ceiling_msgs_per_s": round(count / ceiling_s, 1),
                "filter_msgs_per_s": round(count / filter_s, 1),
                "ratio_to_ceiling": round(ceiling_s / filter_s, 3),
                "filter_cpu_s_per_1000": round(cpu / count * 1000, 3),
            }
        results["peak_rss_mb"] = round(filt.peak_rss_mb(), 1)
        # every message must have gone through the policy (one decision line each)
        results["accepted_logged"] = filt.accepted()
        if results["accepted_logged"] != sent:
            raise RuntimeError(f"filter logged {results['accepted_logged']} of {sent} messages")
    finally:
        filt.stop()
        sink.stop()
    return results


def latency(workdir: Path, rate: float, seconds: float, metrics: bool = False) -> dict:
    sink = Sink()
    filt = FilterProcess(workdir, sink.port, "latency", metrics)
    try:
        message = make_message(SIZES["4KB"])
        run_fixed_rate(filt.port, message, rate, 1.0)  # warm-up
        ceiling = run_fixed_rate(sink.port, message, rate, seconds)
        through = run_fixed_rate(filt.port, message, rate, seconds)
        return {"rate": rate, "ceiling": ceiling, "filter": through}
    finally:
        filt.stop()
        sink.stop()


def slow_sink(workdir: Path, sessions: int, count: int, metrics: bool = False) -> dict:
    sink = Sink(delay=1.0)
    filt = FilterProcess(workdir, sink.port, "slow", metrics)
    try:
        message = make_message(SIZES["4KB"])
        msgfile = workdir / "msg-slow.txt"
        msgfile.write_bytes(message.replace(b"\r\n", b"\n"))
        ceiling_s = smtp_source(sink.port, msgfile, sessions, count)
        filter_s = smtp_source(filt.port, msgfile, sessions, count)
        return {
            "sessions": sessions,
            "messages": count,
            "ceiling_msgs_per_s": round(count / ceiling_s, 1),
            "filter_msgs_per_s": round(count / filter_s, 1),
            "peak_rss_mb": round(filt.peak_rss_mb(), 1),
        }
    finally:
        filt.stop()
        sink.stop()


class Scraper:
    """Scrapes a metrics endpoint at once and then every `interval` seconds in a thread, like
    Prometheus (which scrapes every 15 s: the default here is far more often, pessimistic)."""

    def __init__(self, filt: FilterProcess, interval: float):
        self.filt = filt
        self.interval = interval
        self.scrapes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while True:
            self.filt.scrape()
            self.scrapes += 1
            if self._stop.wait(self.interval):
                return

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(15)


def metric_update_cost_us(repeat: int = 20000) -> float:
    """In-process microseconds per message of the metric updates `FilterHandler.on_message`
    makes for an accepted message (decision histogram, bytes, outcome, reinject histogram)."""
    from chatmaild.metrics.filtermail import FiltermailMetrics

    metrics = FiltermailMetrics("outgoing")
    line = "Outgoing: Filtering encrypted mail."
    start = time.perf_counter()
    for _ in range(repeat):
        metrics.decision_seconds.observe(0.0003)
        metrics.received_bytes.inc(3659)
        metrics.count_decision(None, line)
        metrics.reinject_seconds.observe(0.002)
    return (time.perf_counter() - start) / repeat * 1e6


def metrics_on_off(
    workdir: Path, count: int, sessions: int, rounds: int, scrape_interval: float
) -> dict:
    """4 KB throughput with the metrics endpoint off and on (scraped), alternating."""
    message = make_message(SIZES["4KB"])
    msgfile = workdir / "msg-metrics.txt"
    msgfile.write_bytes(message.replace(b"\r\n", b"\n"))
    sink = Sink()
    filters = {
        "off": FilterProcess(workdir, sink.port, "metrics-off", metrics=False),
        "on": FilterProcess(workdir, sink.port, "metrics-on", metrics=True),
    }
    totals = {name: {"seconds": 0.0, "cpu": 0.0, "messages": 0} for name in filters}
    sent = {name: 0 for name in filters}
    scrapes = 0
    try:
        for name, filt in filters.items():  # warm-up
            warm = max(sessions, count // 10)
            smtp_source(filt.port, msgfile, sessions, warm)
            sent[name] += warm
        for _ in range(rounds):
            for name, filt in filters.items():
                cpu0 = filt.cpu_seconds()
                if name == "on":
                    with Scraper(filt, scrape_interval) as scraper:
                        seconds = smtp_source(filt.port, msgfile, sessions, count)
                    scrapes += scraper.scrapes
                else:
                    seconds = smtp_source(filt.port, msgfile, sessions, count)
                totals[name]["cpu"] += filt.cpu_seconds() - cpu0
                totals[name]["seconds"] += seconds
                totals[name]["messages"] += count
                sent[name] += count
        counted = filters["on"].encrypted_count()
        if counted != sent["on"]:
            raise RuntimeError(f"metrics counted {counted} of {sent['on']} messages")
        results = {"message_bytes": len(message), "sessions": sessions, "rounds": rounds}
        for name, t in totals.items():
            results[name] = {
                "messages": t["messages"],
                "filter_msgs_per_s": round(t["messages"] / t["seconds"], 1),
                "filter_cpu_s_per_1000": round(t["cpu"] / t["messages"] * 1000, 3),
            }
        results["on"]["scrapes"] = scrapes
        results["on"]["scrape_interval_s"] = scrape_interval
        results["on"]["counted_messages"] = int(counted)
        results["update_cost_us_per_message"] = round(metric_update_cost_us(), 2)
        return results
    finally:
        for filt in filters.values():
            filt.stop()
        sink.stop()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--quick", action="store_true", help="a smaller run (~30 s)")
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--rate-seconds", type=float, default=10.0)
    parser.add_argument("--slow-sessions", type=int, default=100)
    parser.add_argument(
        "--metrics", action="store_true", help="metrics endpoint on in phases 1-3 as well"
    )
    parser.add_argument("--metrics-rounds", type=int, default=2)
    parser.add_argument("--scrape-interval", type=float, default=0.2)
    args = parser.parse_args(argv)
    for tool in (SMTP_SINK, SMTP_SOURCE):
        if not Path(tool).exists():
            sys.exit(f"needs {tool} (Debian package postfix)")

    scale = 0.25 if args.quick else 1.0
    counts = {"4KB": int(4000 * scale), "50KB": int(1500 * scale), "1MB": int(120 * scale)}
    with tempfile.TemporaryDirectory(prefix="bench-filtermail-") as tmp:
        workdir = Path(tmp)
        os.chmod(workdir, 0o755)
        results = {
            "metrics_endpoint": args.metrics,
            "throughput": throughput(workdir, list(SIZES), counts, args.sessions, args.metrics),
            "latency": latency(workdir, args.rate, args.rate_seconds * scale, args.metrics),
            "slow_sink": slow_sink(
                workdir, args.slow_sessions, int(args.slow_sessions * 8 * scale), args.metrics
            ),
            "metrics_on_off": metrics_on_off(
                workdir, counts["4KB"], args.sessions, args.metrics_rounds, args.scrape_interval
            ),
        }
    if args.json:
        print(json.dumps(results, indent=2))
        return
    tp = results["throughput"]
    print(f"throughput, {args.sessions} sessions, one connection per message:")
    for label in SIZES:
        r = tp[label]
        print(
            f"  {label:>5} ({r['message_bytes']} B, {r['messages']} msgs): "
            f"filter {r['filter_msgs_per_s']} msg/s, ceiling {r['ceiling_msgs_per_s']} msg/s, "
            f"ratio {r['ratio_to_ceiling']:.1%}, "
            f"filter CPU {r['filter_cpu_s_per_1000']} s/1000 msgs"
        )
    print(f"  peak RSS {tp['peak_rss_mb']} MB")
    lat = results["latency"]
    for name in ("ceiling", "filter"):
        r = lat[name]
        print(
            f"latency at {r['offered_rate']} msg/s offered ({name}): p50 {r['p50_ms']} ms, "
            f"p99 {r['p99_ms']} ms, failures {r['failures']}"
        )
    slow = results["slow_sink"]
    print(
        f"slow sink (1 s per message), {slow['sessions']} sessions: filter "
        f"{slow['filter_msgs_per_s']} msg/s (ceiling {slow['ceiling_msgs_per_s']} msg/s), "
        f"peak RSS {slow['peak_rss_mb']} MB"
    )
    mo = results["metrics_on_off"]
    print(f"metrics on/off, 4 KB, {mo['sessions']} sessions, {mo['rounds']} rounds each:")
    for name in ("off", "on"):
        r = mo[name]
        extra = (
            f", {r['scrapes']} scrapes every {r['scrape_interval_s']} s, "
            f"counted {r['counted_messages']}"
            if name == "on"
            else ""
        )
        print(
            f"  metrics {name:>3}: {r['filter_msgs_per_s']} msg/s, "
            f"filter CPU {r['filter_cpu_s_per_1000']} s/1000 msgs{extra}"
        )
    print(f"  metric updates in-process: {mo['update_cost_us_per_message']} us per message")


if __name__ == "__main__":
    main()
