"""DKIM key lookups: TXT records of `<selector>._domainkey.<domain>` over dnspython's asyncio
resolver, cached by their TTL, with concurrent lookups of one name sharing one query.

- A TXT answer is cached for its TTL (the smallest TTL along a CNAME chain), at most a day.
- NXDOMAIN or no TXT record (a permanent failure) is cached for the negative TTL of the
  zone's SOA (RFC 2308; dnspython computes it), at most `NEGATIVE_TTL_MAX` seconds, so a
  flood of mail with a bogus selector costs one query per name per few minutes.
- Timeouts, SERVFAIL, REFUSED and other errors are temporary and never cached: the next
  message asks again (while a query for a name is in flight, further lookups wait for it).
- The cache holds at most `max_entries` names; the least recently used go first.
- After a verification failed with cached answers, `refresh_many` asks again for the names
  whose answer is older than `REFRESH_MIN_AGE`: a sender that rotated its key (or published a
  missing one) within our TTL is not refused with a permanent 550 until the TTL runs out.

So there is at most one DNS query per key name per TTL, however many messages arrive at once,
plus at most one per `REFRESH_MIN_AGE` while mail with failing signatures keeps arriving.
"""

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable

import dns.asyncresolver
import dns.exception
import dns.name
import dns.rdatatype
import dns.resolver

from .dkimcheck import KeyFound, KeyLookup, KeyMissing, KeyTemporary

POSITIVE_TTL_MAX = 86400
NEGATIVE_TTL_MAX = 300
DEFAULT_TIMEOUT = 5.0
DEFAULT_MAX_ENTRIES = 10_000
# a cached answer is asked for again after a failed verification only when at least this old
REFRESH_MIN_AGE = 60.0


def make_resolver(nameserver: tuple[str, int] | None, timeout: float) -> dns.asyncresolver.Resolver:
    """The system resolver (/etc/resolv.conf), or one asking only `nameserver` (host, port)."""
    if nameserver is None:
        resolver = dns.asyncresolver.Resolver()
    else:
        resolver = dns.asyncresolver.Resolver(configure=False)
        resolver.nameservers = [nameserver[0]]
        resolver.port = nameserver[1]
    # EDNS with the usual 1232-byte payload: a 4096-bit key record fits one UDP answer
    # (without EDNS, answers over 512 bytes come truncated and are asked again over TCP)
    resolver.use_edns(0, 0, 1232)
    resolver.lifetime = timeout
    resolver.timeout = min(timeout, 2.0)  # per try; retried within the lifetime
    resolver.cache = None  # ours is in front of it
    return resolver


