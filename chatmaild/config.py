"""chatmail.ini: parsed and validated once into a frozen `Config`.

The file has one `[params]` section of `key = value` lines (`#` comments, indented
continuation lines for long lists). Every key of SPEC section 2 has a default except
`mail_domain`. A bad value stops the daemon with one line naming the file, the key and the
value; an unknown key is only a warning, so a file written for a newer relay still starts.
"""

import configparser
import dataclasses
import ipaddress
import logging
import sys
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType

log = logging.getLogger("chatmaild.config")

_SIZE_SUFFIXES = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}

# Deployment keys of the relay: parsed and kept in `params`, not used by the daemons.
DEPLOYMENT_KEYS = frozenset({"mtail_address", "passdb_path", "addr_v4", "addr_v6"})


class ConfigError(Exception):
    """A configuration problem, described in one line."""


def parse_size(text):
    """`500M` -> 524288000; plain digits are bytes. Suffixes K, M, G, T (powers of 1024)."""
    value = text.strip().upper()
    if value.endswith("B") and len(value) > 1 and value[-2] in "KMGT":
        value = value[:-1]
    suffix = value[-1:] if value[-1:] in "KMGT" else ""
    number = value[: len(value) - len(suffix)].strip()
    if not number.isdigit():
        raise ValueError("expected a size like 500M, 1G or a number of bytes")
    return int(number) * _SIZE_SUFFIXES[suffix]


def parse_bool(text):
    value = text.strip().lower()
    if value in ("true", "yes", "1", "on"):
        return True
    if value in ("false", "no", "0", "off", ""):
        return False
    raise ValueError("expected true or false")


def parse_int(text):
    value = text.strip()
    if not value.lstrip("-").isdigit():
        raise ValueError("expected a whole number")
    return int(value)


def parse_port(text):
    port = parse_int(text)
    if not 0 < port < 65536:
        raise ValueError("expected a port number 1-65535")
    return port


def parse_nonneg_int(text):
    number = parse_int(text)
    if number < 0:
        raise ValueError("expected a number >= 0")
    return number


def parse_float(text):
    try:
        return float(text.strip())
    except ValueError:
        raise ValueError("expected a number") from None


def parse_list(text):
    return tuple(text.split())


def parse_path(text):
    value = text.strip()
    if not value:
        raise ValueError("expected a path")
    return Path(value)


def parse_str(text):
    return text.strip()


def parse_tls_cert(text):
    """`tls_cert`: `self` says the certificate is self-signed; anything else (empty, `acme`)
    a CA-signed one."""
    return text.strip().lower()


def parse_listen(text):
    """Metrics endpoint: empty (off), `HOST:PORT` or `unix:/path`."""
    value = text.strip()
    if not value or value.startswith("unix:/"):
        return value
    host, sep, port = value.rpartition(":")
    if not sep or not host:
        raise ValueError("expected HOST:PORT or unix:/path")
    parse_port(port)
    return value


def parse_nameserver(text):
    """`filtermail_dkim_nameserver`: empty (the system resolver), or `IP:PORT` / `[IPv6]:PORT`."""
    value = text.strip()
    if not value:
        return ()
    host, sep, port = value.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError("expected IP:PORT of a DNS resolver") from None
    if not sep:
        raise ValueError("expected IP:PORT of a DNS resolver")
    return (host, parse_port(port))


def parse_cert_and_key(text):
    """`tls_external_cert_and_key`: empty, or two absolute paths (certificate, key)."""
    parts = tuple(text.split())
    if not parts:
        return ()
    if len(parts) != 2 or not all(p.startswith("/") for p in parts):
        raise ValueError("expected two absolute paths: CERTIFICATE KEY")
    return tuple(Path(p) for p in parts)


def parse_port_range(text):
    """`49152-65535` -> (49152, 65535): the UDP ports coturn relays through."""
    low, sep, high = text.strip().partition("-")
    if not sep:
        raise ValueError("expected a port range like 49152-65535")
    low, high = parse_port(low), parse_port(high)
    if low > high:
        raise ValueError("expected the lower port first")
    return (low, high)


def parse_external_ip(text):
    """`turn_external_ip`: empty, `PUBLIC` or `PUBLIC/PRIVATE` IP addresses (coturn's form)."""
    value = text.strip()
    for part in value.split("/") if value else ():
        try:
            ipaddress.ip_address(part)
        except ValueError:
            raise ValueError("expected an IP address, or PUBLIC/PRIVATE addresses") from None
    if value.count("/") > 1:
        raise ValueError("expected an IP address, or PUBLIC/PRIVATE addresses")
    return value


def parse_contact(text):
    """`admin_contact`: an email address (published as mailto:) or an https: URL."""
    value = text.strip()
    if value.startswith("mailto:"):
        value = value[len("mailto:") :]
    if value.startswith("https://") and len(value) > len("https://"):
        if any(c.isspace() for c in value):
            raise ValueError("expected a URL without spaces")
        return value
    local, sep, domain = value.rpartition("@")
    if not sep or not local or not domain or any(c.isspace() or c in "<>," for c in value):
        raise ValueError("expected an email address or an https:// URL")
    return value


