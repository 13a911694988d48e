"""Cost of the metric updates on the filtermail hot path, with and without metrics.

Times the per-message update sequence of `FilterHandler.on_message` (decision histogram,
bytes counter, outcome counter, reinjection histogram) alone, then the policy decision
`check_outgoing` on a ~4 KB encrypted mail with and without those updates, and reports the
overhead in ns and percent. Also times logmetrics' per-datagram path and one scrape render.

    python benchmarks/bench_metrics.py [--seconds 1.0] [--json]
"""

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from benchutil import time_calls  # noqa: E402
from filtermail_samples import SENDER, armor, encrypt, encrypted_mail  # noqa: E402

from chatmaild.filtermail.policy import Envelope, check_outgoing  # noqa: E402
from chatmaild.metrics.exporter import render  # noqa: E402
from chatmaild.metrics.filtermail import FiltermailMetrics  # noqa: E402
from chatmaild.metrics.logmetrics import LogMetrics  # noqa: E402


class NoPassthrough:
    passthrough_senders = ()
    passthrough_recipients = ()
    admin_contact = "postmaster@chat.example"


def measure(func, seconds: float) -> float:
    """Seconds per call of func, run repeatedly for about `seconds`."""
    calls, elapsed = time_calls(func, seconds)
    return elapsed / calls


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.0, help="time per measurement")
    parser.add_argument("--json", action="store_true", help="print JSON only")
    args = parser.parse_args(argv)

    metrics = FiltermailMetrics("outgoing")
    message = encrypted_mail(armor(encrypt(("x25519",), 2000)))
    env = Envelope(SENDER, ["bob@other.example"])
    config = NoPassthrough()
    perf = time.perf_counter

    def updates_only():
        t0 = perf()
        t1 = perf()
        metrics.decision_seconds.observe(t1 - t0)
        metrics.received_bytes.inc(len(message))
        metrics.count_decision(None, "Outgoing: Filtering encrypted mail.")
        metrics.reinject_seconds.observe(perf() - t1)

    def decide_without():
        check_outgoing(env, message, config)

    def decide_with():
        t0 = perf()
        verdict, line = check_outgoing(env, message, config)
        t1 = perf()
        metrics.decision_seconds.observe(t1 - t0)
        metrics.received_bytes.inc(len(message))
        metrics.count_decision(None if verdict is None else verdict.code, line)
        metrics.reinject_seconds.observe(perf() - t1)

    logm = LogMetrics()
    datagram = (
        b"<22>Nov 30 06:41:01 eijo postfix/smtp[20510]: 3F1A22C0123: to=<bob@example.org>, "
        b"relay=mx.example.org[198.51.100.7]:25, delay=0.52, dsn=2.0.0, status=sent (250 Ok)"
    )

    results = {}
    results["updates_ns"] = measure(updates_only, args.seconds) * 1e9
    # interleave to even out machine noise
    without, with_ = [], []
    for _ in range(3):
        without.append(measure(decide_without, args.seconds / 3))
        with_.append(measure(decide_with, args.seconds / 3))
    results["decision_without_us"] = min(without) * 1e6
    results["decision_with_us"] = min(with_) * 1e6
    results["overhead_percent"] = (
        (results["decision_with_us"] - results["decision_without_us"])
        / results["decision_without_us"]
        * 100
    )
    results["message_bytes"] = len(message)
    results["logmetrics_datagram_us"] = measure(lambda: logm.feed(datagram), args.seconds) * 1e6
    results["scrape_render_filtermail_us"] = (
        measure(lambda: render(metrics.registry, "application/openmetrics-text"), args.seconds)
        * 1e6
    )
    results["scrape_render_logmetrics_us"] = (
        measure(lambda: render(logm.registry, "text/plain"), args.seconds) * 1e6
    )
    if args.json:
        print(json.dumps(results))
        return
    print(f"metric updates per message:      {results['updates_ns']:8.0f} ns")
    print(
        f"check_outgoing ~{len(message) // 1000} KB without: "
        f"{results['decision_without_us']:8.1f} us, with updates: "
        f"{results['decision_with_us']:8.1f} us ({results['overhead_percent']:+.1f}%)"
    )
    print(f"logmetrics feed per datagram:    {results['logmetrics_datagram_us']:8.1f} us")
    print(f"render filtermail registry:      {results['scrape_render_filtermail_us']:8.1f} us")
    print(f"render logmetrics registry:      {results['scrape_render_logmetrics_us']:8.1f} us")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
