#!/usr/bin/env python3
"""End-to-end benchmark of the whole relay: submission on 465 -> Postfix -> filtermail ->
reinjection -> LMTP -> Dovecot Maildir, plus relay start/stop and first-login times.

Brings up one relay in a private network namespace (root needed), with the per-sender rate
limit raised so it measures the pipeline, not the limiter. Sends --messages encrypted mails
(~4 KB) over --sessions concurrent authenticated SMTP sessions, measures submission rate
(accepted msgs/s), per-message submit latency (p50/p99) and the time until every message is
in the recipient's Maildir.

    python benchmarks/bench_relay.py [--messages N] [--sessions N] [--json]
"""

import json
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "e2e")]

from benchutil import p50_p99_ms, relay_bench_args  # noqa: E402
from helpers import RelayClients, encrypted_message  # noqa: E402

from chatmaild.relay.instance import Relay, default_ini_text  # noqa: E402


def _count(box):
    return sum(len(os.listdir(box / sub)) for sub in ("new", "cur") if (box / sub).is_dir())


def run(messages, sessions):
    state = Path(tempfile.mkdtemp(prefix="chatmaild-bench-relay-", dir="/tmp"))
    os.chmod(state, 0o755)
    ini = state / "chatmail.ini"
    ini.write_text(
        default_ini_text(state)
        + "max_user_send_per_minute = 1000000\nmax_user_send_burst_size = 1000000\n"
    )
    relay = Relay(state, config_path=ini, netns=f"chatmaild-bench-{os.getpid()}", log=lambda m: 0)
    result = {}
    t0 = time.perf_counter()
    try:
        relay.up()
        result["relay_up_s"] = time.perf_counter() - t0
        clients = RelayClients(relay)

        t = time.perf_counter()
        sender, spw = clients.new_account()
        result["first_login_s"] = time.perf_counter() - t
        rcpt, _ = clients.new_account()
        box = clients.user_dir(rcpt)

        per_session = [messages // sessions] * sessions
        for i in range(messages % sessions):
            per_session[i] += 1
        latencies, errors = [], []
        lock = threading.Lock()

        def session(count):
            try:
                client = clients.smtp(465)
                client.login(sender, spw)
                for _ in range(count):
                    _, msg = encrypted_message(sender, [rcpt])
                    start = time.perf_counter()
                    client.sendmail(sender, [rcpt], msg)
                    with lock:
                        latencies.append(time.perf_counter() - start)
                client.quit()
            except Exception as e:  # counted, reported
                with lock:
                    errors.append(repr(e))

        threads = [threading.Thread(target=session, args=(n,)) for n in per_session]
        t = time.perf_counter()
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        submit_s = time.perf_counter() - t
        deadline = time.monotonic() + 120
        while _count(box) < len(latencies) and time.monotonic() < deadline:
            time.sleep(0.02)
        delivered_s = time.perf_counter() - t
        lat = sorted(latencies)
        p50, p99 = p50_p99_ms(lat)
        result.update(
            messages=messages,
            sessions=sessions,
            accepted=len(lat),
            delivered=_count(box),
            errors=errors[:3],
            submit_msgs_per_s=len(lat) / submit_s if submit_s else 0.0,
            all_delivered_s=delivered_s,
            submit_p50_ms=p50,
            submit_p99_ms=p99,
        )
    finally:
        t = time.perf_counter()
        relay.down()
        result["relay_down_s"] = time.perf_counter() - t
        shutil.rmtree(state, ignore_errors=True)
    return result


def main():
    args = relay_bench_args(__doc__)
    r = run(args.messages, args.sessions)
    if args.json:
        print(json.dumps(r, indent=1))
        return
    print(f"relay up {r['relay_up_s']:.2f} s, down {r['relay_down_s']:.2f} s")
    print(f"first login (account creation) {r.get('first_login_s', 0) * 1000:.0f} ms")
    if "accepted" in r:
        print(
            f"{r['accepted']}/{r['messages']} accepted over {r['sessions']} sessions:"
            f" {r['submit_msgs_per_s']:.1f} msg/s, submit p50 {r['submit_p50_ms']:.1f} ms"
            f" p99 {r['submit_p99_ms']:.1f} ms"
        )
        print(f"{r['delivered']} in the Maildir after {r['all_delivered_s']:.2f} s")
        if r["errors"]:
            print("errors:", *r["errors"], sep="\n  ")


if __name__ == "__main__":
    main()