def address_domain_of(mail_domain):
    """The domain part of the relay's addresses: `[1.2.3.4]` for an IP-only relay."""
    try:
        ipaddress.IPv4Address(mail_domain)
    except ValueError:
        return mail_domain
    return f"[{mail_domain}]"


def parse_domain(text):
    value = text.strip()
    if not value or any(c in value for c in "/@ \t\0") or value.startswith("."):
        raise ValueError("expected a domain name or an IPv4 address")
    return value


@dataclasses.dataclass(frozen=True)
class Config:
    path: Path
    mail_domain: str
    ipv4_relay: bool
    address_domain: str
    max_user_send_per_minute: int
    max_user_send_burst_size: int
    max_mailbox_size: int
    max_mailbox_size_mb: int
    max_message_size: int
    delete_mails_after: int
    delete_large_after: int
    delete_inactive_users_after: int
    username_min_length: int
    username_max_length: int
    password_min_length: int
    filtermail_smtp_port: int
    filtermail_smtp_port_incoming: int
    postfix_reinject_port: int
    postfix_reinject_port_incoming: int
    mailboxes_dir: Path
    passthrough_senders: tuple
    passthrough_recipients: tuple
    iroh_relay: str
    iroh_relay_listen: str
    iroh_relay_max_clients: int
    turn_socket_path: Path
    turn_port: int
    turn_relay_ports: tuple
    turn_external_ip: str
    turn_db_path: Path
    admin_contact: str
    notification_url: str
    max_load_1m: float
    min_available_memory: int
    min_free_disk_space: int
    nocreate_file: Path
    metrics_filtermail_outgoing: str
    metrics_filtermail_incoming: str
    metrics_doveauth: str
    metrics_metadata: str
    metrics_lastlogin: str
    metrics_logmetrics: str
    metrics_filtermail_transport: str
    metrics_irohrelay: str
    filtermail_http_port_incoming: int
    filtermail_lmtp_port_transport: int
    filtermail_transport_smtp_memory: int
    filtermail_dkim_check: bool
    filtermail_dkim_nameserver: tuple
    max_smtp_connections: int
    max_imap_connections: int
    tls_external_cert_and_key: tuple
    tls_cert: str
    www_folder: str
    acme_email: str
    privacy_postal: str
    privacy_mail: str
    privacy_pdo: str
    privacy_supervisor: str
    disable_ipv6: bool
    imap_rawlog: bool
    imap_compress: bool
    params: Mapping = dataclasses.field(repr=False)


