"""Build chatmaild's wheel from a checkout plus the wheels of its pinned dependencies.

Runs on the Ansible controller: `python build_wheelhouse.py CHECKOUT BUILD_DIR`. Prints JSON
{"dir": wheelhouse, "archive": the same as a tar file, "digest": ..., "version": ...}.
The digest covers what gets installed (the chatmaild wheel's RECORD, which lists the hash
of every file in it, the dependency wheels' names and constraints.txt), not the zip bytes,
so rebuilding an unchanged checkout gives the same digest and the host keeps its venv. An
unchanged source tree (package, pyproject.toml, constraints.txt) reuses the last wheelhouse
without building, and the dependency wheels are kept per set of requirements and constraints,
so an upgrade that changes only chatmaild builds only its wheel (5 s instead of 13 s here).
"""

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path


def record_of(wheel):
    with zipfile.ZipFile(wheel) as z:
        name = next(n for n in z.namelist() if n.endswith(".dist-info/RECORD"))
        return z.read(name)


def requirements_of(wheel):
    """The wheel's runtime requirements (Requires-Dist without an extra marker)."""
    with zipfile.ZipFile(wheel) as z:
        name = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        metadata = z.read(name).decode()
    reqs = (
        line.partition(":")[2].strip()
        for line in metadata.splitlines()
        if line.startswith("Requires-Dist:")
    )
    return sorted(r for r in reqs if "extra ==" not in r)


def dependency_wheels(pip, requirements, constraints, build):
    """The wheels of `requirements` under `constraints`, built once per set of both."""
    key = hashlib.sha256(
        "\n".join(requirements).encode() + b"\0" + constraints.read_bytes()
    ).hexdigest()[:16]
    deps = build / f"deps-{key}"
    if not (deps / ".complete").exists():
        shutil.rmtree(deps, ignore_errors=True)
        deps.mkdir(parents=True)
        if requirements:
            subprocess.run(
                [*pip, "-w", str(deps), "-c", str(constraints), *requirements],
                check=True, stdout=sys.stderr,
            )  # fmt: skip
        (deps / ".complete").write_text("")
    return sorted(deps.glob("*.whl"))


SOURCES = ("pyproject.toml", "constraints.txt", "README.md")


def source_hash(checkout):
    h = hashlib.sha256()
    files = [checkout / name for name in SOURCES]
    files += sorted(p for p in (checkout / "chatmaild").rglob("*") if p.is_file())
    for path in files:
        if "__pycache__" in path.parts:
            continue
        h.update(str(path.relative_to(checkout)).encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


def main(checkout, build_dir):
    checkout, build = Path(checkout).resolve(), Path(build_dir).resolve()
    house = build / "wheelhouse"
    stamp, result = build / "source-hash", build / "wheelhouse.json"
    src = source_hash(checkout)
    if stamp.exists() and result.exists() and stamp.read_text() == src:
        print(result.read_text())
        return
    if house.exists():
        shutil.rmtree(house)
    house.mkdir(parents=True)
    constraints = checkout / "constraints.txt"
    # setuptools builds in the checkout and never deletes from build/lib: a module that was
    # moved or removed would otherwise still be in the wheel
    shutil.rmtree(checkout / "build", ignore_errors=True)
    pip = [sys.executable, "-m", "pip", "wheel", "-q", "--disable-pip-version-check"]
    subprocess.run(
        [*pip, "--no-deps", "-w", str(house), str(checkout)], check=True, stdout=sys.stderr
    )
    (ours,) = house.glob("chatmaild-*.whl")
    for wheel in dependency_wheels(pip, requirements_of(ours), constraints, build):
        os.link(wheel, house / wheel.name)
    shutil.copy(constraints, house / "constraints.txt")
    h = hashlib.sha256(record_of(ours))
    for wheel in sorted(house.glob("*.whl")):
        if wheel != ours:
            h.update(wheel.name.encode() + b"\n")
    h.update(constraints.read_bytes())
    version = ours.name.split("-")[1]
    archive = build / "wheelhouse.tar"
    with tarfile.open(archive, "w") as tar:  # one transfer to the host, not one per wheel
        for path in sorted(house.iterdir()):
            tar.add(path, arcname=path.name)
    out = json.dumps(
        {"dir": str(house), "archive": str(archive), "digest": h.hexdigest()[:16],
         "version": version}
    )  # fmt: skip
    result.write_text(out)
    stamp.write_text(src)
    print(out)


if __name__ == "__main__":
    main(*sys.argv[1:])
