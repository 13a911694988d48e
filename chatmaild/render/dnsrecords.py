"""The DNS records a chatmail relay publishes, and how published ones compare. Pure.

One source for both users: `python -m chatmaild.relay dns` prints them as a zone snippet for
the operator, and the two-relay test network serves them from its unbound
(chatmaild.render.zone.relay_zone). A relay for DOMAIN publishes:

required
- A (and AAAA) of DOMAIN, `www.DOMAIN` (the website) and `mta-sts.DOMAIN` (the MTA-STS
  policy), all the server's addresses;
- MX of DOMAIN: the relay itself;
- SPF `v=spf1 a mx -all`: only the relay sends for DOMAIN;
- the DKIM key `opendkim._domainkey.DOMAIN` (chatmaild.render.opendkim);
- DMARC `v=DMARC1; p=reject; adkim=s; aspf=s`: strict alignment, as filtermail checks it;
- `_mta-sts.DOMAIN` TXT `v=STSv1; id=ID`, ID a hash of the policy nginx serves, so it
  changes exactly when the policy does (RFC 8461 3.1);

optional
- SRV records for client autoconfiguration (RFC 6186, RFC 8314), as upstream's zone has;
- CAA naming the one certificate authority that may issue for DOMAIN, if given.

Upstream's `_adsp._domainkey` record is left out: ADSP (RFC 5617) is historic.

`compare(expected, published)` decides one check of `--check`: ok, missing or different,
comparing what matters for each kind of record (the key of a DKIM record, the policy tags
of DMARC, the address sets of A and AAAA...).
"""

import dataclasses
import hashlib
import ipaddress

TTL = 3600
DKIM_SELECTOR = "opendkim"
SPF = "v=spf1 a mx -all"
DMARC = "v=DMARC1; p=reject; adkim=s; aspf=s"
# (service label, port): submission, submissions, IMAP, IMAPS (RFC 6186, RFC 8314)
SRV_SERVICES = (
    ("_submission._tcp", 587),
    ("_submissions._tcp", 465),
    ("_imap._tcp", 143),
    ("_imaps._tcp", 993),
)
# One character-string of a TXT record holds at most 255 octets (RFC 1035 3.3).
TXT_CHUNK = 255

OK = "ok"
MISSING = "missing"
DIFFERENT = "different"


@dataclasses.dataclass(frozen=True)
class Record:
    name: str  # absolute name without the trailing dot
    type: str  # "A", "AAAA", "MX", "TXT", "SRV" or "CAA"
    # A/AAAA: the address; MX: "PREF HOST"; TXT: the whole text; SRV: "PRIO WEIGHT PORT
    # HOST"; CAA: 'FLAGS TAG "VALUE"'. None: not known here (an address not given, a key not
    # at hand): printed as a placeholder, and `--check` only asks that one is published.
    value: str | None
    required: bool = True
    placeholder: str = ""  # what stands for a value of None in the printout


def mta_sts_id(policy_text: str) -> str:
    """The `id=` of `_mta-sts`: 16 hex digits of the policy's SHA-256 (RFC 8461: 1 to 32
    letters and digits; it has to change when the policy changes)."""
    return hashlib.sha256(policy_text.encode()).hexdigest()[:16]


def dkim_txt(public_key_b64: str) -> str:
    """The DKIM key record text for an RSA public key (base64 DER SubjectPublicKeyInfo).

    An empty key is a revoked one (RFC 6376 3.6.1: `p=` with no data).
    """
    return f"v=DKIM1; k=rsa; p={public_key_b64}"


def dkim_name(domain: str, selector: str = DKIM_SELECTOR) -> str:
    return f"{selector}._domainkey.{domain}"


def relay_records(
    domain: str,
    *,
    ipv4: str | None = None,
    ipv6: str | None = None,
    dkim: str | None = None,
    mta_sts: str,
    caa: str | None = None,
) -> tuple[Record, ...]:
    """The records of a relay for `domain` (see the module docstring).

    `ipv4`/`ipv6`: the server's addresses (None: an A placeholder, no AAAA); `dkim`: the
    text of the DKIM key record (None: a placeholder); `mta_sts`: the `_mta-sts` id; `caa`:
    the certificate authority's domain (e.g. letsencrypt.org) or None for no CAA.
    """
    hosts = (domain, f"www.{domain}", f"mta-sts.{domain}")
    records = []
    for host in hosts:
        records.append(Record(host, "A", ipv4, placeholder="<IPv4 of the server: --ipv4>"))
        if ipv6 is not None:
            records.append(Record(host, "AAAA", ipv6))
    records += [
        Record(domain, "MX", f"10 {domain}"),
        Record(domain, "TXT", SPF),
        Record(dkim_name(domain), "TXT", dkim, placeholder="<the DKIM key record: --dkim-key>"),
        Record(f"_dmarc.{domain}", "TXT", DMARC),
        Record(f"_mta-sts.{domain}", "TXT", f"v=STSv1; id={mta_sts}"),
    ]
    for service, port in SRV_SERVICES:
        records.append(Record(f"{service}.{domain}", "SRV", f"0 1 {port} {domain}", False))
    if caa is not None:
        records.append(Record(domain, "CAA", f'0 issue "{caa}"', False))
    return tuple(records)


# -- zone-file text ------------------------------------------------------------------------------


