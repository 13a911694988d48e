"""The DKIM key fetcher against a real resolver: a private Debian unbound on loopback.

Query counts are unbound's own (`unbound-control stats_noreset`), so "one DNS query per key
per TTL" is checked where the queries arrive, not only by the fetcher's counter.
"""

import asyncio
import socket
import time

import pytest
from unbound_instance import Unbound, require_unbound, txt

from chatmaild.filtermail.dkimcheck import KeyFound, KeyMissing, KeyTemporary
from chatmaild.filtermail.dkimkeys import REFRESH_MIN_AGE, KeyFetcher

ZONE = "sender.example"
# as long as a 4096-bit key record: several TXT strings, over 512 bytes of answer
LONG_RECORD = "v=DKIM1; k=rsa; p=" + "MIICIjANBgkqhkiG9w0BAQEFAAOCAg8A" * 23
ZONES = {
    ZONE: [
        ("opendkim._domainkey", 300, "TXT", txt(LONG_RECORD)),
        ("short._domainkey", 1, "TXT", txt("v=DKIM1; p=SHORT")),
        ("two._domainkey", 300, "TXT", txt("v=DKIM1; p=A")),
        ("two._domainkey", 300, "TXT", txt("other")),
        ("host", 300, "A", "192.0.2.1"),
    ]
    + [(f"s{i}._domainkey", 300, "TXT", txt(f"v=DKIM1; p=K{i}")) for i in range(10)],
}
NEGATIVE_TTL = 60


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


@pytest.fixture(scope="module")
def unbound(tmp_path_factory):
    require_unbound()
    with Unbound(
        tmp_path_factory.mktemp("unbound"),
        ZONES,
        refused=("refused.example",),
        negative_ttl=NEGATIVE_TTL,
    ) as server:
        yield server


def fetcher_for(unbound, **kwargs) -> KeyFetcher:
    return KeyFetcher(("127.0.0.1", unbound.port), timeout=kwargs.pop("timeout", 3.0), **kwargs)


class Counted:
    """Queries unbound received during the block."""

    def __init__(self, unbound):
        self.unbound = unbound

    def __enter__(self):
        self.start = self.unbound.queries()
        return self

    def __exit__(self, *exc):
        self.count = self.unbound.queries() - self.start


async def test_long_record_strings_are_joined_in_one_query(unbound):
    fetcher = fetcher_for(unbound)
    with Counted(unbound) as counted:
        result = await fetcher.lookup(f"opendkim._domainkey.{ZONE}")
    assert result == KeyFound((LONG_RECORD.encode(),))
    assert counted.count == 1  # EDNS: no truncated UDP answer asked again over TCP


async def test_one_query_per_name_per_ttl(unbound):
    clock = FakeClock()
    fetcher = fetcher_for(unbound, clock=clock)
    name = f"two._domainkey.{ZONE}"
    with Counted(unbound) as counted:
        first = await fetcher.lookup(name)
        for _ in range(20):
            assert await fetcher.lookup(name) == first
        clock.now += 299
        assert await fetcher.lookup(name.upper() + ".") == first  # same name
    assert counted.count == 1 and fetcher.queries == 1
    assert sorted(first.records) == [b"other", b"v=DKIM1; p=A"]
    clock.now += 2  # past the TTL of 300 s
    with Counted(unbound) as counted:
        assert await fetcher.lookup(name) == first
    assert counted.count == 1 and fetcher.queries == 2


async def test_short_ttl_expires_in_real_time(unbound):
    fetcher = fetcher_for(unbound)
    name = f"short._domainkey.{ZONE}"
    with Counted(unbound) as counted:
        await fetcher.lookup(name)
        await fetcher.lookup(name)
    assert counted.count == 1
    await asyncio.sleep(1.1)
    with Counted(unbound) as counted:
        assert await fetcher.lookup(name) == KeyFound((b"v=DKIM1; p=SHORT",))
    assert counted.count == 1


async def test_concurrent_lookups_share_one_query(unbound):
    fetcher = fetcher_for(unbound)
    names = [f"s{i}._domainkey.{ZONE}" for i in range(10)]
    with Counted(unbound) as counted:
        results = await asyncio.gather(*(fetcher.lookup(n) for n in names * 30))
    assert counted.count == 10 and fetcher.queries == 10
    assert results[:10] == [KeyFound((f"v=DKIM1; p=K{i}".encode(),)) for i in range(10)]
    assert results[10:20] == results[:10]


async def test_lookup_many(unbound):
    fetcher = fetcher_for(unbound)
    names = [f"s1._domainkey.{ZONE}", f"nope._domainkey.{ZONE}", f"s1._domainkey.{ZONE}"]
    results = await fetcher.lookup_many(names)
    assert set(results) == set(names)
    assert results[names[0]] == KeyFound((b"v=DKIM1; p=K1",))
    assert isinstance(results[names[1]], KeyMissing)
    assert fetcher.queries == 2


