"""`dns --check`: the published records, looked up with dnspython. The only I/O of the DNS
step; what counts as ok, missing or different is chatmaild.render.dnsrecords.compare."""

import dns.exception
import dns.resolver

TIMEOUT = 5.0


class LookupFailed(Exception):
    """No answer could be had (timeout, SERVFAIL, REFUSED...): neither found nor missing."""


def resolver(nameserver: str | None = None, timeout: float = TIMEOUT) -> dns.resolver.Resolver:
    """The system's resolver, or one asking only `nameserver` ("IP" or "IP:PORT")."""
    if nameserver is None:
        res = dns.resolver.Resolver()
    else:
        res = dns.resolver.Resolver(configure=False)
        host, port = split_nameserver(nameserver)
        res.nameservers = [host]
        res.port = port
    res.lifetime = timeout
    return res


def split_nameserver(text: str) -> tuple[str, int]:
    """ "IP", "IP:PORT", "[IPv6]:PORT" or a bare IPv6 address -> (IP, port)."""
    if text.startswith("["):
        host, _, port = text[1:].partition("]:")
        return host.rstrip("]"), int(port or 53)
    if text.count(":") == 1:
        host, port = text.split(":")
        return host, int(port)
    return text, 53


def lookup(res: dns.resolver.Resolver, name: str, rtype: str) -> list[str]:
    """The published values of `name`/`rtype` in dnsrecords' text forms; [] if none."""
    try:
        answer = res.resolve(name, rtype, search=False, raise_on_no_answer=False)
    except dns.resolver.NXDOMAIN:
        return []
    except dns.exception.Timeout:
        raise LookupFailed("timeout") from None
    except dns.resolver.NoNameservers:
        raise LookupFailed("no nameserver answered") from None
    except dns.exception.DNSException as e:
        raise LookupFailed(type(e).__name__) from None
    if answer.rrset is None:
        return []
    return sorted(_text(rtype, rd) for rd in answer.rrset)


def _text(rtype: str, rd) -> str:
    if rtype in ("A", "AAAA"):
        return rd.address
    if rtype == "MX":
        return f"{rd.preference} {rd.exchange.to_text(omit_final_dot=True)}"
    if rtype == "TXT":
        return b"".join(rd.strings).decode("utf-8", "replace")
    if rtype == "SRV":
        return f"{rd.priority} {rd.weight} {rd.port} {rd.target.to_text(omit_final_dot=True)}"
    if rtype == "CAA":
        tag, value = rd.tag.decode("ascii", "replace"), rd.value.decode("utf-8", "replace")
        return f'{rd.flags} {tag} "{value}"'
    return rd.to_text()
