"""MX lookups with dnspython's async resolver, reported as mx.py's outcomes (thin I/O)."""

import dns.asyncresolver
import dns.exception
import dns.resolver

from .mx import Failed, NoDomain, NoRecords, Records

LIFETIME = 20.0


class MxResolver:
    """`await lookup(domain)` -> Records | NoRecords | NoDomain | Failed.

    The resolvers of /etc/resolv.conf (read at the first lookup), or `nameserver` (IP, port).
    """

    def __init__(self, nameserver=None, lifetime=LIFETIME):
        self.nameserver = nameserver
        self.lifetime = lifetime
        self._resolver = None

    def _get(self):
        if self._resolver is None:
            if self.nameserver:
                resolver = dns.asyncresolver.Resolver(configure=False)
                resolver.nameservers = [self.nameserver[0]]
                resolver.port = self.nameserver[1]
            else:
                resolver = dns.asyncresolver.Resolver()
            resolver.lifetime = self.lifetime
            self._resolver = resolver
        return self._resolver

    async def lookup(self, domain: str):
        try:
            resolver = self._get()
        except dns.resolver.NoResolverConfiguration:
            return Failed("no resolver in /etc/resolv.conf")
        try:
            answer = await resolver.resolve(domain, "MX", search=False)
        except dns.resolver.NXDOMAIN:
            return NoDomain()
        except dns.resolver.NoAnswer:
            return NoRecords()
        except dns.resolver.NoNameservers:
            return Failed("no name server answered")
        except dns.exception.Timeout:
            return Failed("timeout")
        except dns.exception.DNSException as e:
            return Failed(type(e).__name__)
        return Records(tuple((rr.preference, rr.exchange.to_text()) for rr in answer))
