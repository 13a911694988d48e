"""A booted Debian 12 with systemd as PID 1, for deploying the relay into (systemd-nspawn).

The base tree is made by debootstrap once and cached under CACHE keyed by a hash of what
goes into it; a second cached layer (an overlay upper directory) holds the Debian packages
the playbook installs, so a test run does not spend its time in apt. Each container boots
from an overlay over those, with its own upper directory (kept across a restart of the
container), on a veth pair: host side 10.213.N.1/30, container side 10.213.N.2/30.

The host has no systemd as PID 1, so nspawn runs with --register=no --keep-unit in a cgroup
of its own (deploy-notes.md), and commands run inside with nsenter.
"""

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

CACHE = Path(os.environ.get("CHATMAILD_DEPLOY_CACHE", "/var/cache/chatmaild-deploy"))
SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
# What a bare Debian 12 server has: systemd, Python for Ansible, ip.
BASE_INCLUDE = ["systemd", "systemd-sysv", "dbus", "python3", "iproute2", "ca-certificates"]
SOURCES = (
    f"deb {MIRROR} {SUITE} main\n"
    f"deb {MIRROR} {SUITE}-updates main\n"
    f"deb http://deb.debian.org/debian-security {SUITE}-security main\n"
)
BASE_VERSION = 1  # bump when the base's own setup below changes
CGROUP_ROOTS = (Path("/sys/fs/cgroup/systemd"), Path("/sys/fs/cgroup/unified"))


def _key(*parts):
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:12]


def _run(cmd, **kw):
    kw.setdefault("check", True)
    return subprocess.run(cmd, **kw)


class Cgroup:
    """A cgroup (v1 name=systemd and the unified hierarchy) for one nspawn."""

    def __init__(self, name):
        self.dirs = [root / name for root in CGROUP_ROOTS if root.is_dir()]

    def create(self):
        for d in self.dirs:
            d.mkdir(exist_ok=True)

    def enter_fn(self):
        dirs = list(self.dirs)

        def enter():
            os.setsid()
            for d in dirs:
                (d / "cgroup.procs").write_text(str(os.getpid()))

        return enter

    def remove(self):
        for d in self.dirs:
            if not d.exists():
                continue
            for sub in sorted(d.rglob("*"), key=lambda p: len(p.parts), reverse=True):
                if sub.is_dir():
                    try:
                        sub.rmdir()
                    except OSError:
                        pass
            try:
                d.rmdir()
            except OSError:
                pass


def _nspawn_run(root, name, argv, log):
    """Run `argv` in `root` (not booted, host network) under nspawn, in a cgroup of its own."""
    cg = Cgroup(f"chatmaild-build-{name}")
    cg.create()
    try:
        with open(log, "ab") as out:
            proc = subprocess.run(
                ["systemd-nspawn", "-q", "-D", str(root), "-M", name, "--register=no",
                 "--keep-unit", "--resolv-conf=replace-host", *argv],
                stdout=out, stderr=subprocess.STDOUT, preexec_fn=cg.enter_fn(), timeout=1200,
            )  # fmt: skip
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed in {root}: see {log}")
    finally:
        cg.remove()


@contextlib.contextmanager
def build_lock():
    """One builder of the cached layers at a time (the background prebuild, a test session,
    a second session): the others wait here and then find the layer complete."""
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / ".build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def base_dir():
    return CACHE / f"base-{_key(SUITE, MIRROR, BASE_INCLUDE, SOURCES, BASE_VERSION)}"


def ensure_base(log):
    """The debootstrap tree (built when missing; about a minute)."""
    final = base_dir()
    if (final / ".complete").exists():
        return final
    with build_lock():
        if not (final / ".complete").exists():
            _build_base(final, log)
    return final


