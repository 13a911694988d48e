"""A private Debian `unbound` serving static test zones on a loopback port.

    with Unbound(tmp_path, {"example.org": [("opendkim._domainkey", 300, "TXT", txt(...))]}) as dns:
        resolver_address = ("127.0.0.1", dns.port)
        ...
        dns.queries()  # queries unbound has answered so far (unbound-control stats)

Every zone is a `local-zone: static` with an SOA (negative TTL `negative_ttl`), so names
that are not listed get NXDOMAIN with a negative TTL; zones listed in `refused` answer
REFUSED; everything else is refused too (no recursion to the internet). The process runs
in the foreground as a child of the test, is stopped by its pid, and keeps its config,
pid file and log under the given directory. Tests needing it call `require_unbound()`.
"""

import socket
import subprocess
import time
from pathlib import Path

from conftest import require_tool

UNBOUND = "/usr/sbin/unbound"
UNBOUND_CONTROL = "/usr/sbin/unbound-control"


def require_unbound():
    require_tool(UNBOUND, UNBOUND_CONTROL)


def free_udp_tcp_port() -> int:
    """A loopback port free for both UDP and TCP right now."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind(("127.0.0.1", 0))
            port = udp.getsockname()[1]
            with socket.socket() as tcp:
                try:
                    tcp.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    raise RuntimeError("no free port")


def txt(text: str) -> str:
    """A TXT rdata in zone-file syntax: quoted strings of at most 255 characters each."""
    chunks = [text[i : i + 255] for i in range(0, len(text), 255)] or [""]
    return " ".join('"' + c.replace("\\", "\\\\").replace('"', '\\"') + '"' for c in chunks)


class Unbound:
    """`zones`: {zone: [(relative name or "" for the apex, ttl, type, rdata), ...]}."""

    def __init__(
        self,
        directory,
        zones: dict,
        *,
        refused: tuple[str, ...] = (),
        negative_ttl: int = 60,
        start_timeout: float = 15.0,
        port: int | None = None,
    ):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_udp_tcp_port()  # `port`: a fixed one (in a fresh namespace)
        self.control_port = free_udp_tcp_port()
        self.conf = self.dir / "unbound.conf"
        self.log = self.dir / "unbound.log"
        self.conf.write_text(self._config(zones, refused, negative_ttl))
        self.proc = None
        self.start_timeout = start_timeout

    def _config(self, zones, refused, negative_ttl) -> str:
        lines = [
            "server:",
            "  interface: 127.0.0.1",
            f"  port: {self.port}",
            "  do-ip6: no",
            "  do-daemonize: no",
            '  chroot: ""',
            '  username: ""',
            f'  directory: "{self.dir}"',
            f'  pidfile: "{self.dir / "unbound.pid"}"',
            f'  logfile: "{self.log}"',
            "  use-syslog: no",
            "  verbosity: 1",
            "  log-queries: yes",
            "  access-control: 127.0.0.0/8 allow",
            '  module-config: "iterator"',
            "  num-threads: 1",
            '  local-zone: "." refuse',
        ]
        for zone, records in zones.items():
            zone = zone.rstrip(".") + "."
            lines.append(f'  local-zone: "{zone}" static')
            soa = f"{zone} 3600 IN SOA ns.{zone} hostmaster.{zone} 1 3600 600 86400 {negative_ttl}"
            lines.append(f"  local-data: '{soa}'")
            for name, ttl, rtype, rdata in records:
                owner = f"{name}.{zone}" if name else zone
                lines.append(f"  local-data: '{owner} {ttl} IN {rtype} {rdata}'")
        for zone in refused:
            lines.append(f'  local-zone: "{zone.rstrip(".")}." refuse')
        lines += [
            "remote-control:",
            "  control-enable: yes",
            "  control-interface: 127.0.0.1",
            f"  control-port: {self.control_port}",
            "  control-use-cert: no",
        ]
        return "\n".join(lines) + "\n"

    def start(self):
        self.proc = subprocess.Popen(
            [UNBOUND, "-d", "-c", str(self.conf)],
            stdout=subprocess.DEVNULL,
            stderr=open(self.dir / "unbound.stderr", "wb"),  # noqa: SIM115
        )
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"unbound exited: {self._diagnostics()}")
            if self._control("status").returncode == 0:
                return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"unbound did not start: {self._diagnostics()}")

    def _diagnostics(self) -> str:
        texts = []
        for path in (self.dir / "unbound.stderr", self.log):
            if path.exists():
                texts.append(path.read_text(errors="replace")[-2000:])
        return " | ".join(texts)

    def _control(self, *args) -> subprocess.CompletedProcess:
        return subprocess.run(
            [UNBOUND_CONTROL, "-c", str(self.conf), *args],
            capture_output=True,
            text=True,
            timeout=10,
        )

    def stats(self) -> dict[str, float]:
        done = self._control("stats_noreset")
        if done.returncode != 0:
            raise RuntimeError(f"unbound-control stats_noreset: {done.stderr or done.stdout}")
        values = {}
        for line in done.stdout.splitlines():
            key, sep, value = line.partition("=")
            if sep:
                values[key] = float(value)
        return values

    def replace_record(self, owner: str, ttl: int, rtype: str, rdata: str) -> None:
        """Replace every record at `owner` (a full name) while unbound runs."""
        for args in (
            ("local_data_remove", owner),
            ("local_data", f"{owner} {ttl} IN {rtype} {rdata}"),
        ):
            done = self._control(*args)
            if done.returncode != 0 or "error" in done.stdout:
                raise RuntimeError(f"unbound-control {args[0]}: {done.stderr or done.stdout}")

    def queries(self) -> int:
        """Queries unbound received since it started (all names, all types)."""
        return int(self.stats()["total.num.queries"])

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
