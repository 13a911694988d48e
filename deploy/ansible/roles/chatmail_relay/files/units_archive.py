"""The checkout's systemd units, timers and drop-ins as one tar, laid out as under
/etc/systemd/system (runs on the controller: `python units_archive.py CHECKOUT OUT.tar`).

One archive lets the role install them all in one step (unarchive compares contents). Every
entry is root-owned, mode 0644 (directories 0755), with a fixed mtime, so an unchanged
systemd/ gives an identical archive. Prints JSON {"archive", "services", "timers"}.
"""

import io
import json
import sys
import tarfile
from pathlib import Path

MTIME = 1_700_000_000


def entries(systemd):
    for path in sorted(systemd.glob("*.service")) + sorted(systemd.glob("*.timer")):
        yield path.name, path
    for path in sorted((systemd / "dropins").glob("*.service.d/*.conf")):
        yield f"{path.parent.name}/{path.name}", path


def _info(name, mode, size=0, kind=tarfile.REGTYPE):
    info = tarfile.TarInfo(name)
    info.mode, info.size, info.type, info.mtime = mode, size, kind, MTIME
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info


def main(checkout, out):
    systemd = Path(checkout) / "systemd"
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    dirs = set()
    with tarfile.open(out, "w") as tar:
        for name, path in entries(systemd):
            parent = name.rpartition("/")[0]
            if parent and parent not in dirs:
                dirs.add(parent)
                tar.addfile(_info(parent, 0o755, kind=tarfile.DIRTYPE))
            data = path.read_bytes()
            tar.addfile(_info(name, 0o644, len(data)), io.BytesIO(data))
    names = [p.name for p in systemd.glob("*.service")]
    timers = sorted(p.name for p in systemd.glob("*.timer"))
    timed = {t.removesuffix(".timer") + ".service" for t in timers}
    print(
        json.dumps(
            {
                "archive": str(out),
                "services": sorted(n for n in names if n not in timed),
                "timers": timers,
            }
        )
    )


if __name__ == "__main__":
    main(*sys.argv[1:])