# key -> (parser, default text or a function of mail_domain). Defaults go through the parser.
SCHEMA = {
    "max_user_send_per_minute": (parse_nonneg_int, "60"),
    "max_user_send_burst_size": (parse_nonneg_int, "10"),
    "max_mailbox_size": (parse_size, "500M"),
    "max_message_size": (parse_size, "31457280"),
    "delete_mails_after": (parse_nonneg_int, "20"),
    "delete_large_after": (parse_nonneg_int, "7"),
    "delete_inactive_users_after": (parse_nonneg_int, "90"),
    "username_min_length": (parse_nonneg_int, "9"),
    "username_max_length": (parse_nonneg_int, "9"),
    "password_min_length": (parse_nonneg_int, "9"),
    "filtermail_smtp_port": (parse_port, "10080"),
    "filtermail_smtp_port_incoming": (parse_port, "10081"),
    "postfix_reinject_port": (parse_port, "10025"),
    "postfix_reinject_port_incoming": (parse_port, "10026"),
    "mailboxes_dir": (parse_path, lambda domain: f"/home/vmail/mail/{domain}"),
    "passthrough_senders": (parse_list, ""),
    "passthrough_recipients": (parse_list, ""),
    "iroh_relay": (parse_str, lambda domain: f"https://{domain}"),
    # chatmail-iroh-relay: where it listens (nginx proxies /relay, /ping, /generate_204 to
    # it; empty: `relay up` does not run it) and how many clients it serves at once.
    # metadata advertises iroh_relay only while GET /ping there answers 200 (empty: not
    # probed, iroh_relay is served elsewhere).
    "iroh_relay_listen": (parse_listen, "127.0.0.1:3340"),
    "iroh_relay_max_clients": (parse_nonneg_int, "10000"),
    "turn_socket_path": (parse_path, "/run/chatmail-turn/turn.socket"),
    # TURN (coturn, docs/turn.md): the port clients use (UDP and TCP), the UDP ports it
    # relays through, the public IP address behind a NAT, the database holding the secret
    "turn_port": (parse_port, "3478"),
    "turn_relay_ports": (parse_port_range, "49152-65535"),
    "turn_external_ip": (parse_external_ip, ""),
    "turn_db_path": (parse_path, "/var/lib/chatmail-turn/turndb"),
    # /shared/admin (IMAP METADATA): who runs the relay. An address on the relay itself
    # gets a mailbox of its own (docs/turn.md, "Admin contact").
    "admin_contact": (parse_contact, lambda domain: f"postmaster@{address_domain_of(domain)}"),
    "notification_url": (parse_str, "https://notifications.delta.chat/notify"),
    "max_load_1m": (parse_float, "5"),
    "min_available_memory": (parse_size, "200M"),
    "min_free_disk_space": (parse_size, "1G"),
    "nocreate_file": (parse_path, "/etc/chatmail-nocreate"),
    "metrics_filtermail_outgoing": (parse_listen, ""),
    "metrics_filtermail_incoming": (parse_listen, ""),
    "metrics_doveauth": (parse_listen, ""),
    "metrics_metadata": (parse_listen, ""),
    "metrics_lastlogin": (parse_listen, ""),
    "metrics_logmetrics": (parse_listen, ""),
    "metrics_filtermail_transport": (parse_listen, ""),
    "metrics_irohrelay": (parse_listen, ""),
    # Upstream 1.12 keys: the mxdeliv (HTTP, behind nginx) and transport (LMTP, Postfix's
    # default_transport, chatmaild.transport) ports.
    "filtermail_http_port_incoming": (parse_port, "10082"),
    "filtermail_lmtp_port_transport": (parse_port, "10083"),
    # Seconds a host stays SMTP-only after HTTPS failed and SMTP delivered (upstream: 30 min).
    "filtermail_transport_smtp_memory": (parse_nonneg_int, "1800"),
    # DKIM verification of incoming mail; off only for tests, and then logged loudly.
    "filtermail_dkim_check": (parse_bool, "true"),
    # The resolver for DKIM keys: empty is /etc/resolv.conf; IP:PORT for tests and benchmarks.
    "filtermail_dkim_nameserver": (parse_nameserver, ""),
    "max_smtp_connections": (parse_nonneg_int, "1000"),
    "max_imap_connections": (parse_nonneg_int, "10000"),
    "tls_external_cert_and_key": (parse_cert_and_key, ""),
    # `self`: the relay's certificate is self-signed (chatmail-web answers dclogin_url)
    "tls_cert": (parse_tls_cert, ""),
    "www_folder": (parse_str, ""),
    "acme_email": (parse_str, ""),
    "privacy_postal": (parse_str, ""),
    "privacy_mail": (parse_str, ""),
    "privacy_pdo": (parse_str, ""),
    "privacy_supervisor": (parse_str, ""),
    "disable_ipv6": (parse_bool, "false"),
    "imap_rawlog": (parse_bool, "false"),
    "imap_compress": (parse_bool, "false"),
}


def _read_params(path):
    parser = configparser.ConfigParser(
        interpolation=None,
        comment_prefixes=("#", ";"),
        inline_comment_prefixes=None,
        strict=False,
        empty_lines_in_values=False,
        default_section="__no_defaults__",
    )
    parser.optionxform = str  # keys are case-sensitive, as in the Python chatmaild
    try:
        with open(path, encoding="utf-8") as f:
            parser.read_file(f)
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read: {e}") from None
    except configparser.Error as e:
        first_line = str(e).splitlines()[0]
        raise ConfigError(f"{path}: not an ini file: {first_line}") from None
    if not parser.has_section("params"):
        raise ConfigError(f"{path}: no [params] section")
    return {key: value for key, value in parser.items("params")}


def read_config(path):
    """Read and validate `path`; raise ConfigError with a one-line message on failure."""
    path = Path(path)
    params = _read_params(path)

    def bad(key, value, why):
        return ConfigError(f"{path}: {key} = {value!r}: {why}")

    if "mail_domain" not in params:
        raise ConfigError(f"{path}: mail_domain: missing (it is required)")
    try:
        mail_domain = parse_domain(params["mail_domain"])
    except ValueError as e:
        raise bad("mail_domain", params["mail_domain"], e) from None

    address_domain = address_domain_of(mail_domain)
    ipv4_relay = address_domain != mail_domain

    values = {}
    for key, (parser, default) in SCHEMA.items():
        if key in params:
            text = params[key]
        else:
            text = default(mail_domain) if callable(default) else default
        try:
            values[key] = parser(text)
        except ValueError as e:
            raise bad(key, text, e) from None

    if values["username_min_length"] > values["username_max_length"]:
        raise bad(
            "username_min_length",
            params.get("username_min_length", "9"),
            "greater than username_max_length",
        )

    unknown = sorted(set(params) - set(SCHEMA) - DEPLOYMENT_KEYS - {"mail_domain"})
    if unknown:
        log.warning("%s: unknown keys ignored: %s", path, ", ".join(unknown))

    return Config(
        path=path,
        mail_domain=mail_domain,
        ipv4_relay=ipv4_relay,
        address_domain=address_domain,
        max_mailbox_size_mb=values["max_mailbox_size"] // (1024 * 1024),
        params=MappingProxyType(dict(params)),
        **values,
    )


def load_config_or_exit(path):
    """For entry points: the Config, or one line on stderr and exit status 2."""
    try:
        return read_config(path)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
