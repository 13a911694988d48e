"""Cost of the filtermail hot path: is_encrypted and the full policy decision per message.

Builds real encrypted mails (PGPy, via tests/filtermail_samples.py) of about 4 KB, 50 KB and
1 MB, then times `is_encrypted` and `check_outgoing` on each for a bounded time.

    python benchmarks/bench_filtermail_checks.py [--seconds 1.0] [--json]
"""

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from benchutil import time_calls  # noqa: E402
from filtermail_samples import SENDER, armor, encrypt, encrypted_mail  # noqa: E402

from chatmaild.filtermail.checks import is_encrypted  # noqa: E402
from chatmaild.filtermail.policy import Envelope, check_outgoing  # noqa: E402

TARGET_SIZES = {"4KB": 4_000, "50KB": 50_000, "1MB": 1_000_000}


class NoPassthrough:
    passthrough_senders = ()
    passthrough_recipients = ()
    admin_contact = "postmaster@chat.example"


def build_message(target: int) -> bytes:
    # Armor and MIME add about 37% plus ~1 KB of headers and session keys.
    size = max(int((target - 1100) / 1.37), 10)
    return encrypted_mail(armor(encrypt(("x25519", "rsa"), size)))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.0, help="time per measurement")
    parser.add_argument("--json", action="store_true", help="print JSON only")
    args = parser.parse_args(argv)

    env = Envelope(SENDER, ["bob@other.example"])
    config = NoPassthrough()
    results = []
    for label, target in TARGET_SIZES.items():
        message = build_message(target)
        assert is_encrypted(message, allow_armor_header=False)
        assert check_outgoing(env, message, config)[0] is None
        for name, func in [
            ("is_encrypted", lambda m=message: is_encrypted(m, allow_armor_header=False)),
            ("check_outgoing", lambda m=message: check_outgoing(env, m, config)),
        ]:
            calls, elapsed = time_calls(func, args.seconds)
            results.append(
                {
                    "function": name,
                    "message": label,
                    "bytes": len(message),
                    "calls": calls,
                    "messages_per_s": round(calls / elapsed, 1),
                    "us_per_message": round(elapsed / calls * 1e6, 2),
                    "mb_per_s": round(calls * len(message) / elapsed / 1e6, 1),
                }
            )
    if args.json:
        print(json.dumps({"benchmark": "filtermail_checks", "results": results}, indent=2))
        return
    print(f"{'function':<16}{'message':>8}{'bytes':>10}{'msgs/s':>12}{'us/msg':>10}{'MB/s':>8}")
    for r in results:
        print(
            f"{r['function']:<16}{r['message']:>8}{r['bytes']:>10}"
            f"{r['messages_per_s']:>12}{r['us_per_message']:>10}{r['mb_per_s']:>8}"
        )


if __name__ == "__main__":
    main()
