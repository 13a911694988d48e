#!/usr/bin/env python3
"""Load benchmark of filtermail incoming with and without DKIM verification (issue 12).

4 KB OpenPGP-encrypted messages from --domains sender domains, each DKIM-signed (dkimpy,
relaxed/simple, RSA 2048, selector `opendkim`, like the relays' OpenDKIM) with its own key.
The keys are served by a private Debian `unbound` on loopback with a TTL of --ttl seconds.
Two real daemons (`python -m chatmaild.filtermail INI incoming`), one with
`filtermail_dkim_check = false`, one with it on and `filtermail_dkim_nameserver` pointing at
unbound, re-inject into Postfix's `smtp-sink`; load comes from Postfix's `smtp-source` (one
process per domain, one connection per message).

Phases:
0. all along: the DNS queries unbound receives, against the bound "one query per key per
   TTL": keys x (elapsed // TTL + 1);
1. latency at a fixed offered rate (--rate msg/s, messages of all domains in turn), three
   alternating rounds per filter: the median p50 and p99;
2. throughput, check off and on alternating, --rounds rounds each: msg/s, filter CPU-seconds
   per 1000 messages (/proc/<pid>/stat);
3. in-process cost of the verification alone (screen + verify with the keys at hand), us;
   and of screening the issue-19 attack: one ~210 KB message with 2,000 aligned signatures
   whose body hash is right and whose b= is garbage (the key names it would have fetched).

    python benchmarks/bench_filtermail_dkim.py [--quick] [--json]

Target (issue 12): with verification at least 60% of the rate without it, and no more than
one DNS query per key per TTL.
"""

import argparse
import base64
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from bench_filtermail import (  # noqa: E402
    SMTP_SINK,
    SMTP_SOURCE,
    FilterProcess,
    Sink,
    run_fixed_rate,
)
from benchutil import time_calls  # noqa: E402
from dkim_samples import SELECTOR, rsa_key, sign  # noqa: E402
from filtermail_samples import armor, encrypt, encrypted_mail  # noqa: E402
from unbound_instance import UNBOUND, Unbound, txt  # noqa: E402

RECIPIENT = "bob@chat.example"


def domains(count: int) -> list[str]:
    return [f"relay{i}.example" for i in range(count)]


def unsigned_message(domain: str, target: int = 4 * 1024) -> bytes:
    """An encrypted RFC 3156 mail from alice@domain, about `target` bytes once signed."""
    payload = max(64, int(target * 0.72) - 1050)
    return encrypted_mail(armor(encrypt(("x25519",), payload)), sender=f"alice@{domain}")


def signed_message(domain: str) -> bytes:
    return sign(unsigned_message(domain), domain, rsa_key(domain))


def zones(names: list[str], ttl: int) -> dict:
    return {d: [(f"{SELECTOR}._domainkey", ttl, "TXT", txt(rsa_key(d).record()))] for d in names}


