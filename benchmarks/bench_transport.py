#!/usr/bin/env python3
"""Relay A's queue -> B's Maildir through A's transport service, over HTTPS (/mxdeliv) and over
SMTP (port 25), and through Postfix's own SMTP client as the old path, at two concurrencies.

Brings up a relay pair (root needed). For each mode and concurrency: A's Postfix holds its
outgoing transport (`defer_transports`), --messages encrypted ~4 KB mails (DKIM-signed by
A's OpenDKIM at the reinjection port) are put into A's queue, then the hold is lifted and
the queue flushed; the clock runs from the flush until every message is in B's Maildirs.
Prints messages per second, queue -> Maildir latency (p50, p99), CPU seconds per 1000
messages of each relay (all processes in its network namespace: Postfix, Dovecot, nginx,
OpenDKIM, our daemons) and, for the transport, how many TLS connections it opened.

Modes: `https` (B's /mxdeliv), `smtp` (B's /mxdeliv refused with nft: after the first
fallback A's transport remembers B as SMTP-only), `postfix` (default_transport = smtp:
Postfix's SMTP client with its connection cache, the path before the transport service).

    python benchmarks/bench_transport.py [--messages N] [--parallel 10,100]
        [--modes https,smtp,postfix] [--rounds N] [--json]
"""

import argparse
import base64
import json
import os
import shutil
import smtplib
import statistics
import subprocess
import sys
import time
import uuid
from email.utils import formatdate
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "e2e")]

from bench_federation import MaildirWatcher  # noqa: E402
from benchutil import p50_p99_ms, unlimited_relay_pair  # noqa: E402
from helpers import RelayClients  # noqa: E402

from chatmaild.metrics.scrape import samples  # noqa: E402
from chatmaild.relay.netns import entered  # noqa: E402

NO_LISTENER = 'oifname "lo" ip daddr 127.0.0.1 tcp dport 10082 reject with tcp reset'
CLK_TCK = os.sysconf("SC_CLK_TCK")
SIZE = 4096


def _packet(tag, body):
    n = len(body)
    if n < 192:
        head = bytes([0xC0 | tag, n])
    else:
        n -= 192
        head = bytes([0xC0 | tag, (n >> 8) + 192, n & 0xFF])
    return head + body


