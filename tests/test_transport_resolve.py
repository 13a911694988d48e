"""MX lookups of the transport against a real resolver (a private unbound with static
zones): each DNS outcome mapped to hosts or to upstream's reply."""

import pytest
from unbound_instance import Unbound, require_unbound

from chatmaild.smtp.proto import Reply
from chatmaild.transport.mx import Failed, NoDomain, NoRecords, Records, hosts_or_reply
from chatmaild.transport.resolve import MxResolver

ZONES = {
    "b.test": [
        ("", 300, "MX", "20 mx2.b.test."),
        ("", 300, "MX", "10 mx1.b.test."),
        ("mx1", 300, "A", "10.0.0.1"),
    ],
    "nomx.test": [("", 300, "A", "10.0.0.2")],
    "null.test": [("", 300, "MX", "0 .")],
}


@pytest.fixture(scope="module")
def resolver(tmp_path_factory):
    require_unbound()
    dns = Unbound(tmp_path_factory.mktemp("unbound"), ZONES, refused=("broken.test",)).start()
    try:
        yield MxResolver(("127.0.0.1", dns.port), lifetime=5)
    finally:
        dns.stop()


@pytest.mark.parametrize(
    "domain, outcome, expected",
    [
        ("b.test", Records, ("mx1.b.test", "mx2.b.test")),
        ("nomx.test", NoRecords, ("nomx.test",)),
        ("null.test", Records, Reply),
        ("nosuch.b.test", NoDomain, Reply),
        ("broken.test", Failed, Reply),
    ],
)
async def test_lookup_outcomes(resolver, domain, outcome, expected):
    lookup = await resolver.lookup(domain)
    assert isinstance(lookup, outcome)
    hosts = hosts_or_reply(domain, lookup)
    if expected is Reply:
        assert isinstance(hosts, Reply)
        code = {"null.test": 556, "nosuch.b.test": 550, "broken.test": 421}[domain]
        assert hosts.code == code
    else:
        assert hosts == expected


async def test_no_resolver_answers_is_temporary():
    lookup = await MxResolver(("127.0.0.1", 9), lifetime=1).lookup("b.test")
    assert isinstance(lookup, Failed)
    assert hosts_or_reply("b.test", lookup).code == 421


async def test_answers_are_kept_for_their_ttl_failures_are_not(tmp_path):
    require_unbound()
    now = [0.0]
    dns = Unbound(tmp_path, ZONES, refused=("broken.test",)).start()
    try:
        resolver = MxResolver(("127.0.0.1", dns.port), lifetime=5, clock=lambda: now[0])
        for _ in range(3):
            assert isinstance(await resolver.lookup("b.test"), Records)
            assert isinstance(await resolver.lookup("broken.test"), Failed)
        assert resolver.queries == 4  # b.test once, broken.test each time
        now[0] += 301  # past the records' TTL (300 s)
        await resolver.lookup("b.test")
        assert resolver.queries == 5
    finally:
        dns.stop()