async def test_nxdomain_is_permanent_and_cached_by_the_negative_ttl(unbound):
    clock = FakeClock()
    fetcher = fetcher_for(unbound, clock=clock)
    name = f"missing._domainkey.{ZONE}"
    with Counted(unbound) as counted:
        assert await fetcher.lookup(name) == KeyMissing(f"no such name {name}")
        clock.now += NEGATIVE_TTL - 1
        await fetcher.lookup(name)
    assert counted.count == 1
    clock.now += 2
    await fetcher.lookup(name)
    assert fetcher.queries == 2


async def test_name_without_txt_is_permanent(unbound):
    fetcher = fetcher_for(unbound)
    name = f"host.{ZONE}"
    assert await fetcher.lookup(name) == KeyMissing(f"no TXT record at {name}")
    await fetcher.lookup(name)
    assert fetcher.queries == 1  # cached (negative TTL)


async def test_refused_is_temporary_and_not_cached(unbound):
    fetcher = fetcher_for(unbound)
    name = "opendkim._domainkey.refused.example"
    with Counted(unbound) as counted:
        first = await fetcher.lookup(name)
        second = await fetcher.lookup(name)
    assert first == second == KeyTemporary(f"DNS failure for {name}: REFUSED")
    assert counted.count == 2


async def test_silent_server_times_out_as_temporary():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))  # bound, never read: queries go unanswered
        port = silent.getsockname()[1]
        fetcher = KeyFetcher(("127.0.0.1", port), timeout=0.5)
        name = f"opendkim._domainkey.{ZONE}"
        start = time.monotonic()
        results = await asyncio.gather(*(fetcher.lookup(name) for _ in range(5)))
        elapsed = time.monotonic() - start
    assert results == [KeyTemporary(f"DNS timeout for {name}")] * 5
    assert 0.4 < elapsed < 3
    assert fetcher.queries == 1  # coalesced, and not cached afterwards
    assert fetcher.cached(name) is None


async def test_nothing_listening_is_temporary():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    fetcher = KeyFetcher(("127.0.0.1", port), timeout=1.0)
    result = await fetcher.lookup(f"opendkim._domainkey.{ZONE}")
    assert isinstance(result, KeyTemporary)
    assert ZONE in result.reason


async def test_cache_is_bounded(unbound):
    fetcher = fetcher_for(unbound, max_entries=3)
    names = [f"s{i}._domainkey.{ZONE}" for i in range(5)]
    for name in names:
        await fetcher.lookup(name)
    assert [fetcher.cached(n) is not None for n in names] == [False, False, True, True, True]
    await fetcher.lookup(names[2])  # recently used: stays
    await fetcher.lookup(names[0])  # evicts names[3], the least recently used
    assert fetcher.cached(names[3]) is None and fetcher.cached(names[2]) is not None
    assert fetcher.queries == 6


async def test_cancelled_lookup_does_not_strand_waiters():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        fetcher = KeyFetcher(("127.0.0.1", silent.getsockname()[1]), timeout=5.0)
        name = f"opendkim._domainkey.{ZONE}"
        first = asyncio.ensure_future(fetcher.lookup(name))
        await asyncio.sleep(0.05)
        waiter = asyncio.ensure_future(fetcher.lookup(name))
        await asyncio.sleep(0.05)
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(waiter, 2)
        assert name not in fetcher._inflight


async def test_refresh_asks_again_only_for_cached_answers_a_minute_old(unbound):
    clock = FakeClock()
    fetcher = fetcher_for(unbound, clock=clock)
    name = f"s1._domainkey.{ZONE}"
    await fetcher.lookup(name)
    with Counted(unbound) as young:
        assert await fetcher.refresh_many([name, f"s2._domainkey.{ZONE}"]) == {}
    assert young.count == 0  # too young, and s2 was never cached
    clock.now += REFRESH_MIN_AGE
    with Counted(unbound) as old:
        assert await fetcher.refresh_many([name, name.upper()]) == {
            name: await fetcher.lookup(name)
        }
        assert await fetcher.refresh_many([name]) == {}  # just fetched again
    assert old.count == 1


def _nxdomain(authority=()):
    import dns.message
    import dns.rrset

    name = f"gone._domainkey.{ZONE}"
    response = dns.message.make_response(dns.message.make_query(name, "TXT"))
    response.set_rcode(dns.rcode.NXDOMAIN)
    for text in authority:
        soa = dns.rrset.from_text(ZONE + ".", 3600, "IN", "SOA", text)
        response.find_rrset(
            response.authority, soa.name, soa.rdclass, soa.rdtype, create=True
        ).update(soa)
    qname = dns.name.from_text(name)
    return dns.resolver.NXDOMAIN(qnames=[qname], responses={qname: response})


def test_an_nxdomain_without_soa_is_not_cached():
    from chatmaild.filtermail.dkimkeys import _negative_ttl

    assert _negative_ttl(_nxdomain()) == 0
    soa = f"ns.{ZONE}. hostmaster.{ZONE}. 1 3600 600 86400 45"
    assert _negative_ttl(_nxdomain([soa])) == 45