def encrypted_4k(mail_from, rcpt):
    """(marker, bytes) of a ~4 KB multipart/encrypted message that passes filtermail."""
    marker = uuid.uuid4().hex
    pkesk = _packet(1, b"\x03" + os.urandom(8) + b"\x12" + os.urandom(40))
    seipd = _packet(18, b"\x01" + os.urandom(SIZE * 3 // 4 - 350))
    b64 = base64.b64encode(pkesk + seipd).decode()
    armor = "\r\n".join(b64[i : i + 64] for i in range(0, len(b64), 64))
    boundary = "b-" + uuid.uuid4().hex
    text = (
        f"From: <{mail_from}>\r\nTo: <{rcpt}>\r\nSubject: [...]\r\nDate: {formatdate()}\r\n"
        f"Message-ID: <{marker}@relay.test>\r\nX-Test-Marker: {marker}\r\nMIME-Version: 1.0\r\n"
        f'Content-Type: multipart/encrypted; protocol="application/pgp-encrypted";'
        f' boundary="{boundary}"\r\n\r\n--{boundary}\r\nContent-Type: application/pgp-encrypted'
        f"\r\n\r\nVersion: 1\r\n\r\n--{boundary}\r\nContent-Type: application/octet-stream\r\n"
        f"\r\n-----BEGIN PGP MESSAGE-----\r\n\r\n{armor}\r\n-----END PGP MESSAGE-----\r\n\r\n"
        f"--{boundary}--\r\n"
    )
    return marker, text.encode()


def netns_cpu_seconds(netns):
    """utime+stime (+ reaped children's) of every process in the network namespace."""
    want = os.stat(f"/run/netns/{netns}").st_ino
    total = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            if os.stat(f"/proc/{pid}/ns/net").st_ino != want:
                continue
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += sum(int(x) for x in fields[11:15])  # utime stime cutime cstime
    return total / CLK_TCK


class Bench:
    def __init__(self, pair):
        self.pair = pair
        self.a, self.b = RelayClients(pair.a), RelayClients(pair.b)

    def postconf(self, relay, *settings):
        conf = str(relay.layout.postfix_config_dir)
        subprocess.run(["postconf", "-c", conf, "-e", *settings], check=True)
        subprocess.run(relay.postfix_argv("reload"), check=True, capture_output=True)

    def queue_count(self):
        spool = self.pair.a.layout.postfix_queue_dir
        return sum(
            1
            for sub in ("deferred", "active", "incoming")
            for f in (spool / sub).rglob("*")
            if f.is_file()
        )

    def nft(self, netns, rule):
        script = (
            "table inet bench {\n  chain out {\n    type filter hook output priority 0;"
            f" policy accept;\n    {rule}\n  }}\n}}\n"
        )
        subprocess.run(
            ["ip", "netns", "exec", netns, "nft", "-f", "-"], input=script.encode(), check=True
        )

    def nft_clear(self, netns):
        subprocess.run(
            ["ip", "netns", "exec", netns, "nft", "delete", "table", "inet", "bench"],
            check=False,
            capture_output=True,
        )

    def transport_figures(self):
        """(TLS connections opened, deliveries, seconds spent in them) of A's transport."""
        spec = self.pair.a.config.metrics_filtermail_transport
        with entered(self.pair.a.netns):
            scraped = samples(spec)
        return (
            scraped.get(("chatmail_transport_https_connections_opened", ()), 0.0),
            scraped.get(("chatmail_transport_delivery_seconds_count", ()), 0.0),
            scraped.get(("chatmail_transport_delivery_seconds_sum", ()), 0.0),
        )

    def fill_queue(self, messages, sender, rcpts):
        """Inject `messages` into A's reinjection port (signed there), held in the queue."""
        markers = []
        port = self.pair.a.config.postfix_reinject_port
        with entered(self.pair.a.netns):
            client = smtplib.SMTP("127.0.0.1", port, timeout=60)
        try:
            for i in range(messages):
                rcpt = rcpts[i % len(rcpts)]
                marker, msg = encrypted_4k(sender, rcpt)
                client.sendmail(sender, [rcpt], msg)
                markers.append(marker)
        finally:
            client.quit()
        deadline = time.monotonic() + 120
        while self.queue_count() < messages and time.monotonic() < deadline:
            time.sleep(0.1)
        return markers

    def run(self, mode, parallel, messages, timeout=600):
        a, b = self.pair.a, self.pair.b
        transport = "smtp" if mode == "postfix" else "lmtp-filtermail"
        default = (
            "smtp"
            if mode == "postfix"
            else f"lmtp-filtermail:inet:[127.0.0.1]:{a.config.filtermail_lmtp_port_transport}"
        )
        self.postconf(
            a,
            f"default_transport = {default}",
            f"defer_transports = {transport}",
            f"{transport}_destination_concurrency_limit = {parallel}",
            f"{transport}_destination_recipient_limit = 1",
        )
        a.restart_daemon("filtermail-transport")  # no memory, no pooled connections
        self.nft_clear(b.netns)
        if mode == "smtp":
            self.nft(b.netns, NO_LISTENER)
        sender = self.a.new_account()[0]
        rcpts = [self.b.new_account()[0] for _ in range(10)]
        watcher = MaildirWatcher([self.b.user_dir(r) for r in rcpts])
        markers = self.fill_queue(messages, sender, rcpts)
        figures0 = self.transport_figures()
        cpu0 = netns_cpu_seconds(a.netns), netns_cpu_seconds(b.netns)
        watcher.start()
        self.postconf(a, "defer_transports =")
        t0 = time.perf_counter()
        subprocess.run(
            a.in_netns(["postqueue", "-c", str(a.layout.postfix_config_dir), "-f"]), check=True
        )
        deadline = time.monotonic() + timeout
        while len(watcher.seen) < messages and time.monotonic() < deadline:
            time.sleep(0.02)
        watcher.stop.set()
        watcher.join()
        t1 = time.perf_counter()
        time.sleep(0.5)  # B's last deliveries finish logging, so their CPU is counted
        cpu1 = netns_cpu_seconds(a.netns), netns_cpu_seconds(b.netns)
        figures1 = self.transport_figures()
        handshakes, count, seconds = (x1 - x0 for x0, x1 in zip(figures0, figures1, strict=True))
        self.nft_clear(b.netns)
        arrivals = watcher.arrivals()
        lat = sorted(arrivals[m] - t0 for m in markers if m in arrivals)
        last = max(arrivals.values(), default=t1)
        p50, p99 = p50_p99_ms(lat)
        delivered = len(lat)
        per_k = 1000 / delivered if delivered else 0
        return {
            "mode": mode,
            "parallel": parallel,
            "messages": messages,
            "delivered": delivered,
            "msgs_per_s": delivered / (last - t0) if delivered else 0.0,
            "latency_p50_ms": p50,
            "latency_p99_ms": p99,
            "cpu_s_per_1000_a": (cpu1[0] - cpu0[0]) * per_k,
            "cpu_s_per_1000_b": (cpu1[1] - cpu0[1]) * per_k,
            "tls_connections": None if mode == "postfix" else handshakes,
            # mean time the transport spent on one delivery (DNS, HTTPS or SMTP, answer)
            "transport_ms_per_delivery": (
                None if mode == "postfix" or not count else seconds / count * 1000
            ),
        }


def summarize(results):
    """The median of every measured figure per (mode, parallel)."""
    groups = {}
    for r in results:
        groups.setdefault((r["mode"], r["parallel"]), []).append(r)
    out = []
    for (mode, parallel), runs in groups.items():
        row = {"mode": mode, "parallel": parallel, "messages": runs[0]["messages"]}
        for key in runs[0]:
            if key in row:
                continue
            values = [r[key] for r in runs if r[key] is not None]
            row[key] = statistics.median(values) if values else None
        out.append(row)
    return out


def describe(r):
    tls = ""
    if r["tls_connections"] is not None:
        tls = f", {r['tls_connections']:.0f} TLS connections"
    if r.get("transport_ms_per_delivery") is not None:
        tls += f", {r['transport_ms_per_delivery']:.0f} ms per delivery in the transport"
    return (
        f"{r['mode']:7} x{r['parallel']:<3}: {r['delivered']}/{r['messages']} in B's Maildirs,"
        f" {r['msgs_per_s']:.1f} msg/s, queue -> Maildir p50 {r['latency_p50_ms'] or 0:.0f} ms"
        f" p99 {r['latency_p99_ms'] or 0:.0f} ms; CPU per 1000: A {r['cpu_s_per_1000_a']:.1f} s,"
        f" B {r['cpu_s_per_1000_b']:.1f} s{tls}"
    )


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--messages", type=int, default=300)
    p.add_argument("--parallel", default="10,100")
    p.add_argument("--modes", default="https,smtp,postfix")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root (Postfix, Dovecot, network namespaces)")
    state, pair = unlimited_relay_pair("chatmaild-bench-tr")
    results = []
    modes = args.modes.split(",")
    parallels = [int(x) for x in args.parallel.split(",")]
    try:
        pair.up()
        bench = Bench(pair)
        # the modes take turns, so a change in the machine's load hits them alike
        for _ in range(args.rounds):
            for parallel in parallels:
                for mode in modes:
                    r = bench.run(mode, parallel, args.messages)
                    results.append(r)
                    if not args.json:
                        print(describe(r), flush=True)
    finally:
        pair.down()
        shutil.rmtree(state, ignore_errors=True)
    summary = summarize(results)
    if args.json:
        print(json.dumps({"runs": results, "median": summary}, indent=1))
        return
    print(f"median of {args.rounds} rounds:")
    for r in summary:
        print("  " + describe(r))


if __name__ == "__main__":
    main()