def send_all(port: int, files: dict[str, Path], sessions: int, count: int) -> float:
    """`count` messages over `sessions` sessions, shared out over one smtp-source per domain;
    the seconds until the last one finished."""
    per = max(1, count // len(files))
    sess = max(1, sessions // len(files))
    start = time.perf_counter()
    procs = [
        subprocess.Popen(
            [SMTP_SOURCE, "-s", str(sess), "-m", str(per), "-f", f"alice@{domain}"]
            + ["-t", RECIPIENT, "-F", str(path), f"127.0.0.1:{port}"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for domain, path in files.items()
    ]
    errors = [p.communicate(timeout=600)[1] for p in procs]
    elapsed = time.perf_counter() - start
    if any(p.returncode for p in procs):
        raise RuntimeError(f"smtp-source failed: {' '.join(errors)[-500:]}")
    return elapsed


def refusals(filt: FilterProcess) -> int:
    log = filt.log_path.read_text()
    return log.count("DKIM failed") + log.count("DKIM temporary failure")


def throughput(files, filters, sessions, count, rounds) -> dict:
    totals = {name: {"seconds": 0.0, "cpu": 0.0, "messages": 0} for name in filters}
    per_message = len(files) * max(1, count // len(files))
    for filt in filters.values():  # warm-up (and the first key lookups)
        send_all(filt.port, files, sessions, max(sessions, count // 10))
    for _ in range(rounds):
        for name, filt in filters.items():
            cpu0 = filt.cpu_seconds()
            seconds = send_all(filt.port, files, sessions, count)
            totals[name]["cpu"] += filt.cpu_seconds() - cpu0
            totals[name]["seconds"] += seconds
            totals[name]["messages"] += per_message
    results = {"sessions": sessions, "rounds": rounds}
    for name, t in totals.items():
        results[name] = {
            "messages": t["messages"],
            "filter_msgs_per_s": round(t["messages"] / t["seconds"], 1),
            "filter_cpu_s_per_1000": round(t["cpu"] / t["messages"] * 1000, 3),
        }
    results["rate_ratio_on_off"] = round(
        results["on"]["filter_msgs_per_s"] / results["off"]["filter_msgs_per_s"], 3
    )
    for name, filt in filters.items():
        results[name]["refused"] = refusals(filt)
    return results


def dns_queries(dns, started: float, queries_before: int, ttl: int, keys: int) -> dict:
    """The queries unbound saw since `started`, and the bound "one per key per TTL"."""
    elapsed = time.monotonic() - started
    return {
        "keys": keys,
        "ttl_s": ttl,
        "seconds": round(elapsed, 1),
        "queries": dns.queries() - queries_before,
        "bound": keys * (int(elapsed // ttl) + 1),
    }


def latency(messages, filters, rate, seconds, rounds) -> dict:
    """Alternating rounds per filter (one slow moment of a shared machine hits one round, not
    one filter); the median of the rounds' p50 and p99."""
    results = {"rate": rate, "rounds": rounds}
    runs = {name: [] for name in filters}
    for filt in filters.values():
        run_fixed_rate(filt.port, messages, rate, 1.0)  # warm-up
    for _ in range(rounds):
        for name, filt in filters.items():
            runs[name].append(run_fixed_rate(filt.port, messages, rate, seconds))
    for name, rs in runs.items():
        results[name] = {
            "offered_rate": min(r["offered_rate"] for r in rs),
            "failures": sum(r["failures"] for r in rs),
            "p50_ms": statistics.median(r["p50_ms"] for r in rs),
            "p99_ms": statistics.median(r["p99_ms"] for r in rs),
            "p99_ms_per_round": [r["p99_ms"] for r in rs],
        }
    return results


def in_process_us(messages, seconds=2.0) -> dict:
    """Microseconds per message of screen + verify, the keys already fetched."""
    from chatmaild.filtermail.dkimcheck import FAIL, PASS, screen, verify

    keys = {}
    for message in messages:
        for name in screen(message).key_names:
            domain = name.split("._domainkey.", 1)[1]
            keys[name] = rsa_key(domain).found()
    index = 0

    def one():
        nonlocal index
        message = messages[index % len(messages)]
        index += 1
        assert verify(message, screen(message), keys).outcome == PASS

    calls, elapsed = time_calls(one, seconds)
    unsigned = unsigned_message("relay0.example")

    def refuse():
        assert screen(unsigned).result.outcome == FAIL

    rcalls, relapsed = time_calls(refuse, seconds / 2)
    return {
        "verify_us": round(elapsed / calls * 1e6, 1),
        "screen_only_us": round(relapsed / rcalls * 1e6, 1),
    }


def attack_message(count: int = 2000) -> bytes:
    """Mail from relay0.example with `count` aligned signatures: right bh=, garbage b=."""
    base = unsigned_message("relay0.example")
    body = base.partition(b"\r\n\r\n")[2]
    bh = base64.b64encode(hashlib.sha256(body).digest())  # c=relaxed/simple: the body as is
    fields = b"".join(
        b"DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/simple; d=relay0.example; s=x%d;"
        b" h=from:to; bh=%s; b=%s\r\n" % (i, bh, b"A" * 8)
        for i in range(count)
    )
    return fields + base


def attack_cost(seconds=1.0) -> dict:
    """Screening the 2,000-signature message: microseconds, and the key names it asks for."""
    from chatmaild.filtermail.dkimcheck import screen

    message = attack_message()
    names = len(screen(message).key_names)
    calls, elapsed = time_calls(lambda: screen(message), seconds)
    return {
        "attack_bytes": len(message),
        "attack_screen_us": round(elapsed / calls * 1e6, 1),
        "attack_key_names": names,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--quick", action="store_true", help="a smaller run")
    parser.add_argument("--domains", type=int, default=10)
    parser.add_argument("--ttl", type=int, default=5, help="TTL of the key records (s)")
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--count", type=int, default=4000, help="messages per round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--rate-seconds", type=float, default=10.0)
    args = parser.parse_args(argv)
    for tool in (SMTP_SINK, SMTP_SOURCE, UNBOUND):
        if not Path(tool).exists():
            sys.exit(f"needs {tool} (Debian packages postfix, unbound)")
    scale = 0.25 if args.quick else 1.0
    names = domains(args.domains)
    messages = [signed_message(d) for d in names]

    with tempfile.TemporaryDirectory(prefix="bench-filtermail-dkim-") as tmp:
        workdir = Path(tmp)
        os.chmod(workdir, 0o755)
        files = {}
        for domain, message in zip(names, messages, strict=True):
            files[domain] = workdir / f"msg-{domain}.txt"
            files[domain].write_bytes(message.replace(b"\r\n", b"\n"))
        with Unbound(workdir / "unbound", zones(names, args.ttl)) as dns:
            sink = Sink()
            nameserver = f"127.0.0.1:{dns.port}"
            filters = {
                "off": FilterProcess(
                    workdir,
                    sink.port,
                    "off",
                    mode="incoming",
                    extra={"filtermail_dkim_check": "false"},
                ),
                "on": FilterProcess(
                    workdir,
                    sink.port,
                    "on",
                    mode="incoming",
                    extra={"filtermail_dkim_nameserver": nameserver},
                ),
            }
            try:
                # latency first: after the throughput phase's tens of thousands of
                # connections, loopback ports in TIME_WAIT make some connects wait 1 s
                started, queries_before = time.monotonic(), dns.queries()
                lat = latency(messages, filters, args.rate, args.rate_seconds * scale / 3, 3)
                results = {
                    "message_bytes": len(messages[0]),
                    "latency": lat,
                    "throughput": throughput(
                        files, filters, args.sessions, int(args.count * scale), args.rounds
                    ),
                    "dns": dns_queries(dns, started, queries_before, args.ttl, len(names)),
                }
                for name, filt in filters.items():
                    results["throughput"][name]["peak_rss_mb"] = round(filt.peak_rss_mb(), 1)
            finally:
                for filt in filters.values():
                    filt.stop()
                sink.stop()
    results["in_process"] = in_process_us(messages)
    results["in_process"].update(attack_cost())

    if args.json:
        print(json.dumps(results, indent=2))
        return
    tp = results["throughput"]
    size = results["message_bytes"]
    print(
        f"incoming, {size} B signed encrypted mail from {args.domains} domains, "
        f"{tp['sessions']} sessions, {tp['rounds']} rounds each:"
    )
    for name in ("off", "on"):
        r = tp[name]
        print(
            f"  DKIM check {name:>3}: {r['filter_msgs_per_s']} msg/s, "
            f"filter CPU {r['filter_cpu_s_per_1000']} s/1000 msgs, refused {r['refused']}, "
            f"peak RSS {r['peak_rss_mb']} MB"
        )
    print(f"  rate with / without: {tp['rate_ratio_on_off']:.1%} (target >= 60%)")
    d = results["dns"]
    print(
        f"  DNS: {d['queries']} queries at unbound in {d['seconds']} s for {d['keys']} keys "
        f"with TTL {d['ttl_s']} s (at most {d['bound']} allowed)"
    )
    lat = results["latency"]
    for name in ("off", "on"):
        r = lat[name]
        print(
            f"latency at {r['offered_rate']} msg/s offered, DKIM check {name}: "
            f"p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms (rounds: {r['p99_ms_per_round']}), "
            f"failures {r['failures']}"
        )
    ip = results["in_process"]
    print(
        f"in-process: screen + verify {ip['verify_us']} us per message; "
        f"screening alone {ip['screen_only_us']} us"
    )
    print(
        f"attack, {ip['attack_bytes']} B with 2,000 aligned signatures: screening "
        f"{ip['attack_screen_us']} us, {ip['attack_key_names']} key names to fetch"
    )


if __name__ == "__main__":
    main()
