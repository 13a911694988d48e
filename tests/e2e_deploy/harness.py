"""The deployment under test: a container, pebble as its ACME server, and the playbook.

`Deployment` boots one container (container.py), starts Debian's pebble and
pebble-challtestsrv on the host end of its veth (pebble's own HTTPS certificate from a
trustme CA the container is told to trust; challtestsrv answers every A query with the
container's address, so pebble's http-01 validation really fetches from the container's
port 80), writes an inventory with the `community.docker.nsenter` connection and runs
`ansible-playbook deploy/ansible/site.yml` against it.
"""

import fcntl
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import yaml

from . import container
from .aptproxy import AptProxy

ROOT = Path(__file__).resolve().parents[2]
ANSIBLE_DIR = ROOT / "deploy" / "ansible"
VENV_BIN = Path(sys.executable).parent
COLLECTIONS = Path(sys.prefix) / "share" / "ansible" / "collections"
DOMAIN = "relay.deploy.test"
RECAP = re.compile(r"^\S+\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)
PEBBLE_PORT, PEBBLE_MGMT, DNS_PORT, CHALL_MGMT = 14000, 15000, 8053, 8055
APT_PROXY_PORT = 3142
# Sessions that run at the same time (several engineers, CI) each hold one index N, which
# names the container's veth subnet 10.213.N.0/30: a lock file per index, held while the
# session runs, and no host address in that subnet already (a session of older code).
INDEX_LOCKS = Path("/run/chatmaild-deploy")
INDEXES = range(100, 250)


def _subnet_in_use(index):
    out = subprocess.run(
        ["ip", "-4", "-o", "addr", "show", "to", f"10.213.{index}.0/30"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    return bool(out.stdout.strip())


def claim_index(start):
    """(index, open lock file) of a container subnet no other session uses; the index is
    ours until the file is closed (or the process ends)."""
    INDEX_LOCKS.mkdir(parents=True, exist_ok=True)
    for i in range(len(INDEXES)):
        index = INDEXES[(start + i) % len(INDEXES)]
        lock = open(INDEX_LOCKS / f"index-{index}.lock", "w")  # noqa: SIM115
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            continue
        if _subnet_in_use(index):
            lock.close()
            continue
        return index, lock
    raise RuntimeError(f"no free container index in {INDEXES} (see {INDEX_LOCKS})")


def role_packages():
    defaults = yaml.safe_load((ANSIBLE_DIR / "roles/chatmail_relay/defaults/main.yml").read_text())
    fw = yaml.safe_load((ANSIBLE_DIR / "roles/firewall/defaults/main.yml").read_text())
    return (
        defaults["chatmail_packages"]
        + defaults["chatmail_monitoring_packages"]
        + fw["firewall_packages"]
    )


# This machine's hard limit for open files (nspawn's container inherits it; raising it needs
# CAP_SYS_RESOURCE, which the test host does not give).
HOST_NOFILE_HARD = resource.getrlimit(resource.RLIMIT_NOFILE)[1]


def nofile_dropins():
    """{unit: drop-in} lowering LimitNOFILE where a unit of systemd/ asks for more than the
    container can have (a real server has no such limit: the role's chatmail_unit_dropins)."""
    dropins = {}
    for unit in sorted((ROOT / "systemd").glob("*.service")):
        m = re.search(r"(?m)^LimitNOFILE=(\d+)", unit.read_text())
        if m and HOST_NOFILE_HARD != resource.RLIM_INFINITY and int(m.group(1)) > HOST_NOFILE_HARD:
            dropins[unit.name] = f"[Service]\nLimitNOFILE={HOST_NOFILE_HARD}\n"
    return dropins


class PlayResult:
    def __init__(self, argv, proc, seconds, log):
        self.argv, self.rc, self.output, self.seconds, self.log = (
            argv,
            proc.returncode,
            proc.stdout,
            seconds,
            log,
        )
        m = RECAP.findall(self.output)
        self.ok, self.changed, self.unreachable, self.failed = (
            map(int, m[-1]) if m else (0, -1, -1, -1)
        )

    def changed_tasks(self):
        return re.findall(r"^changed: \[[^\]]+\](?: => \(item=(.*?)\))?", self.output, re.M)

    def __repr__(self):
        return (
            f"<play {' '.join(self.argv)} rc={self.rc} changed={self.changed} "
            f"failed={self.failed} {self.seconds:.1f}s log={self.log}>"
        )


class Deployment:
    def __init__(self, workdir, log=print):
        self.workdir = Path(workdir)
        self.log = log
        self.index, self._index_lock = claim_index(os.getpid())
        self.name = f"cmd{self.index}-{os.getpid() % 1000}"
        self.domain = DOMAIN
        self.procs = []
        self.apt_proxy = None
        self.container = None
        self.plays = []

    # -- set-up ----------------------------------------------------------------------------

    def layers(self):
        from .prebuild import build

        return build(self.workdir / "build.log")

    def up(self):
        t0 = time.monotonic()
        lowers = self.layers()
        self.log(f"layers ready in {time.monotonic() - t0:.1f}s: {lowers}")
        self.container = container.Container(
            self.name, lowers, self.workdir / "container", self.index
        )
        self.container.mount()
        self._apt_through_the_host()
        t0 = time.monotonic()
        self.container.start()
        self.log(f"container {self.name} booted in {time.monotonic() - t0:.1f}s ({self.ip})")
        # on the host end's address, which exists once the container runs
        self.apt_proxy = AptProxy(self.container.host_ip, APT_PROXY_PORT, {"deb.debian.org"})
        self.apt_proxy.start()
        self._pebble()
        self._inventory()

    def _apt_through_the_host(self):
        """apt in the container fetches through a proxy (aptproxy.py) on the host end of the
        veth: the host reaches Debian's mirror, the container nothing outside. dpkg skips
        fsync and man pages, which only makes installing quicker."""
        host = self.container.host_ip
        root = self.container.root
        (root / "etc/apt/apt.conf.d/01-test-proxy").write_text(
            f'Acquire::http::Proxy "http://{host}:{APT_PROXY_PORT}/";\n'
            'Acquire::http::Pipeline-Depth "0";\n'
        )
        (root / "etc/dpkg/dpkg.cfg.d/01-test-speed").write_text(
            "force-unsafe-io\npath-exclude=/usr/share/man/*\n"
        )

    @property
    def ip(self):
        return self.container.ip

    def _spawn(self, argv, name, env=None):
        out = open(self.workdir / f"{name}.log", "ab")  # noqa: SIM115
        proc = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})}, start_new_session=True,
        )  # fmt: skip
        out.close()
        self.procs.append(proc)
        return proc

    def _pebble(self):
        import trustme

        host = self.container.host_ip
        ca = trustme.CA()
        cert = ca.issue_cert(host)
        pki = self.workdir / "pebble-pki"
        pki.mkdir(exist_ok=True)
        ca.cert_pem.write_to_path(str(pki / "ca.pem"))
        cert.cert_chain_pems[0].write_to_path(str(pki / "cert.pem"))
        cert.private_key_pem.write_to_path(str(pki / "key.pem"))
        self.pebble_listener_ca = (pki / "ca.pem").read_text()
        config = {
            "pebble": {
                "listenAddress": f"{host}:{PEBBLE_PORT}",
                "managementListenAddress": f"{host}:{PEBBLE_MGMT}",
                "certificate": str(pki / "cert.pem"),
                "privateKey": str(pki / "key.pem"),
                "httpPort": 80,
                "tlsPort": 443,
                "ocspResponderURL": "",
                "externalAccountBindingRequired": False,
            }
        }
        (pki / "pebble.json").write_text(json.dumps(config))
        self._spawn(
            ["pebble-challtestsrv", "-defaultIPv4", self.ip, "-defaultIPv6", "",
             "-dns01", f"{host}:{DNS_PORT}", "-http01", "", "-https01", "", "-tlsalpn01", "",
             "-management", f"{host}:{CHALL_MGMT}"],
            "challtestsrv",
        )  # fmt: skip
        self._spawn(
            ["pebble", "-config", str(pki / "pebble.json"), "-dnsserver", f"{host}:{DNS_PORT}"],
            "pebble",
            env={"PEBBLE_VA_NOSLEEP": "1", "PEBBLE_WFE_NONCEREJECT": "0"},
        )
        self.acme_url = f"https://{host}:{PEBBLE_PORT}/dir"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                self.pebble_root()
                return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"pebble did not start: {self.workdir / 'pebble.log'}")

    def pebble_root(self):
        """The root certificate pebble issues under (PEM), from its management API."""
        import ssl

        ctx = ssl.create_default_context(cadata=self.pebble_listener_ca)
        url = f"https://{self.container.host_ip}:{PEBBLE_MGMT}/roots/0"
        with urllib.request.urlopen(url, context=ctx, timeout=5) as resp:
            return resp.read().decode()

    def _inventory(self, extra=None):
        inv = self.workdir / "inventory"
        (inv / "host_vars").mkdir(parents=True, exist_ok=True)
        (inv / "hosts.yml").write_text(
            yaml.safe_dump({"chatmail_relays": {"hosts": {"relay": None}}})
        )
        host_vars = {
            "ansible_connection": "nsenter_pipelined",  # connection_plugins/
            "ansible_python_interpreter": "/usr/bin/python3",
            "ansible_become": False,  # nsenter is root already; the image has no sudo
            "chatmail_domain": self.domain,
            "chatmail_tls_mode": "acme",
            "chatmail_acme_directory_url": self.acme_url,
            "chatmail_acme_required": True,
            "chatmail_extra_ca_pem": self.pebble_listener_ca,
            # a busy CI machine must still create accounts (as `relay up` loosens them)
            "chatmail_ini_extra": {
                "acme_email": "admin@deploy.test",
                "max_load_1m": 1000,
                "min_available_memory": "1K",
                "min_free_disk_space": "1K",
            },
            "chatmail_build_dir": str(self.workdir / "build"),
            "chatmail_unit_dropins": nofile_dropins(),
            **(extra or {}),
        }
        (inv / "host_vars" / "relay.yml").write_text(yaml.safe_dump(host_vars))
        self.inventory = inv

    # -- the playbook ------------------------------------------------------------------------

    def play(self, *args, extra_vars=None, checkout=None, timeout=900):
        """Run site.yml (from `checkout`, default this one) against the container."""
        playbook = Path(checkout or ROOT) / "deploy" / "ansible" / "site.yml"
        ev = {"ansible_nsenter_pid": self.container.leader, **(extra_vars or {})}
        argv = [
            str(VENV_BIN / "ansible-playbook"), "-i", str(self.inventory), str(playbook),
            "-e", json.dumps(ev), *args,
        ]  # fmt: skip
        env = {
            **os.environ,
            "ANSIBLE_CONFIG": str(playbook.parent / "ansible.cfg"),
            "ANSIBLE_COLLECTIONS_PATH": str(COLLECTIONS),
            "ANSIBLE_CONNECTION_PLUGINS": str(Path(__file__).parent / "connection_plugins"),
            "ANSIBLE_PIPELINING": "1",
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_FORCE_COLOR": "0",
            "ANSIBLE_LOCAL_TEMP": str(self.workdir / "ansible-tmp"),
            "ANSIBLE_HOME": str(self.workdir / "ansible-home"),
            "PATH": f"{VENV_BIN}:{os.environ.get('PATH', '')}",
        }
        n = len(self.plays) + 1
        log = self.workdir / f"play-{n}.log"
        t0 = time.monotonic()
        proc = subprocess.run(
            argv, env=env, capture_output=True, text=True, timeout=timeout, cwd=playbook.parent
        )
        result = PlayResult(list(args), proc, time.monotonic() - t0, log)
        log.write_text(proc.stdout + "\n--- stderr ---\n" + proc.stderr)
        self.plays.append(result)
        self.log(repr(result))
        return result

    def newer_checkout(self, dest, version):
        """A copy of this checkout whose package version is `version` (an upgrade)."""
        dest = Path(dest)
        for name in ("chatmaild", "systemd", "deploy"):
            shutil.copytree(
                ROOT / name, dest / name,
                ignore=shutil.ignore_patterns("__pycache__", ".build", "*.egg-info"),
            )  # fmt: skip
        for name in ("README.md", "constraints.txt"):
            shutil.copy(ROOT / name, dest / name)
        pyproject = (ROOT / "pyproject.toml").read_text()
        bumped = re.sub(r'(?m)^version = "[^"]+"', f'version = "{version}"', pyproject, count=1)
        assert bumped != pyproject
        (dest / "pyproject.toml").write_text(bumped)
        return dest

    # -- tear-down -----------------------------------------------------------------------------

    def down(self):
        if self.apt_proxy is not None:
            self.apt_proxy.stop()
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
        if self.container is not None:
            self.container.destroy()
        self._index_lock.close()
