"""Which sockets listen in a network namespace, read from the kernel's tables.

Readiness is decided from /proc/net/{tcp,tcp6,unix} instead of by connecting: a probe
connection that closes at once is logged by the servers as a fault (nginx: `broken header:
"" while reading PROXY protocol`, Postfix: `SSL_accept error ... lost connection`). The
tables are read with the calling thread inside the namespace (/proc/thread-self/net shows
the thread's namespace). The parsers are pure.
"""

import ipaddress
from typing import NamedTuple

from chatmaild.relay.netns import entered

TCP_LISTEN = "0A"
UNIX_ACCEPTCON = 0x10000  # __SO_ACCEPTCON: the socket listens
PROC_NET = "/proc/thread-self/net"


class Listening(NamedTuple):
    tcp: frozenset  # {(ip address text, port)}
    unix: frozenset  # {path}

    def tcp_port(self, port, host="127.0.0.1"):
        """Whether something listens on host:port, or on the wildcard address."""
        wildcard = "::" if ":" in host else "0.0.0.0"
        return (host, port) in self.tcp or (wildcard, port) in self.tcp

    def unix_path(self, path):
        return str(path) in self.unix


def _ip(hex_addr):
    raw = bytes.fromhex(hex_addr)
    if len(raw) == 4:
        return str(ipaddress.IPv4Address(raw[::-1]))
    # IPv6: four 32-bit words, each in host (little-endian) order
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
    return str(ipaddress.IPv6Address(words))


def parse_tcp(text):
    """{(ip, port)} of the listening sockets in /proc/net/tcp or tcp6 text."""
    out = set()
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 4 or fields[3] != TCP_LISTEN:
            continue
        addr, _, port = fields[1].partition(":")
        out.add((_ip(addr), int(port, 16)))
    return out


def parse_unix(text):
    """{path} of the listening unix sockets in /proc/net/unix text."""
    out = set()
    for line in text.splitlines()[1:]:
        fields = line.split(maxsplit=7)
        if len(fields) == 8 and int(fields[3], 16) & UNIX_ACCEPTCON:
            out.add(fields[7])
    return out


def _read(name):
    try:
        with open(f"{PROC_NET}/{name}") as f:
            return f.read()
    except FileNotFoundError:  # no IPv6 in this kernel
        return ""


def snapshot(netns=None):
    """What listens now in `netns` (None: the caller's namespace)."""
    with entered(netns):
        tcp, tcp6, unix = _read("tcp"), _read("tcp6"), _read("unix")
    return Listening(frozenset(parse_tcp(tcp) | parse_tcp(tcp6)), frozenset(parse_unix(unix)))
