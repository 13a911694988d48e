"""Private network namespaces for a relay: its own loopback, so fixed ports never clash.

Processes are started inside with `ip netns exec NAME ...`, which also bind-mounts
/etc/netns/NAME/hosts over /etc/hosts for them (the real /etc/hosts is never edited).
`entered(name)` moves only the calling thread into the namespace: sockets created there
stay bound to it, so a test can open client connections to the relay from Python.
"""

import contextlib
import ctypes
import os
import socket
import subprocess
from pathlib import Path

CLONE_NEWNET = 0x40000000
NETNS_RUN_DIR = Path("/run/netns")
NETNS_ETC_DIR = Path("/etc/netns")


def exec_prefix(name):
    """argv prefix that runs a command inside the namespace (empty for None)."""
    return ["ip", "netns", "exec", name] if name else []


def exists(name):
    return (NETNS_RUN_DIR / name).exists()


def hosts_text(hostnames):
    names = " ".join(dict.fromkeys(["localhost", *hostnames]))
    return f"127.0.0.1\t{names}\n::1\tlocalhost ip6-localhost ip6-loopback\n"


def create(name, hostnames):
    """Create the namespace with lo up and a hosts file mapping `hostnames` to 127.0.0.1."""
    if not exists(name):
        subprocess.run(["ip", "netns", "add", name], check=True)
    subprocess.run([*exec_prefix(name), "ip", "link", "set", "lo", "up"], check=True)
    etc = NETNS_ETC_DIR / name
    etc.mkdir(parents=True, exist_ok=True)
    (etc / "hosts").write_text(hosts_text(hostnames))


def add_address(name, address):
    """Give the namespace's loopback `address` too (an IP-only relay's own address)."""
    argv = ["ip", "-n", name, "addr", "add", f"{address}/32", "dev", "lo"]
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if proc.returncode != 0 and "File exists" not in proc.stderr:
        raise subprocess.CalledProcessError(proc.returncode, argv, proc.stdout, proc.stderr)


def link(name_a, name_b, addr_a, addr_b, prefix_len=24, ifname="peer0"):
    """Join two namespaces by a veth pair: `ifname` with addr_a in one, addr_b in the other.

    Both ends are created directly inside their namespaces, so nothing appears in the
    machine's own namespace and the addresses cannot clash with anything outside the two.
    Removing either namespace removes the pair.
    """
    veth = f"ip link add {ifname} netns {name_a} type veth peer name {ifname} netns {name_b}"
    subprocess.run(veth.split(), check=True)
    for name, addr in ((name_a, addr_a), (name_b, addr_b)):
        subprocess.run(
            ["ip", "-n", name, "addr", "add", f"{addr}/{prefix_len}", "dev", ifname], check=True
        )
        subprocess.run(["ip", "-n", name, "link", "set", ifname, "up"], check=True)


def resolv_conf_text(nameserver="127.0.0.1"):
    return f"nameserver {nameserver}\n"


def use_resolver(name, nameserver="127.0.0.1"):
    """Point the namespace's processes at `nameserver` (/etc/netns/NAME/resolv.conf)."""
    etc = NETNS_ETC_DIR / name
    etc.mkdir(parents=True, exist_ok=True)
    (etc / "resolv.conf").write_text(resolv_conf_text(nameserver))


def delete(name):
    """Remove the namespace and its /etc/netns/NAME (processes must be gone already)."""
    if exists(name):
        subprocess.run(["ip", "netns", "delete", name], check=False)
    etc = NETNS_ETC_DIR / name
    if etc.is_dir():
        for child in etc.iterdir():
            child.unlink()
        etc.rmdir()


def _setns(fd):
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


@contextlib.contextmanager
def entered(name):
    """Run the body with the calling thread inside namespace `name` (None: no change)."""
    if not name:
        yield
        return
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(NETNS_RUN_DIR / name, os.O_RDONLY)
    try:
        _setns(target)
        try:
            yield
        finally:
            _setns(own)
    finally:
        os.close(target)
        os.close(own)


def tcp_port_open(name, port, host="127.0.0.1", timeout=0.5):
    """Whether something accepts connections on host:port inside the namespace."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with entered(name):
        sock = socket.socket(family, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect((host, port))
        return True
    except OSError:
        return False
    finally:
        sock.close()
