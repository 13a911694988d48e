"""MX lookups with dnspython's async resolver, reported as mx.py's outcomes (thin I/O).

Answers are kept for their TTL (at most MAX_TTL; NXDOMAIN and "no MX" for NEGATIVE_TTL), so
a burst to one domain costs one query; failures are not kept. At most MAX_CACHED domains.
"""

import time

import dns.asyncresolver
import dns.exception
import dns.resolver

from .mx import Failed, NoDomain, NoRecords, Records

LIFETIME = 20.0
MAX_TTL = 3600.0
NEGATIVE_TTL = 60.0
MAX_CACHED = 10_000


class MxResolver:
    """`await lookup(domain)` -> Records | NoRecords | NoDomain | Failed.

    The resolvers of /etc/resolv.conf (read at the first lookup), or `nameserver` (IP, port).
    """

    def __init__(self, nameserver=None, lifetime=LIFETIME, clock=time.monotonic):
        self.nameserver = nameserver
        self.lifetime = lifetime
        self.clock = clock
        self._resolver = None
        self._cache: dict[str, tuple[float, object]] = {}
        self.queries = 0

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
        cached = self._cache.get(domain)
        now = self.clock()
        if cached is not None:
            if cached[0] > now:
                return cached[1]
            del self._cache[domain]
        outcome, ttl = await self._query(domain)
        if ttl > 0:
            if len(self._cache) >= MAX_CACHED:
                self._cache = {d: v for d, v in self._cache.items() if v[0] > now}
                if len(self._cache) >= MAX_CACHED:
                    self._cache.clear()
            self._cache[domain] = (now + ttl, outcome)
        return outcome

    async def _query(self, domain: str):
        """(outcome, seconds to keep it)."""
        self.queries += 1
        try:
            resolver = self._get()
        except dns.resolver.NoResolverConfiguration:
            return Failed("no resolver in /etc/resolv.conf"), 0
        try:
            answer = await resolver.resolve(domain, "MX", search=False)
        except dns.resolver.NXDOMAIN:
            return NoDomain(), NEGATIVE_TTL
        except dns.resolver.NoAnswer:
            return NoRecords(), NEGATIVE_TTL
        except dns.resolver.NoNameservers:
            return Failed("no name server answered"), 0
        except dns.exception.Timeout:
            return Failed("timeout"), 0
        except dns.exception.DNSException as e:
            return Failed(type(e).__name__), 0
        records = Records(tuple((rr.preference, rr.exchange.to_text()) for rr in answer))
        return records, min(float(answer.rrset.ttl), MAX_TTL)