class KeyFetcher:
    """`await fetcher.lookup_many(names)` -> {name: KeyFound | KeyMissing | KeyTemporary}.

    `queries` counts the DNS lookups started (cache misses that were not coalesced).
    """

    def __init__(
        self,
        nameserver: tuple[str, int] | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        clock: Callable[[], float] = time.monotonic,
        resolver: dns.asyncresolver.Resolver | None = None,
    ):
        self.resolver = resolver if resolver is not None else make_resolver(nameserver, timeout)
        self.max_entries = max_entries
        self.clock = clock
        self.queries = 0
        # name -> (expires, stored at, answer)
        self._cache: OrderedDict[str, tuple[float, float, KeyLookup]] = OrderedDict()
        self._inflight: dict[str, asyncio.Future] = {}

    def cached(self, name: str) -> KeyLookup | None:
        entry = self._cache.get(name)
        if entry is None:
            return None
        expires, _, result = entry
        if self.clock() >= expires:
            del self._cache[name]
            return None
        self._cache.move_to_end(name)
        return result

    async def lookup(self, name: str) -> KeyLookup:
        name = name.lower().rstrip(".")
        result = self.cached(name)
        if result is not None:
            return result
        pending = self._inflight.get(name)
        if pending is not None:
            return await asyncio.shield(pending)
        future = asyncio.get_running_loop().create_future()
        self._inflight[name] = future
        try:
            self.queries += 1
            result, ttl = await self._query(name)
            if ttl > 0:
                self._store(name, result, ttl)
            future.set_result(result)
        except BaseException as e:  # cancelled: the waiting lookups must not hang
            future.set_exception(e)
            future.exception()  # retrieved: no "never retrieved" warning without waiters
            raise
        finally:
            del self._inflight[name]
        return result

    async def lookup_many(self, names: Iterable[str]) -> dict[str, KeyLookup]:
        names = list(dict.fromkeys(names))
        if len(names) == 1:
            return {names[0]: await self.lookup(names[0])}
        results = await asyncio.gather(*(self.lookup(name) for name in names))
        return dict(zip(names, results, strict=True))

    async def refresh_many(self, names: Iterable[str]) -> dict[str, KeyLookup]:
        """Ask DNS again for the cached `names` stored at least `REFRESH_MIN_AGE` ago.

        Returns {name: new answer} only for the names asked again; {} when none was, so the
        caller knows that re-verifying cannot change its verdict.
        """
        now = self.clock()
        stale = []
        for name in dict.fromkeys(n.lower().rstrip(".") for n in names):
            entry = self._cache.get(name)
            if entry is not None and now - entry[1] >= REFRESH_MIN_AGE:
                del self._cache[name]
                stale.append(name)
        if not stale:
            return {}
        return await self.lookup_many(stale)

    def _store(self, name: str, result: KeyLookup, ttl: float) -> None:
        now = self.clock()
        self._cache[name] = (now + ttl, now, result)
        self._cache.move_to_end(name)
        while len(self._cache) > self.max_entries:
            self._cache.popitem(last=False)

    async def _query(self, name: str) -> tuple[KeyLookup, float]:
        """(result, seconds to cache it; 0: do not cache)."""
        try:
            answer = await self.resolver.resolve(
                name, dns.rdatatype.TXT, search=False, raise_on_no_answer=False
            )
        except dns.resolver.NXDOMAIN as e:
            return KeyMissing(f"no such name {name}"), _negative_ttl(e)
        except dns.resolver.LifetimeTimeout:
            return KeyTemporary(f"DNS timeout for {name}"), 0
        except dns.resolver.NoNameservers as e:
            return KeyTemporary(f"DNS failure for {name}: {_rcodes(e)}"), 0
        except (dns.name.NameTooLong, dns.name.LabelTooLong, dns.name.EmptyLabel):
            return KeyMissing(f"invalid name {name}"), 0
        except dns.exception.DNSException as e:
            return KeyTemporary(f"DNS error for {name}: {type(e).__name__}"), 0
        ttl_left = answer.expiration - time.time()
        if answer.rrset is None:
            return KeyMissing(f"no TXT record at {name}"), min(ttl_left, NEGATIVE_TTL_MAX)
        records = tuple(sorted(b"".join(rdata.strings) for rdata in answer.rrset))
        return KeyFound(records), min(ttl_left, POSITIVE_TTL_MAX)


def _negative_ttl(error: dns.resolver.NXDOMAIN) -> float:
    """The SOA negative-caching TTL of an NXDOMAIN answer, capped; 0 when unknown: an answer
    without an SOA is not cached (RFC 2308 §5; dnspython's minimum_ttl would be its maximum)."""
    try:
        response = next(iter(error.responses().values()))
        if not any(rrset.rdtype == dns.rdatatype.SOA for rrset in response.authority):
            return 0
        ttl = response.resolve_chaining().minimum_ttl
    except (StopIteration, dns.exception.DNSException, KeyError, AttributeError):
        return 0
    return min(ttl, NEGATIVE_TTL_MAX)


def _rcodes(error: dns.resolver.NoNameservers) -> str:
    """`SERVFAIL`, `REFUSED`, ... as the nameservers answered (or the error's name)."""
    texts = [
        err if isinstance(err, str) else type(err).__name__
        for _server, _tcp, _port, err, _response in error.kwargs.get("errors") or ()
    ]
    return ", ".join(dict.fromkeys(texts)) or "no nameserver answered"
