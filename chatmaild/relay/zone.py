"""DNS data of a test network of relays, as unbound `local-zone`/`local-data` lines.

Pure: the facts of each relay (domain, address, DKIM public key, MTA-STS policy id) go in,
the records a real relay publishes come out: A for the domain and its `mta-sts.`/`www.`
names, MX pointing at the domain itself, `opendkim._domainkey` TXT and `_mta-sts` TXT.
Tests add zones of their own (e.g. a sender domain with several DKIM selectors).
"""

import dataclasses

DKIM_SELECTOR = "opendkim"
TTL = 300
# One character-string of a TXT record holds at most 255 octets (RFC 1035 3.3).
TXT_CHUNK = 255


@dataclasses.dataclass(frozen=True)
class Record:
    name: str  # absolute name without the trailing dot
    type: str  # "A", "MX" or "TXT"
    value: str  # A: an IPv4 address; MX: "PREF HOST"; TXT: the whole text


@dataclasses.dataclass(frozen=True)
class Zone:
    domain: str
    records: tuple[Record, ...]


def dkim_txt(public_key_b64):
    """The DKIM key record text for an RSA public key (base64 DER SubjectPublicKeyInfo).

    An empty key is a revoked one (RFC 6376 3.6.1: `p=` with no data).
    """
    return f"v=DKIM1; k=rsa; p={public_key_b64}"


def dkim_record(domain, txt, selector=DKIM_SELECTOR):
    return Record(f"{selector}._domainkey.{domain}", "TXT", txt)


def relay_zone(domain, address, dkim=None, mta_sts_id="1"):
    """The records of a chatmail relay for `domain` reachable at `address`.

    `dkim` is the text of its `opendkim._domainkey` record (None: not published).
    """
    records = [
        Record(domain, "A", address),
        Record(f"mta-sts.{domain}", "A", address),
        Record(f"www.{domain}", "A", address),
        Record(domain, "MX", f"10 {domain}"),
        Record(f"_mta-sts.{domain}", "TXT", f"v=STSv1; id={mta_sts_id}"),
    ]
    if dkim is not None:
        records.append(dkim_record(domain, dkim))
    return Zone(domain, tuple(records))


def txt_strings(text):
    """`text` as the quoted character-strings of one TXT record (each at most 255 octets)."""
    if '"' in text or "'" in text or "\\" in text or not text.isprintable():
        raise ValueError(f"TXT text needs escaping, not supported here: {text!r}")
    if not text:
        return '""'
    chunks = [text[i : i + TXT_CHUNK] for i in range(0, len(text), TXT_CHUNK)]
    return " ".join(f'"{chunk}"' for chunk in chunks)


def _rdata(record):
    if record.type == "TXT":
        return txt_strings(record.value)
    if record.type == "MX":
        pref, host = record.value.split()
        return f"{pref} {host}."
    return record.value


def local_data_lines(zones):
    """unbound.conf `server:` lines serving `zones` and nothing else.

    Each zone is `static`: a name or type not listed is answered NXDOMAIN/NODATA at once.
    The root is static too, so no lookup ever leaves the test network (there is no
    internet to ask, and a recursive attempt would only time out).
    """
    lines = ['local-zone: "." static']
    for zone in zones:
        lines.append(f'local-zone: "{zone.domain}." static')
        for r in zone.records:
            lines.append(f"local-data: '{r.name}. {TTL} IN {r.type} {_rdata(r)}'")
    return lines
