#!/usr/bin/env python3
"""Two-relay throughput: relay A's submission (465) -> A's filtermail, queue and transport
service -> MX lookup -> HTTPS POST /mxdeliv to B (port 25 when that fails) over verified TLS
-> B's filtermail incoming -> LMTP -> B's Maildir. (bench_transport.py compares the
protocols from A's queue on.)

Brings up a relay pair (chatmaild.relay.federation; root needed) with the per-sender rate
limit raised, sends --messages encrypted mails (~1 KB, the e2e builders) from --sessions
authenticated users on A, each over its own SMTP session, to as many users on B, and
watches B's Maildirs. Prints messages per second (accepted by A, delivered at B) and the
time from the start of each submission to the message's appearance in B's Maildir
(p50, p99). Before the burst, --single messages go one at a time, each after the previous
one arrived: their latency is the path's own, without the queueing of the burst.

    python benchmarks/bench_federation.py [--messages N] [--sessions N] [--single N] [--json]
"""

import json
import os
import shutil
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "e2e")]

from benchutil import p50_p99_ms, relay_bench_args, unlimited_relay_pair  # noqa: E402
from helpers import RelayClients, encrypted_message, read_stored  # noqa: E402

POLL_S = 0.005
MARKER = b"X-Test-Marker: "


class MaildirWatcher(threading.Thread):
    """Records when each file first appears in the new/ and cur/ dirs of some mailboxes."""

    def __init__(self, boxes):
        super().__init__(daemon=True)
        self.dirs = [box / sub for box in boxes for sub in ("new", "cur")]
        self.seen = {}  # path -> perf_counter when first listed
        self.stop = threading.Event()

    def run(self):
        while not self.stop.is_set():
            now = time.perf_counter()
            for d in self.dirs:
                try:
                    names = os.listdir(d)
                except FileNotFoundError:
                    continue
                for name in names:
                    self.seen.setdefault(d / name, now)
            time.sleep(POLL_S)

    def arrivals(self):
        """{marker: first-seen time} of every message seen (a file renamed from new/ to
        cur/ counts once, at its first sighting)."""
        out = {}
        for path, when in sorted(self.seen.items(), key=lambda kv: kv[1]):
            try:
                data = read_stored(path)
            except FileNotFoundError:
                continue
            start = data.find(MARKER)
            if start >= 0:
                marker = data[start + len(MARKER) :].split(b"\n", 1)[0].strip().decode()
                out.setdefault(marker, when)
        return out


def single_messages(a, sender, rcpt, box, count, timeout=60):
    """Latencies (s) of `count` mails sent one at a time, each after the previous arrived."""
    watcher = MaildirWatcher([box])
    watcher.start()
    starts = {}
    client = a.smtp(465)
    try:
        client.login(*sender)
        for _ in range(count):
            marker, msg = encrypted_message(sender[0], [rcpt])
            seen = len(watcher.seen)
            starts[marker] = time.perf_counter()
            client.sendmail(sender[0], [rcpt], msg)
            deadline = time.monotonic() + timeout
            while len(watcher.seen) == seen and time.monotonic() < deadline:
                time.sleep(POLL_S)
        client.quit()
    finally:
        watcher.stop.set()
        watcher.join()
    arrivals = watcher.arrivals()
    return sorted(arrivals[m] - t for m, t in starts.items() if m in arrivals)


def burst(a, senders, rcpt_boxes, messages, timeout):
    """Send `messages` over one session per sender at once; returns the measurements."""
    sessions = len(senders)
    watcher = MaildirWatcher(list(rcpt_boxes.values()))
    watcher.start()
    per_session = [messages // sessions + (i < messages % sessions) for i in range(sessions)]
    submitted, errors = {}, []  # marker -> submission start
    lock = threading.Lock()

    def session(i, rcpt):
        sender, password = senders[i]
        try:
            client = a.smtp(465)
            client.login(sender, password)
            for _ in range(per_session[i]):
                marker, msg = encrypted_message(sender, [rcpt])
                start = time.perf_counter()
                client.sendmail(sender, [rcpt], msg)
                with lock:
                    submitted[marker] = start
            client.quit()
        except Exception as e:  # counted, reported
            with lock:
                errors.append(repr(e))

    threads = [
        threading.Thread(target=session, args=(i, rcpt)) for i, rcpt in enumerate(rcpt_boxes)
    ]
    t_start = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    submit_s = time.perf_counter() - t_start
    deadline = time.monotonic() + timeout
    while len(watcher.seen) < len(submitted) and time.monotonic() < deadline:
        time.sleep(0.05)
    watcher.stop.set()
    watcher.join()
    arrivals = watcher.arrivals()
    latencies = sorted(arrivals[m] - start for m, start in submitted.items() if m in arrivals)
    last = max(arrivals.values(), default=t_start)
    p50, p99 = p50_p99_ms(latencies)
    return dict(
        accepted=len(submitted),
        delivered=len(latencies),
        errors=errors[:3],
        submit_msgs_per_s=len(submitted) / submit_s if submit_s else 0.0,
        delivered_msgs_per_s=len(latencies) / (last - t_start) if latencies else 0.0,
        all_delivered_s=last - t_start,
        latency_p50_ms=p50,
        latency_p99_ms=p99,
    )


def run(messages, sessions, single=20, timeout=300):
    state, pair = unlimited_relay_pair("chatmaild-bench-fed")
    result = {"messages": messages, "sessions": sessions, "single": single}
    t0 = time.perf_counter()
    try:
        pair.up()
        result["pair_up_s"] = time.perf_counter() - t0
        a, b = RelayClients(pair.a), RelayClients(pair.b)
        senders = [a.new_account() for _ in range(sessions)]
        rcpts = [b.new_account()[0] for _ in range(sessions + 1)]
        lone = rcpts.pop()
        lat = single_messages(a, senders[0], lone, b.user_dir(lone), single)
        p50, p99 = p50_p99_ms(lat)
        result.update(single_delivered=len(lat), single_p50_ms=p50, single_p99_ms=p99)
        boxes = {rcpt: b.user_dir(rcpt) for rcpt in rcpts}
        result.update(burst(a, senders, boxes, messages, timeout))
    finally:
        t = time.perf_counter()
        pair.down()
        result["pair_down_s"] = time.perf_counter() - t
        shutil.rmtree(state, ignore_errors=True)
    return result


def main():
    args = relay_bench_args(__doc__, single=20)
    r = run(args.messages, max(1, args.sessions), args.single)
    if args.json:
        print(json.dumps(r, indent=1))
        return
    print(f"pair up {r['pair_up_s']:.2f} s, down {r['pair_down_s']:.2f} s")
    if r.get("single_p50_ms") is not None:
        print(
            f"{r['single_delivered']}/{r['single']} single messages, submission -> B's Maildir"
            f" p50 {r['single_p50_ms']:.0f} ms, p99 {r['single_p99_ms']:.0f} ms"
        )
    if "accepted" in r:
        print(
            f"{r['accepted']}/{r['messages']} accepted by A over {r['sessions']} sessions:"
            f" {r['submit_msgs_per_s']:.1f} msg/s"
        )
        if r["latency_p50_ms"] is not None:
            print(
                f"{r['delivered']} in B's Maildirs after {r['all_delivered_s']:.2f} s:"
                f" {r['delivered_msgs_per_s']:.1f} msg/s; submission -> B's Maildir"
                f" p50 {r['latency_p50_ms']:.0f} ms, p99 {r['latency_p99_ms']:.0f} ms"
            )
        if r["errors"]:
            print("errors:", *r["errors"], sep="\n  ")


if __name__ == "__main__":
    main()
