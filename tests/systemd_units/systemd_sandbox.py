"""Run a daemon the way its unit does, without systemd: an emulation of the sandbox.

No systemd manager runs on the test machine (so no `systemd-run`), so the unit's settings
are turned into the equivalent bubblewrap mounts, setpriv credentials and an in-process
seccomp/MDWE filter (systemd_sandbox_exec.py):

| unit setting                                   | emulation                                  |
|------------------------------------------------|--------------------------------------------|
| ProtectSystem=strict                           | bwrap --ro-bind / /                        |
| ReadWritePaths= / BindPaths=                   | bwrap --bind (from a temp dir)             |
| BindReadOnlyPaths=                             | bwrap --ro-bind (from a temp dir)          |
| ProtectHome=yes/tmpfs                          | tmpfs on /home and /root                   |
| PrivateTmp=                                    | tmpfs on /tmp and /var/tmp                 |
| PrivateDevices=                                | bwrap --dev (minimal /dev)                 |
| RuntimeDirectory= (+Mode)                      | a vmail-owned temp dir bound at /run/<dir> |
| IPAddressDeny=any + localhost / PrivateNetwork | a private network namespace (lo only)      |
| PrivateIPC= / ProtectHostname=                 | IPC and UTS namespaces                     |
| User= / Group= / NoNewPrivileges= / Capability* | setpriv: uid, gid, no groups, caps, NNP    |
| DynamicUser=                                   | a free uid/gid in systemd's dynamic range  |
| UMask= / MemoryDenyWriteExecute=               | umask(2) / prctl(PR_SET_MDWE)              |
| SystemCallFilter= / RestrictAddressFamilies=   | seccomp filter (libseccomp via ctypes)     |

Stand-ins for the deployment layout: the daemon is `python -m <module>` from this checkout
(read-only bind of the checkout and the interpreter), and chatmail.ini is bound read-only
at /run/chatmaild-test/chatmail.ini; every other path (sockets, mailboxes) is the unit's own.
A test may bind more host dirs read-only (`extra_ro_binds`, e.g. fake tools or a
certificate at its production path) and set the environment (`env`, e.g. PATH).
"""

import grp
import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

from systemd_unitfile import REPO_ROOT, allowed_syscalls, syscall_groups

HERE = Path(__file__).resolve().parent
FAMILIES = {"AF_UNIX": socket.AF_UNIX, "AF_INET": socket.AF_INET, "AF_INET6": socket.AF_INET6}
FAMILIES["AF_NETLINK"] = 16
CONFIG_DIR_IN_SANDBOX = "/run/chatmaild-test"
# systemd's DynamicUser= range (61184-65519); the emulation takes the first unused id.
DYNAMIC_UIDS = range(61184, 65520)


class Credentials:
    """The user a unit runs as: pw_uid, pw_gid, pw_name like a pwd entry."""

    def __init__(self, uid, gid, name):
        self.pw_uid, self.pw_gid, self.pw_name = uid, gid, name


def unit_credentials(unit):
    """User= from the passwd database; DynamicUser= a uid/gid no user or group has."""
    if unit.flag("DynamicUser"):
        for uid in DYNAMIC_UIDS:
            try:
                pwd.getpwuid(uid)
                continue
            except KeyError:
                pass
            try:
                grp.getgrgid(uid)
                continue
            except KeyError:
                return Credentials(uid, uid, f"dynamic uid {uid}")
        raise RuntimeError("no free uid in the DynamicUser= range")
    entry = pwd.getpwnam(unit.get("User", "root"))
    return Credentials(entry.pw_uid, entry.pw_gid, entry.pw_name)


def setpriv_caps(unit):
    """setpriv's --bounding-set for CapabilityBoundingSet= (empty: none at all)."""
    caps = [c.lower().removeprefix("cap_") for c in unit.all("CapabilityBoundingSet")]
    return ",".join(["-all"] + [f"+{c}" for c in caps])


