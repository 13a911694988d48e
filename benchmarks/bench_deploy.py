"""Deployment figures (issue 17): deploy/ansible/site.yml against a fresh booted Debian 12
container (tests/e2e_deploy/harness.py, pebble as the ACME server).

Prints: the time to build or reuse the cached base and package layer, the container's boot,
the first run (bare container to relay, certificate included), a run that changes nothing,
`--tags verify`, the resident memory of the whole relay at idle (RSS summed per systemd
unit, and PSS of every process in the container) and the `systemd-analyze security`
exposure of every unit of systemd/ and every monitoring service.
As root: `python benchmarks/bench_deploy.py [--json]`.
"""

import argparse
import json
import re
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from e2e_deploy.harness import Deployment  # noqa: E402

MONITORING = (
    "prometheus",
    "prometheus-node-exporter",
    "prometheus-nginx-exporter",
    "prometheus-postfix-exporter",
)
EXPOSURE = re.compile(r"Overall exposure level for (\S+): (\d+\.\d+)")


def rss_by_unit(d):
    out = d.container.run(["ps", "-eo", "rss=,unit="]).stdout
    per = defaultdict(int)
    for line in out.splitlines():
        parts = line.split(None, 1)
        if len(parts) == 2:
            per[parts[1].strip()] += int(parts[0])
    return dict(sorted(per.items(), key=lambda kv: -kv[1]))


def pss_total_kib(d):
    """Proportional set size of every process (shared pages counted once overall)."""
    script = "for p in /proc/[0-9]*; do awk '/^Pss:/ {print $2}' $p/smaps_rollup 2>/dev/null; done"
    return sum(int(x) for x in d.container.sh(script).stdout.split())


def security(d):
    units = sorted(p.name for p in (ROOT / "systemd").glob("*.service"))
    units += [f"{m}.service" for m in MONITORING] + ["coturn.service"]
    scores = {}
    for unit in units:
        out = d.container.run(["systemd-analyze", "security", "--no-pager", unit], check=False)
        m = EXPOSURE.search(out.stdout)
        scores[unit] = float(m.group(2)) if m else None
    return scores


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", action="store_true")
    p.add_argument("--idle", type=float, default=30.0, help="seconds to wait before RSS")
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-deploy-"))
    d = Deployment(work, log=lambda m: print(f"[deploy] {m}", file=sys.stderr))
    res = {}
    try:
        t0 = time.monotonic()
        d.up()
        res["layers_and_boot_s"] = round(time.monotonic() - t0, 1)
        first = d.play()
        assert first.rc == 0, first.output[-3000:]
        verify = d.play("--tags", "verify")
        assert verify.rc == 0, verify.output[-3000:]
        res["bare_to_verified_s"] = round(first.seconds + verify.seconds, 1)
        res["first_run_s"] = round(first.seconds, 1)
        again = d.play()
        res["no_change_run_s"] = round(again.seconds, 1)
        res["no_change_run_changed"] = again.changed
        res["verify_s"] = round(verify.seconds, 1)
        time.sleep(args.idle)
        per = rss_by_unit(d)
        res["rss_total_mib"] = round(
            sum(per.values()) / 1024, 1
        )  # shared pages counted per process
        res["pss_total_mib"] = round(pss_total_kib(d) / 1024, 1)
        res["rss_by_unit_mib"] = {u: round(k / 1024, 1) for u, k in per.items()}
        res["security_exposure"] = security(d)
    finally:
        d.down()
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        print(json.dumps(res, indent=1))
        return
    for key, value in res.items():
        if isinstance(value, dict):
            print(f"{key}:")
            for k, v in value.items():
                print(f"  {k:40} {v}")
        else:
            print(f"{key:28} {value}")


if __name__ == "__main__":
    main()
