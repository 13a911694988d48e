"""A relay's local resolver: Debian's unbound on 127.0.0.1:53 of its network namespace.

Production relays run unbound as their resolver; the test network's unbound serves the test
zones from `local-data` (chatmaild.render.zone) and nothing else. Postfix (MX and A of the
peer), filtermail (DKIM keys) and every other process of the namespace reach it through
/etc/netns/NAME/resolv.conf, which `ip netns exec` mounts over /etc/resolv.conf.
"""

import subprocess
import time
from pathlib import Path

from chatmaild.relay import netns as netns_mod
from chatmaild.relay import processes
from chatmaild.relay.instance import RelayError
from chatmaild.render.zone import local_data_lines

UNBOUND = "/usr/sbin/unbound"
READY_TIMEOUT = 15.0
STOP_TIMEOUT = 5.0


def unbound_conf(run_dir, zones, listen="127.0.0.1", port=53):
    """The whole unbound.conf: one thread, no DNSSEC, no remote control, files in run_dir."""
    run_dir = Path(run_dir)
    server = [
        f"interface: {listen}",
        f"port: {port}",
        "do-ip6: no",
        "do-daemonize: no",
        'chroot: ""',
        'username: ""',
        f'directory: "{run_dir}"',
        f'pidfile: "{run_dir / "unbound.pid"}"',
        f'logfile: "{run_dir / "unbound.log"}"',
        "use-syslog: no",
        "verbosity: 1",
        "num-threads: 1",
        "outgoing-range: 64",
        'module-config: "iterator"',
        "access-control: 127.0.0.0/8 allow",
        *local_data_lines(zones),
    ]
    lines = ["# unbound.conf of a test relay's resolver (chatmaild.relay.resolver)", "server:"]
    lines += [f"    {line}" for line in server]
    lines += ["remote-control:", "    control-enable: no", ""]
    return "\n".join(lines)


class Resolver:
    """unbound inside network namespace `netns`, its files in `run_dir`."""

    def __init__(self, netns, run_dir, pid=None):
        self.netns = netns
        self.run_dir = Path(run_dir)
        self.pid = pid

    @property
    def conf_path(self):
        return self.run_dir / "unbound.conf"

    @property
    def log_path(self):
        return self.run_dir / "unbound.log"

    def write(self, zones):
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.conf_path.write_text(unbound_conf(self.run_dir, zones))
        check = subprocess.run(
            ["unbound-checkconf", str(self.conf_path)], capture_output=True, text=True
        )
        if check.returncode != 0:
            raise RelayError(f"unbound-checkconf refused {self.conf_path}:\n{check.stdout}")

    def start(self, probe_name):
        """Start unbound; returns once it answers an A query for `probe_name`."""
        with open(self.log_path, "ab") as out:
            proc = subprocess.Popen(
                [*netns_mod.exec_prefix(self.netns), UNBOUND, "-d", "-c", str(self.conf_path)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                start_new_session=True,
            )
        self.pid = proc.pid
        deadline = time.monotonic() + READY_TIMEOUT
        while not self.answers(probe_name):
            if proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RelayError(f"unbound in {self.netns} did not start; see {self.log_path}")
            time.sleep(0.05)

    def answers(self, name):
        """Whether the resolver answers an A query for `name` with an address."""
        return bool(self.query(name, "A", timeout=0.5))

    def query(self, name, rdtype, timeout=2.0):
        """The answer's rdata objects (dnspython); [] when there is none or no answer."""
        import dns.exception
        import dns.message
        import dns.query

        request = dns.message.make_query(name, rdtype)
        with netns_mod.entered(self.netns):
            try:
                reply = dns.query.udp(request, "127.0.0.1", timeout=timeout)
            except (OSError, dns.exception.DNSException):
                return []
        return [rd for rrset in reply.answer for rd in rrset]

    def running(self):
        return self.pid is not None and processes.pid_alive(self.pid)

    def stop(self):
        if self.pid is None:
            return
        pid, self.pid = self.pid, None
        processes.stop(pid, "unbound", STOP_TIMEOUT)  # nothing if gone or not ours any more
