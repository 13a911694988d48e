"""Which hosts to try for a recipient domain (pure): IP literals, MX answers, DNS errors.

The DNS lookup itself is in resolve.py; it reports one of the `Lookup` outcomes below and
`hosts_or_reply` turns that into the MX hosts in preference order, or the reply that every
recipient of the domain gets:
- an IP-literal domain (`[1.2.3.4]`, `[IPv6:...]`) is the host itself, without DNS;
- MX records: their hosts, lowest preference first (ties keep the answer's order);
- no MX record (the name exists): the domain itself (RFC 5321 5.1, the implicit MX);
- a null MX (one record `0 .`, RFC 7505): `556 5.1.10`, permanent;
- NXDOMAIN: permanent `550 5.1.2`;
- any other failure (timeout, SERVFAIL, no resolver): `421 4.4.3`, Postfix retries later.
"""

import ipaddress
from dataclasses import dataclass

from chatmaild.smtp.proto import Reply


@dataclass(frozen=True, slots=True)
class Records:
    """The MX answer: (preference, exchange without the trailing dot) pairs."""

    mx: tuple


@dataclass(frozen=True, slots=True)
class NoRecords:
    """The name exists but has no MX record."""


@dataclass(frozen=True, slots=True)
class NoDomain:
    """NXDOMAIN: the name does not exist."""


@dataclass(frozen=True, slots=True)
class Failed:
    """The lookup failed (timeout, SERVFAIL, no resolver); `why` for the reply text."""

    why: str


def domain_of(address: str) -> str:
    """The domain of an envelope address, lower-cased ("" when there is no @)."""
    local, at, domain = address.rpartition("@")
    return domain.lower() if at and local else ""


def ip_literal(domain: str) -> str | None:
    """`[1.2.3.4]` -> "1.2.3.4", `[IPv6:::1]` -> "::1"; None for anything else."""
    if not (domain.startswith("[") and domain.endswith("]")):
        return None
    inner = domain[1:-1]
    if inner[:5].lower() == "ipv6:":
        inner = inner[5:]
        try:
            return str(ipaddress.IPv6Address(inner))
        except ValueError:
            return None
    try:
        return str(ipaddress.IPv4Address(inner))
    except ValueError:
        return None


def is_ip_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False


def verifies_certificate(host: str) -> bool:
    """TLS certificates are checked except for IP literals and names starting with `_`
    (as Delta Chat core does)."""
    return not (host.startswith("_") or is_ip_address(host))


def hosts_or_reply(domain: str, lookup) -> tuple[str, ...] | Reply:
    """The MX hosts of `domain` for a lookup outcome, or the reply for all its recipients."""
    if isinstance(lookup, Records):
        records = [(pref, host.rstrip(".").lower()) for pref, host in lookup.mx]
        if len(records) == 1 and records[0][1] == "":
            return Reply(556, f"5.1.10 Domain {domain} does not accept mail (null MX)")
        hosts = [host for _, host in sorted(records, key=lambda r: r[0]) if host]
        if not hosts:
            return Reply(556, f"5.1.10 Domain {domain} does not accept mail (null MX)")
        return tuple(dict.fromkeys(hosts))
    if isinstance(lookup, NoRecords):
        return (domain,)
    if isinstance(lookup, NoDomain):
        return Reply(
            550,
            f"5.1.2 Host or domain name not found. Name service error for"
            f" name={domain} type=MX: Host not found",
        )
    why = lookup.why if isinstance(lookup, Failed) else "unknown"
    return Reply(
        421,
        f"4.4.3 Host or domain name not found. Name service error for"
        f" name={domain} type=MX: Host not found, try again ({why})",
    )