def tools_missing():
    missing = [t for t in ("bwrap", "setpriv", "nsenter", "systemd-analyze") if not shutil.which(t)]
    try:
        pwd.getpwnam("vmail")
    except KeyError:
        missing.append("user vmail")
    if os.geteuid() != 0:
        missing.append("root (to switch to vmail)")
    return missing


def loopback_only(unit):
    allow = unit.all("IPAddressAllow")
    return unit.flag("PrivateNetwork") or (
        "any" in unit.all("IPAddressDeny") and set(allow) <= {"localhost", "127.0.0.1", "::1"}
    )


class SandboxedDaemon:
    """A daemon started under the emulated sandbox of `unit`.

    `host_paths` maps every path the unit binds or writes (mailboxes, textfile dir) to a
    temp dir standing in for it; `config` is the chatmail.ini to bind in; `extra_ro_binds`
    maps more sandbox paths to host dirs bound read-only; `env` is added to the environment.
    """

    def __init__(
        self, unit, module, args, workdir, config, host_paths, extra_ro_binds=None, env=None
    ):
        self.unit = unit
        self.workdir = Path(workdir)
        self.user = unit_credentials(unit)
        self.host_paths = dict(host_paths)
        self.extra_ro_binds = dict(extra_ro_binds or {})
        self.env = dict(env or {})
        self.runtime_dirs = {}
        self.proc = None
        self.child_pid = None
        confdir = self.workdir / "confdir"
        confdir.mkdir(mode=0o755)
        shutil.copy(config, confdir / "chatmail.ini")
        os.chmod(confdir / "chatmail.ini", 0o644)
        allowed = allowed_syscalls(unit, syscall_groups())
        (confdir / "syscalls").write_text("\n".join(sorted(allowed)) + "\n")
        os.chmod(confdir / "syscalls", 0o644)
        self.confdir = confdir
        self.argv = [sys.executable, "-m", module, *args]

    def inside(self, path):
        """A path as the sandboxed daemon sees it, reachable from the host (and short
        enough for a unix socket address, unlike the temp dir behind it)."""
        return Path(f"/proc/{self.child_pid}/root{path}")

    def command(self):
        unit = self.unit
        cmd = [
            shutil.which("bwrap"),
            "--die-with-parent",
            "--unshare-pid",
            "--unshare-ipc",
            "--unshare-uts",
        ]
        if loopback_only(unit):
            cmd.append("--unshare-net")
        if unit.get("ProtectSystem") == "strict":
            cmd += ["--ro-bind", "/", "/"]
        else:
            raise ValueError(f"{unit.name}: emulation expects ProtectSystem=strict")
        cmd += ["--dev", "/dev"] if unit.flag("PrivateDevices") else ["--dev-bind", "/dev", "/dev"]
        cmd += ["--proc", "/proc"]
        if unit.flag("PrivateTmp"):
            cmd += ["--tmpfs", "/tmp", "--tmpfs", "/var/tmp"]
        if unit.get("ProtectHome") in ("yes", "true", "tmpfs"):
            cmd += ["--tmpfs", "/home", "--tmpfs", "/root"]
        cmd += ["--tmpfs", "/run"]
        mode = int(unit.get("RuntimeDirectoryMode", "0755"), 8)
        for name in unit.all("RuntimeDirectory"):
            host = self.workdir / "run" / name
            host.mkdir(parents=True, exist_ok=True)
            os.chown(host, self.user.pw_uid, self.user.pw_gid)
            os.chmod(host, mode)
            self.runtime_dirs[name] = host
            cmd += ["--bind", str(host), f"/run/{name}"]
        binds = []
        for key, how in (
            ("BindPaths", "--bind"),
            ("ReadWritePaths", "--bind"),
            ("BindReadOnlyPaths", "--ro-bind"),
        ):
            for path in unit.all(key):
                path = path.lstrip("-")
                binds.append((how, str(self.host_paths[path]), path))
        # Stand-ins for /usr/local/lib/chatmaild: the checkout, the interpreter, the config.
        for path in sorted({str(REPO_ROOT), sys.prefix, sys.base_prefix}):
            binds.append(("--ro-bind", path, path))
        for dest, source in self.extra_ro_binds.items():
            binds.append(("--ro-bind", str(source), dest))
        # A bind target missing on this machine (e.g. no node-exporter installed) gets a
        # tmpfs on its deepest existing ancestor, so bwrap can create the mount point; all
        # such tmpfs come first (outermost only), so none hides an earlier bind.
        ancestors = set()
        for _, _, dest in binds:
            if not os.path.exists(dest):
                ancestor = next(p for p in Path(dest).parents if p.exists())
                if str(ancestor) != "/":
                    ancestors.add(ancestor)
        for ancestor in sorted(ancestors):
            if not any(other in ancestor.parents for other in ancestors):
                cmd += ["--tmpfs", str(ancestor)]
        for how, source, dest in binds:
            # bwrap creates missing parents mode 0700: make them traversable like the real ones.
            for parent in reversed(Path(dest).parents[:-1]):
                cmd += ["--perms", "0755", "--dir", str(parent)]
            cmd += [how, source, dest]
        cmd += ["--ro-bind", str(self.confdir), CONFIG_DIR_IN_SANDBOX]
        cmd += ["--chdir", "/", "--info-fd", str(self.info_fd), "--"]
        cmd += [
            shutil.which("setpriv"),
            f"--reuid={self.user.pw_uid}",
            f"--regid={self.user.pw_gid}",
            "--clear-groups",
            "--inh-caps=-all",
            f"--bounding-set={setpriv_caps(unit)}",
        ]
        if unit.flag("NoNewPrivileges"):
            cmd.append("--no-new-privs")
        cmd += ["--", sys.executable, str(HERE / "systemd_sandbox_exec.py")]
        cmd += ["--umask", unit.get("UMask", "0022")]
        if unit.flag("MemoryDenyWriteExecute"):
            cmd.append("--mdwe")
        cmd += ["--syscalls", f"{CONFIG_DIR_IN_SANDBOX}/syscalls"]
        cmd += ["--errno", str(_errno_number(unit.get("SystemCallErrorNumber", "EPERM")))]
        families = unit.all("RestrictAddressFamilies")
        if families:
            cmd += ["--families", ",".join(str(FAMILIES[f]) for f in families)]
        return cmd + ["--", *self.argv]

    def start(self):
        read_fd, write_fd = os.pipe()
        self.info_fd = write_fd
        env = dict(os.environ)
        env["PYTHONPATH"] = str(REPO_ROOT)
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        cmd = self.command()
        env.update(self.env)
        self.log_path = self.workdir / "daemon.log"
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                pass_fds=(write_fd,),
                env=env,
            )
        os.close(write_fd)
        with os.fdopen(read_fd) as info:
            text = info.read()  # bwrap closes it once the sandbox is set up
        self.child_pid = json.loads(text or "{}").get("child-pid")
        if self.child_pid is None:
            raise RuntimeError(f"bwrap did not start: {self.log()}")
        return self

    def log(self):
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def daemon_pid(self):
        """Pid (host view) of the daemon: the child of bwrap's init in the pid namespace."""
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                status = (entry / "status").read_text()
            except OSError:
                continue
            if int(status.split("PPid:")[1].split()[0]) == self.child_pid:
                return int(entry.name)
        return None

    def status(self):
        pid = self.daemon_pid()
        if pid is None:
            return {}
        fields = {}
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            fields[key] = value.strip()
        return fields

    def in_netns(self, argv):
        """argv to run a command inside the daemon's network namespace."""
        return [shutil.which("nsenter"), f"--net=/proc/{self.child_pid}/ns/net", "--", *argv]

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()  # bwrap's child dies with it (--die-with-parent)
            self.proc.wait(timeout=10)


def _errno_number(name):
    import errno

    return int(name) if name.isdigit() else getattr(errno, name)


def wait_for(predicate, what, daemon, timeout=20.0):
    """Poll until predicate() is true; fail with the daemon's log if it dies or never is."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if not daemon.running():
            raise AssertionError(f"daemon exited before {what}:\n{daemon.log()}")
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}:\n{daemon.log()}")
