"""Benchmark of chatmail-expire and chatmail-fsreport over a generated mailbox tree.

    python benchmarks/bench_housekeeping.py [--mailboxes 100000] [--files 2000000] [--json]

Generates (under a temp dir in /tmp, removed afterwards) MAILBOXES mailboxes holding FILES
empty message files whose Dovecot names carry S= sizes, with mtimes and last logins spread
over the past 120 days, then runs as subprocesses, in this order:
chatmail-expire (dry run), chatmail-fsreport --textfile, chatmail-expire --remove.
For each: wall time, CPU (user+sys of the child, from os.wait4) and peak RSS. Unless
--no-compare, the same is done first at a tenth of the size, to show that peak RSS does not
grow with the number of mailboxes (the commands stream, one mailbox at a time).
Full size needs ~2.8 million inodes and a few minutes; check `df -i /tmp` first.
"""

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DAY = 86400
DOMAIN = "bench.example"


def generate(root, mailboxes, files, now, seed=1):
    """Fast tree generation: empty files, sizes in the names, mtimes via futimens."""
    rng = random.Random(seed)
    per_box, extra = divmod(files, mailboxes)
    flags_o = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
    counter = 0
    for i in range(mailboxes):
        box = f"{root}/u{i:07d}@{DOMAIN}"
        os.mkdir(box)
        for sub in ("cur", "new", "tmp"):
            os.mkdir(f"{box}/{sub}")
        login = now - rng.randrange(0, 120) * DAY  # ~25% beyond the 90-day limit
        for name, mtime in (("password", login), ("maildirsize", now)):
            fd = os.open(f"{box}/{name}", flags_o, 0o600)
            os.utime(fd, (mtime, mtime))
            os.close(fd)
        for _ in range(per_box + (1 if i < extra else 0)):
            counter += 1
            mtime = now - rng.random() * 30 * DAY
            size = int(rng.lognormvariate(9, 1.6))  # median ~8 KB, a tail above 200 KiB
            if rng.random() < 0.15:
                path = f"{box}/new/{int(mtime)}.M{counter}P1.bench,S={size},W={size}"
            else:
                flags = "S" if rng.random() < 0.7 else ""
                path = f"{box}/cur/{int(mtime)}.M{counter}P1.bench,S={size},W={size}:2,{flags}"
            fd = os.open(path, flags_o, 0o600)
            os.utime(fd, (mtime, mtime))
            os.close(fd)


def run_child(argv, env):
    """Run argv; return wall seconds, CPU seconds, peak RSS in MiB, exit code, stdout."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode(errors="replace")
        stderr = err.read().decode(errors="replace")
    if proc.returncode != 0:
        print(f"{argv} failed ({proc.returncode}): {stderr[-2000:]}", file=sys.stderr)
    return {
        "wall_s": round(wall, 3),
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 3),
        "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),
        "exit": proc.returncode,
        "stdout_tail": stdout.strip().splitlines()[-1] if stdout.strip() else "",
    }


def bench_size(mailboxes, files, tmp_parent):
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    py = sys.executable
    base = tempfile.mkdtemp(prefix="bench-housekeeping-", dir=tmp_parent)
    try:
        root = f"{base}/mailboxes"
        os.mkdir(root)
        ini = Path(base) / "chatmail.ini"
        ini.write_text(f"[params]\nmail_domain = {DOMAIN}\nmailboxes_dir = {root}\n")
        textdir = f"{base}/textfile"
        os.mkdir(textdir)
        now = time.time()
        start = time.perf_counter()
        generate(root, mailboxes, files, now)
        result = {
            "mailboxes": mailboxes,
            "files": files,
            "generate_s": round(time.perf_counter() - start, 2),
        }
        expire = [py, "-m", "chatmaild.housekeeping.expire", str(ini)]
        fsreport = [py, "-m", "chatmaild.housekeeping.fsreport", str(ini), "--textfile", textdir]
        result["expire_dry"] = run_child(expire, env)
        result["fsreport"] = run_child(fsreport, env)
        result["expire_remove"] = run_child(expire + ["--remove"], env)
        return result
    finally:
        shutil.rmtree(base, ignore_errors=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mailboxes", type=int, default=100_000)
    parser.add_argument("--files", type=int, default=2_000_000)
    parser.add_argument("--no-compare", action="store_true", help="skip the 1/10 size run")
    parser.add_argument("--tmp", default="/tmp", help="where to generate the tree")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    sizes = [(args.mailboxes, args.files)]
    if not args.no_compare and args.mailboxes >= 10:
        sizes.insert(0, (args.mailboxes // 10, args.files // 10))
    st = os.statvfs(args.tmp)
    need = sum(m * 7 + f for m, f in sizes)
    if st.f_favail < need * 1.2:
        sys.exit(f"not enough free inodes in {args.tmp}: {st.f_favail} < {need} (+20%)")
    results = [bench_size(m, f, args.tmp) for m, f in sizes]
    report = {"runs": results}
    if len(results) == 2:
        small, big = results
        report["rss_growth_ratio"] = {
            key: round(big[key]["peak_rss_mib"] / small[key]["peak_rss_mib"], 2)
            for key in ("expire_dry", "fsreport", "expire_remove")
        }
    if args.json:
        print(json.dumps(report, indent=2))
        return
    for r in results:
        print(f"{r['mailboxes']} mailboxes, {r['files']} files (generated in {r['generate_s']}s)")
        for key in ("expire_dry", "fsreport", "expire_remove"):
            x = r[key]
            rate = r["files"] / x["wall_s"] if x["wall_s"] else 0
            print(
                f"  {key:14} wall {x['wall_s']:8.2f}s  cpu {x['cpu_s']:8.2f}s"
                f"  peak RSS {x['peak_rss_mib']:6.1f} MiB  {rate:10.0f} files/s  exit {x['exit']}"
            )
        print(f"    expire: {r['expire_remove']['stdout_tail']}")
    if "rss_growth_ratio" in report:
        print(f"peak RSS ratio (10x mailboxes): {report['rss_growth_ratio']}")


if __name__ == "__main__":
    main()
