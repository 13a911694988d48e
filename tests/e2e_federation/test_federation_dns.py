"""What each relay's own unbound answers: both relays' records, the test sender domains,
and nothing else (names outside the zones are NXDOMAIN at once, nothing is forwarded)."""

import time

import dns.message
import dns.query
import dns.rcode
import pytest

from chatmaild.relay.netns import entered
from chatmaild.relay.opendkim import txt_value


@pytest.mark.parametrize("side", ["a", "b"])
def test_each_resolver_serves_both_relays(federation, side):
    resolver = getattr(federation, side).resolver
    for relay in (federation.a, federation.b):
        domain = relay.domain
        assert [rd.to_text() for rd in resolver.query(domain, "A")] == [relay.address]
        assert [rd.to_text() for rd in resolver.query(f"mta-sts.{domain}", "A")] == [relay.address]
        assert [rd.to_text() for rd in resolver.query(domain, "MX")] == [f"10 {domain}."]
        (sts,) = resolver.query(f"_mta-sts.{domain}", "TXT")
        assert b"".join(sts.strings) == b"v=STSv1; id=1"
        # the record of the key the relay's OpenDKIM signs with, split into <=255 strings
        (key,) = resolver.query(f"opendkim._domainkey.{domain}", "TXT")
        assert all(len(s) <= 255 for s in key.strings) and len(key.strings) > 1
        expected = txt_value(relay.relay.dkim.key_file.read_bytes())
        assert b"".join(key.strings).decode() == expected == relay.relay.dkim_record


def test_names_outside_the_zones_are_nxdomain_at_once(federation):
    resolver = federation.a.resolver
    for name in ("example.org", "nosuch.relay-b.test", "notifications.delta.chat"):
        start = time.monotonic()
        with entered(resolver.netns):
            reply = dns.query.udp(dns.message.make_query(name, "A"), "127.0.0.1", timeout=2)
        assert reply.rcode() == dns.rcode.NXDOMAIN, name
        assert time.monotonic() - start < 0.5