def _build_base(final, log):
    tmp = final.with_name(f"{final.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    debs = CACHE / "debootstrap-debs"
    debs.mkdir(exist_ok=True)
    with open(log, "ab") as out:
        _run(
            ["debootstrap", "--variant=minbase", f"--cache-dir={debs}",
             f"--include={','.join(BASE_INCLUDE)}", SUITE, str(tmp), MIRROR],
            stdout=out, stderr=subprocess.STDOUT, timeout=1200,
        )  # fmt: skip
    (tmp / "etc/apt/sources.list").write_text(SOURCES)
    (tmp / "etc/hostname").write_text("relay\n")
    wants = tmp / "etc/systemd/system/multi-user.target.wants"
    wants.mkdir(parents=True, exist_ok=True)
    link = wants / "systemd-networkd.service"
    if not link.exists():
        link.symlink_to("/lib/systemd/system/systemd-networkd.service")
    # nothing in the base holds a console login
    (tmp / "etc/systemd/system/console-getty.service").symlink_to("/dev/null")
    (tmp / ".complete").write_text("")
    shutil.rmtree(final, ignore_errors=True)  # a half-made one of an interrupted build
    tmp.rename(final)


def layer_dir(base, packages):
    return CACHE / f"layer-{_key(base.name, sorted(packages))}"


def ensure_layer(base, packages, log):
    """An overlay upper directory over `base` with `packages` installed (not started:
    policy-rc.d), built when missing."""
    final = layer_dir(base, packages)
    if (final / ".complete").exists():
        return final
    with build_lock():
        if not (final / ".complete").exists():
            _build_layer(final, base, packages, log)
    return final


def _build_layer(final, base, packages, log):
    work = CACHE / f"{final.name}.build-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    upper, wdir, merged = work / "upper", work / "work", work / "merged"
    for d in (upper, wdir, merged):
        d.mkdir(parents=True)
    _run(["mount", "-t", "overlay", "overlay", "-o",
          f"lowerdir={base},upperdir={upper},workdir={wdir}", str(merged)])  # fmt: skip
    try:
        policy = merged / "usr/sbin/policy-rc.d"
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
        script = (
            "set -e; export DEBIAN_FRONTEND=noninteractive; apt-get update -q;"
            f" apt-get install -y -q --no-install-recommends {' '.join(sorted(packages))};"
            " apt-get clean; rm -rf /var/lib/apt/lists/*"
        )
        _nspawn_run(merged, f"lay{os.getpid()}", ["/bin/sh", "-c", script], log)
        policy.unlink()
    finally:
        _run(["umount", str(merged)], check=False)
    (upper / ".complete").write_text("")
    shutil.rmtree(final, ignore_errors=True)
    upper.rename(final)
    shutil.rmtree(work, ignore_errors=True)


class Container:
    """One booted container over read-only lower layers, with a private upper directory."""

    def __init__(self, name, lowers, state_dir, index):
        self.name = name
        self.lowers = [str(p) for p in lowers]  # top first
        self.state = Path(state_dir)
        self.upper, self.work, self.root = (self.state / d for d in ("upper", "work", "root"))
        self.host_ip = f"10.213.{index}.1"
        self.ip = f"10.213.{index}.2"
        self.host_if = f"ve-{name}"[:15]
        self.proc = None
        self.leader = None
        self.cgroup = Cgroup(f"chatmaild-{name}")
        self.console = self.state / "console.log"

    # -- lifecycle -------------------------------------------------------------------------

    def mount(self):
        for d in (self.upper, self.work, self.root):
            d.mkdir(parents=True, exist_ok=True)
        opts = f"lowerdir={':'.join(self.lowers)},upperdir={self.upper},workdir={self.work}"
        _run(["mount", "-t", "overlay", "overlay", "-o", opts, str(self.root)])
        net = self.root / "etc/systemd/network/10-host0.network"
        net.parent.mkdir(parents=True, exist_ok=True)
        net.write_text(
            f"[Match]\nName=host0\n\n[Network]\nAddress={self.ip}/30\n"
            f"Gateway={self.host_ip}\nLinkLocalAddressing=no\nIPv6AcceptRA=no\n"
        )
        # the host name in /etc/hosts, as Debian's installer writes it (debootstrap does not):
        # else every program that looks up its own name (Dovecot twice at each start) waits
        # for unbound, which cannot reach the root servers here, until it times out
        (self.root / "etc/hosts").write_text(
            "127.0.0.1\tlocalhost\n127.0.1.1\trelay\n::1\t\tlocalhost ip6-localhost ip6-loopback\n"
        )
        # no resolver outside: the relay's unbound is the only one
        resolv = self.root / "etc/resolv.conf"
        if resolv.is_symlink() or not resolv.exists():
            resolv.unlink(missing_ok=True)
            resolv.write_text("nameserver 127.0.0.1\n")

    def start(self, timeout=60):
        self.cgroup.create()
        out = open(self.console, "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            ["systemd-nspawn", "-b", "-D", str(self.root), "-M", self.name, "--register=no",
             "--keep-unit", "--network-veth", "--console=read-only", "--resolv-conf=off",
             "--timezone=off", "--link-journal=no"],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            preexec_fn=self.cgroup.enter_fn(),
        )  # fmt: skip
        out.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nspawn exited {self.proc.returncode}: see {self.console}")
            self.leader = self._leader()
            if self.leader and Path(f"/sys/class/net/{self.host_if}").exists():
                break
            time.sleep(0.1)
        else:
            raise RuntimeError(f"container {self.name} did not start: see {self.console}")
        _run(["ip", "addr", "replace", f"{self.host_ip}/30", "dev", self.host_if])
        _run(["ip", "link", "set", self.host_if, "up"])
        while time.monotonic() < deadline:
            state = self.run(["systemctl", "is-system-running"], check=False).stdout.strip()
            if state in ("running", "degraded"):
                return state
            time.sleep(0.2)
        raise RuntimeError(f"container {self.name} did not finish booting ({state})")

    def _leader(self):
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        try:
            pids = children.read_text().split()
        except OSError:
            return None
        return int(pids[0]) if pids else None

    def stop(self, timeout=30):
        """Power off (SIGRTMIN+4 to the container's systemd), SIGKILL after `timeout`."""
        if self.proc is None:
            self.cgroup.remove()
            return
        if self.proc.poll() is None and self.leader:
            try:
                os.kill(self.leader, signal.SIGRTMIN + 4)
                self.proc.wait(timeout)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass
        if self.proc.poll() is None:
            try:
                os.kill(self.leader, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(20)
        self.proc = self.leader = None
        self.cgroup.remove()

    def restart(self):
        self.stop()
        return self.start()

    def destroy(self):
        self.stop()
        _run(["umount", str(self.root)], check=False)
        shutil.rmtree(self.state, ignore_errors=True)

    # -- inside ------------------------------------------------------------------------------

    def run(self, argv, check=True, input=None, timeout=120):
        """Run `argv` inside the container (all its namespaces); CompletedProcess of text."""
        proc = subprocess.run(
            ["nsenter", "-t", str(self.leader), "-a", *argv],
            capture_output=True, text=True, input=input, timeout=timeout,
        )  # fmt: skip
        if check and proc.returncode != 0:
            raise AssertionError(f"{argv} in {self.name}: rc {proc.returncode}\n{proc.stderr}")
        return proc

    def sh(self, script, **kw):
        return self.run(["/bin/sh", "-c", script], **kw)
