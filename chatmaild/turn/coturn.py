"""coturn's turnserver.conf, rendered from chatmail.ini (pure: text out, nothing written).

The secret is not in it: coturn reads it from the `turn_secret` table of `userdb`
(secretdb.py), so the file can be rendered anywhere and shipped like any other.
"""

import dataclasses
from pathlib import Path

# Peers a relayed allocation must never reach: this host, private and special networks.
# (RFC 6890 special-purpose ranges; a TURN server open to them is a proxy into the LAN.)
DENIED_PEERS_V4 = (
    "0.0.0.0-0.255.255.255",
    "10.0.0.0-10.255.255.255",
    "100.64.0.0-100.127.255.255",
    "127.0.0.0-127.255.255.255",
    "169.254.0.0-169.254.255.255",
    "172.16.0.0-172.31.255.255",
    "192.0.0.0-192.0.0.255",
    "192.0.2.0-192.0.2.255",
    "192.88.99.0-192.88.99.255",
    "192.168.0.0-192.168.255.255",
    "198.18.0.0-198.19.255.255",
    "198.51.100.0-198.51.100.255",
    "203.0.113.0-203.0.113.255",
    "224.0.0.0-255.255.255.255",
)
DENIED_PEERS_V6 = (
    "::1",
    "::ffff:0.0.0.0-::ffff:255.255.255.255",
    "64:ff9b::-64:ff9b::ffff:ffff",
    "100::-100::ffff:ffff:ffff:ffff",
    "2001:db8::-2001:db8:ffff:ffff:ffff:ffff:ffff:ffff",
    "fc00::-fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
    "fe80::-febf:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
)
LOOPBACK = ("127.0.0.0-127.255.255.255", "::1")


@dataclasses.dataclass(frozen=True)
class TurnLayout:
    """Where coturn's files are and how it listens, for production or a local relay."""

    conf: Path
    # None: log to stdout (journald in production)
    log_file: Path | None = None
    pid_file: Path | None = None
    # empty: every address of the host
    listening_ips: tuple = ()
    relay_ip: str | None = None
    # tests on one host: peers on 127.0.0.1 (coturn refuses them otherwise)
    allow_loopback_peers: bool = False
    # ranges allowed although denied above (a private test link between relays)
    allowed_peers: tuple = ()


def production_turn_layout():
    """Debian's coturn.service reads /etc/turnserver.conf."""
    return TurnLayout(conf=Path("/etc/turnserver.conf"))


def local_turn_layout(state_dir):
    s = Path(state_dir)
    return TurnLayout(
        conf=s / "turn" / "turnserver.conf",
        log_file=s / "log" / "coturn.log",
        pid_file=s / "turn-run" / "coturn.pid",
        listening_ips=("127.0.0.1",),
        relay_ip="127.0.0.1",
        allow_loopback_peers=True,
    )


def denied_peers(allow_loopback: bool) -> tuple:
    ranges = (*DENIED_PEERS_V4, *DENIED_PEERS_V6)
    return tuple(r for r in ranges if not (allow_loopback and r in LOOPBACK))


def render_turnserver_conf(config, layout: TurnLayout) -> str:
    low, high = config.turn_relay_ports
    lines = [
        f"# coturn for the chatmail relay {config.mail_domain}: TURN for Delta Chat calls.",
        "# Rendered from chatmail.ini (chatmaild.turn.coturn); see docs/turn.md.",
        f"listening-port={config.turn_port}",
        *(f"listening-ip={ip}" for ip in layout.listening_ips),
        *([f"relay-ip={layout.relay_ip}"] if layout.relay_ip else []),
        *([f"external-ip={config.turn_external_ip}"] if config.turn_external_ip else []),
        f"min-port={low}",
        f"max-port={high}",
        f"realm={config.mail_domain}",
        "# TURN REST credentials (chatmail-turn): the secret is in the turn_secret table",
        "use-auth-secret",
        f"userdb={config.turn_db_path}",
        "fingerprint",
        "no-tls",
        "no-dtls",
        "no-cli",
        "no-tcp-relay",
        "no-multicast-peers",
        "no-software-attribute",
        "stale-nonce=600",
        *(["allow-loopback-peers"] if layout.allow_loopback_peers else []),
        *(f"denied-peer-ip={r}" for r in denied_peers(layout.allow_loopback_peers)),
        *(f"allowed-peer-ip={r}" for r in layout.allowed_peers),
        f"log-file={layout.log_file or 'stdout'}",
        "simple-log",
        *([f"pidfile={layout.pid_file}"] if layout.pid_file else []),
    ]
    return "\n".join(lines) + "\n"
