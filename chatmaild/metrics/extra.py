"""chatmail-extra-metrics: the Prometheus textfile collector of the relay.

    chatmail-extra-metrics [CONFIG] [--textfile-dir DIR | --output FILE]
                           [--cert [DOMAIN=]PATH ...] [--acme-dir DIR]

Collects fail2ban bans per jail, WireGuard handshake age and transfer per peer, the Postfix
queue depth, Dovecot's connected users and TLS certificate expiry, and writes them atomically
(temp file + rename) to DIR/chatmail_extra.prom or FILE (stdout when neither is given). Every
source is optional: a missing tool or an error drops its families with one line on stderr and
the rest is still written. Run it every minute (systemd timer or cron).

With CONFIG (chatmail.ini), the relay's own certificate is reported too: the one its Postfix,
Dovecot and nginx use, `/var/lib/acme/live/<mail_domain>/fullchain` (`--acme-dir` replaces
`/var/lib/acme/live`), when that file exists.
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily

from . import extraparse

TOOL_TIMEOUT = 20
PROM_NAME = "chatmail_extra.prom"
# Where the relay's certificates live (chatmaild.render.files.production_layout: tls_cert).
ACME_LIVE_DIR = Path("/var/lib/acme/live")

# every family this collector can write; the dashboard consistency test reads it
FAMILY_NAMES = (
    "fail2ban_banned_total",
    "fail2ban_bans_total",
    "wireguard_last_handshake_seconds",
    "wireguard_received_bytes_total",
    "wireguard_sent_bytes_total",
    "postfix_queue_depth",
    "dovecot_connected_users",
    "tls_cert_expiry_days",
)


class SourceError(Exception):
    pass


def run_tool(*argv) -> str:
    try:
        proc = subprocess.run(
            argv, capture_output=True, text=True, timeout=TOOL_TIMEOUT, errors="replace"
        )
    except FileNotFoundError:
        raise SourceError(f"{argv[0]} not found") from None
    except subprocess.TimeoutExpired:
        raise SourceError(f"{argv[0]} timed out after {TOOL_TIMEOUT}s") from None
    except OSError as exc:
        raise SourceError(f"{argv[0]}: {exc.strerror}") from None
    if proc.returncode != 0:
        first = (proc.stderr.strip().splitlines() or [""])[0][:200]
        raise SourceError(f"{' '.join(argv)} exited {proc.returncode}: {first}")
    return proc.stdout


def collect_fail2ban():
    banned = GaugeMetricFamily(
        "fail2ban_banned_total", "Addresses currently banned by fail2ban", labels=["jail"]
    )
    bans = CounterMetricFamily(
        "fail2ban_bans", "Bans issued by fail2ban since its start", labels=["jail"]
    )
    for jail in extraparse.fail2ban_jails(run_tool("fail2ban-client", "status")):
        jail_status = run_tool("fail2ban-client", "status", jail)
        current, total = extraparse.fail2ban_jail_counts(jail_status)
        banned.add_metric([jail], current)
        bans.add_metric([jail], total)
    return [banned, bans]


def collect_wireguard(now: float):
    handshake = GaugeMetricFamily(
        "wireguard_last_handshake_seconds",
        "Seconds since the latest handshake with the peer (+Inf: never)",
        labels=["interface", "peer"],
    )
    rx = CounterMetricFamily(
        "wireguard_received_bytes", "Bytes received from the peer", labels=["interface", "peer"]
    )
    tx = CounterMetricFamily(
        "wireguard_sent_bytes", "Bytes sent to the peer", labels=["interface", "peer"]
    )
    for p in extraparse.wireguard_peers(run_tool("wg", "show", "all", "dump"), now):
        labels = [p["interface"], p["peer"]]
        handshake.add_metric(labels, p["handshake_age"])
        rx.add_metric(labels, p["rx"])
        tx.add_metric(labels, p["tx"])
    return [handshake, rx, tx]


def collect_postfix_queue():
    depth = extraparse.postqueue_depth(run_tool("postqueue", "-j"))
    return [GaugeMetricFamily("postfix_queue_depth", "Messages in the Postfix queue", value=depth)]


def collect_dovecot_users():
    users = extraparse.doveadm_who_users(run_tool("doveadm", "who", "-1"))
    return [
        GaugeMetricFamily(
            "dovecot_connected_users", "Distinct users with an open Dovecot session", value=users
        )
    ]


def cert_expiry_days(path: Path, now: float) -> tuple[str, float]:
    """(first DNS name or CN of the certificate, days until notAfter) of a PEM file."""
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
    except OSError as exc:
        raise SourceError(f"{path}: {exc.strerror}") from None
    except ValueError as exc:
        raise SourceError(f"{path}: not a PEM certificate ({exc})") from None
    name = ""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        names = san.value.get_values_for_type(x509.DNSName)
        name = names[0] if names else ""
    except x509.ExtensionNotFound:
        pass
    if not name:
        cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        name = str(cns[0].value) if cns else path.name
    not_after = cert.not_valid_after_utc.timestamp()
    return name, round((not_after - now) / 86400, 3)


def parse_cert_spec(spec: str) -> tuple[str, Path]:
    """`[DOMAIN=]PATH` -> (DOMAIN or "", PATH)."""
    domain, sep, path = spec.partition("=")
    if not sep:
        domain, path = "", spec
    return domain, Path(path)


def relay_cert(config_path: str, acme_dir: Path = ACME_LIVE_DIR) -> tuple[str, Path]:
    """(mail_domain, path of its certificate chain) of the relay configured in chatmail.ini."""
    from chatmaild.config import load_config_or_exit

    domain = load_config_or_exit(config_path).mail_domain
    return domain, Path(acme_dir) / domain / "fullchain"


def cert_list(specs: list[str], relay: tuple[str, Path] | None, err=sys.stderr):
    """The (domain, path) pairs to report: each --cert, then the relay's own certificate
    unless a --cert already names its domain or file, or the file does not exist (one
    line on `err`, since a relay without its certificate yet is no error)."""
    certs = [parse_cert_spec(spec) for spec in specs]
    if relay is None:
        return certs
    domain, path = relay
    if any(d == domain or p == path for d, p in certs):
        return certs
    if path.exists():
        certs.append((domain, path))
    else:
        print(f"chatmail-extra-metrics: tls certificates: {path} not found", file=err)
    return certs


def collect_certs(certs: list, now: float, err=sys.stderr):
    """One tls_cert_expiry_days sample per readable certificate (each a `[DOMAIN=]PATH`
    spec or a (domain, path) pair); a bad one costs only its own sample and one line."""
    family = GaugeMetricFamily(
        "tls_cert_expiry_days", "Days until the TLS certificate expires", labels=["domain"]
    )
    for cert in certs:
        domain, path = parse_cert_spec(cert) if isinstance(cert, str) else cert
        try:
            name, days = cert_expiry_days(path, now)
        except SourceError as exc:
            print(f"chatmail-extra-metrics: tls certificates: dropped: {exc}", file=err)
            continue
        family.add_metric([domain or name], days)
    return [family]


class Collected:
    """The families gathered in one run, as a prometheus Collector."""

    def __init__(self, families):
        self.families = families

    def collect(self):
        return iter(self.families)


def gather(certs: list, now: float, err=sys.stderr) -> list:
    sources = [
        ("fail2ban", collect_fail2ban),
        ("wireguard", lambda: collect_wireguard(now)),
        ("postfix queue", collect_postfix_queue),
        ("dovecot users", collect_dovecot_users),
    ]
    if certs:
        sources.append(("tls certificates", lambda: collect_certs(certs, now, err)))
    families = []
    for name, collect in sources:
        try:
            families.extend(collect())
        except (SourceError, ValueError) as exc:
            print(f"chatmail-extra-metrics: {name}: dropped: {exc}", file=err)
    return families


def render(families) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(Collected(families))
    return generate_latest(registry)


def write_atomic(path: Path, data: bytes):
    """Write `data` to `path` via a temp file in the same directory and a rename."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix="." + path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def main(argv=None):
    p = argparse.ArgumentParser(prog="chatmail-extra-metrics", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "config", nargs="?", help="chatmail.ini: report the certificate of its mail_domain"
    )
    where = p.add_mutually_exclusive_group()
    where.add_argument("--textfile-dir", type=Path, metavar="DIR")
    where.add_argument("--output", type=Path, metavar="FILE")
    p.add_argument(
        "--cert",
        action="append",
        default=[],
        metavar="[DOMAIN=]PATH",
        help="PEM certificate to report expiry for (repeatable)",
    )
    p.add_argument(
        "--acme-dir",
        type=Path,
        default=ACME_LIVE_DIR,
        metavar="DIR",
        help=f"with CONFIG: DIR/<mail_domain>/fullchain is the relay's certificate "
        f"(default {ACME_LIVE_DIR})",
    )
    args = p.parse_args(argv)
    relay = relay_cert(args.config, args.acme_dir) if args.config else None
    certs = cert_list(args.cert, relay)
    data = render(gather(certs, time.time()))
    target = args.output
    if args.textfile_dir is not None:
        target = args.textfile_dir / PROM_NAME
    if target is None:
        sys.stdout.buffer.write(data)
        return 0
    try:
        write_atomic(target, data)
    except OSError as exc:
        print(f"chatmail-extra-metrics: {target}: {exc.strerror}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