def txt_strings(text: str) -> str:
    """`text` as the quoted character-strings of one TXT record (each at most 255 octets)."""
    if '"' in text or "'" in text or "\\" in text or not text.isprintable():
        raise ValueError(f"TXT text needs escaping, not supported here: {text!r}")
    if not text:
        return '""'
    chunks = [text[i : i + TXT_CHUNK] for i in range(0, len(text), TXT_CHUNK)]
    return " ".join(f'"{chunk}"' for chunk in chunks)


def rdata(record: Record) -> str:
    """The record's data in zone-file syntax (host names absolute, TXT quoted and split)."""
    value = record.value if record.value is not None else record.placeholder
    if record.value is None:
        return value
    if record.type == "TXT":
        return txt_strings(value)
    if record.type in ("MX", "SRV"):
        *numbers, host = value.split()
        return " ".join([*numbers, host.rstrip(".") + "."])
    return value


def zone_lines(records, ttl: int = TTL) -> list[str]:
    """The zone snippet: required records, then optional ones, a placeholder commented out."""
    width = max((len(r.name) for r in records), default=0) + 2
    lines = []
    for required, title in ((True, "required"), (False, "optional")):
        group = [r for r in records if r.required == required]
        if not group:
            continue
        lines.append(f"; {title}")
        for r in group:
            line = f"{r.name + '.':<{width}} {ttl} IN {r.type:<5} {rdata(r)}"
            lines.append(line if r.value is not None else f"; {line}")
    return lines


# -- --check: one published RRset against what is expected ---------------------------------------


@dataclasses.dataclass(frozen=True)
class Check:
    """A lookup to make and what to expect of it."""

    name: str
    type: str
    expected: tuple[str | None, ...]  # None: any value will do (a placeholder)
    required: bool
    kind: str = ""  # TXT: which records of the name count (spf, dkim, dmarc, sts)


def checks(records) -> list[Check]:
    """One check per (name, type, kind) of `records`, in their order."""
    grouped: dict[tuple, list[Record]] = {}
    for r in records:
        grouped.setdefault((r.name, r.type, txt_kind(r)), []).append(r)
    return [
        Check(name, rtype, tuple(r.value for r in group), any(r.required for r in group), kind)
        for (name, rtype, kind), group in grouped.items()
    ]


def txt_kind(record: Record) -> str:
    if record.type != "TXT":
        return ""
    if record.name.split(".", 1)[0] == "_dmarc":
        return "dmarc"
    if record.name.split(".", 1)[0] == "_mta-sts":
        return "sts"
    if "._domainkey." in record.name:
        return "dkim"
    return "spf"


def _tags(text: str) -> dict[str, str]:
    tags = {}
    for part in text.split(";"):
        key, sep, value = part.partition("=")
        if sep:
            tags[key.strip().lower()] = value.strip()
    return tags


def _counts(kind: str, text: str) -> bool:
    """Whether a published TXT text at the name is one of `kind` (other TXT records at the
    same name, such as a site verification at the apex, are not ours to judge)."""
    head = text.lstrip().lower()
    if kind == "spf":
        return head.startswith("v=spf1 ") or head == "v=spf1"
    if kind == "dmarc":
        return head.startswith("v=dmarc1")
    if kind == "sts":
        return head.startswith("v=stsv1")
    return head.startswith("v=dkim1") or "p=" in head  # v= is optional in a key record


def _normal(rtype: str, kind: str, value: str):
    """What of a value must be equal, or None if it cannot be read."""
    try:
        if rtype in ("A", "AAAA"):
            return ipaddress.ip_address(value)
        if rtype == "MX":
            return value.split()[-1].rstrip(".").lower()  # the host; the preference is free
        if rtype == "SRV":
            prio, weight, port, host = value.split()
            return int(prio), int(weight), int(port), host.rstrip(".").lower()
        if rtype == "CAA":
            flags, tag, rest = value.split(None, 2)
            return int(flags), tag.lower(), rest.strip().strip('"')
    except ValueError:
        return None
    if kind == "spf":
        return " ".join(value.lower().split())
    tags = _tags(value)
    if kind == "dkim":
        return tags.get("k", "rsa").lower(), "".join(tags.get("p", "").split())
    if kind == "dmarc":
        return tuple(tags.get(t, "").lower() for t in ("p", "adkim", "aspf"))
    if kind == "sts":
        return tags.get("id", "")
    return value


def compare(check: Check, published: list[str]) -> str:
    """OK, MISSING (nothing of the kind published) or DIFFERENT (published, but not ours)."""
    if check.type == "TXT":
        published = [text for text in published if _counts(check.kind, text)]
    if not published:
        return MISSING
    if any(value is None for value in check.expected):
        if check.kind == "dkim":  # a key must be there, whatever it is
            return OK if any(_normal("TXT", "dkim", t)[1] for t in published) else DIFFERENT
        return OK
    ours = {_normal(check.type, check.kind, v) for v in check.expected}
    theirs = {_normal(check.type, check.kind, v) for v in published}
    return OK if ours == theirs else DIFFERENT


def check_line(check: Check, status: str, published: list[str]) -> str:
    """One line of `--check` output: the status, the name and type, and what differs."""
    label = f"{status:<9} {check.name} {check.type}{'' if check.required else ' (optional)'}"
    if status == OK:
        return f"{label}: {_clip(', '.join(published))}"
    expected = [v for v in check.expected if v is not None]
    want = f"expected {_clip(', '.join(expected))}" if expected else "expected one"
    if status == MISSING:
        return f"{label}: {want}"
    return f"{label}: published {_clip(', '.join(published))}; {want}"


def _clip(text: str, limit: int = 120) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."
