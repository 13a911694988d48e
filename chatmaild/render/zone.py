"""DNS data of a test network of relays, as unbound `local-zone`/`local-data` lines.

Pure: the facts of each relay (domain, address, DKIM public key, MTA-STS policy id) go in,
the records a real relay publishes come out, from the one list `python -m chatmaild.relay
dns` prints (chatmaild.render.dnsrecords): A for the domain and its `mta-sts.`/`www.` names,
MX pointing at the domain itself, SPF, `opendkim._domainkey` TXT, DMARC, `_mta-sts` TXT and
the SRV records. Tests add zones of their own (e.g. a sender domain with several DKIM
selectors).
"""

import dataclasses

from chatmaild.render.dnsrecords import (
    DKIM_SELECTOR,
    TXT_CHUNK,
    Record,
    dkim_txt,
    rdata,
    relay_records,
    txt_strings,
)

__all__ = [
    "DKIM_SELECTOR",
    "TTL",
    "TXT_CHUNK",
    "Record",
    "Zone",
    "dkim_record",
    "dkim_txt",
    "local_data_lines",
    "relay_zone",
    "txt_strings",
]

TTL = 300


@dataclasses.dataclass(frozen=True)
class Zone:
    domain: str
    records: tuple[Record, ...]


def dkim_record(domain, txt, selector=DKIM_SELECTOR):
    return Record(f"{selector}._domainkey.{domain}", "TXT", txt)


def relay_zone(domain, address, dkim=None, mta_sts_id="1"):
    """The records of a chatmail relay for `domain` reachable at `address`.

    `dkim` is the text of its `opendkim._domainkey` record (None: not published).
    """
    records = relay_records(domain, ipv4=address, dkim=dkim, mta_sts=mta_sts_id)
    return Zone(domain, tuple(r for r in records if r.value is not None))


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
            lines.append(f"local-data: '{r.name}. {TTL} IN {r.type} {rdata(r)}'")
    return lines
