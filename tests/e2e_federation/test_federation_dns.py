"""What each relay's own unbound answers: both relays' records, the test sender domains,
and nothing else (names outside the zones are NXDOMAIN at once, nothing is forwarded);
`python -m chatmaild.relay dns --check`, run in each relay's namespace against its resolver,
finds every record it tells an operator to publish."""

import subprocess
import sys
import time

import dns.message
import dns.query
import dns.rcode
import pytest

from chatmaild.relay.netns import entered, exec_prefix
from chatmaild.render.dnsrecords import mta_sts_id
from chatmaild.render.opendkim import txt_value
from chatmaild.web.site import mta_sts_policy

from conftest import REPO_ROOT, daemon_env


@pytest.mark.parametrize("side", ["a", "b"])
def test_each_resolver_serves_both_relays(federation, side):
    resolver = getattr(federation, side).resolver
    for relay in (federation.a, federation.b):
        domain = relay.domain
        assert [rd.to_text() for rd in resolver.query(domain, "A")] == [relay.address]
        assert [rd.to_text() for rd in resolver.query(f"mta-sts.{domain}", "A")] == [relay.address]
        assert [rd.to_text() for rd in resolver.query(domain, "MX")] == [f"10 {domain}."]
        (sts,) = resolver.query(f"_mta-sts.{domain}", "TXT")
        policy_id = mta_sts_id(mta_sts_policy(relay.relay.config))
        assert b"".join(sts.strings).decode() == f"v=STSv1; id={policy_id}"
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


@pytest.mark.parametrize("side", ["a", "b"])
def test_dns_check_finds_every_record_in_the_relays_resolver(federation, side):
    """The printout agrees with what the pair serves: `dns --check` for each relay, asked in
    that relay's namespace against its own unbound, reports every record ok."""
    own = getattr(federation, side)
    for relay in (federation.a, federation.b):
        argv = [
            sys.executable,
            "-m",
            "chatmaild.relay",
            "dns",
            "--config",
            str(relay.relay.config_path),
            "--ipv4",
            relay.address,
            "--dkim-key",
            str(relay.relay.dkim.key_file),
            "--check",
            "--nameserver",
            "127.0.0.1",
        ]
        done = subprocess.run(
            [*exec_prefix(own.resolver.netns), *argv],
            env=daemon_env(),
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        lines = done.stdout.splitlines()
        assert len(lines) == 12 and all(line.startswith("ok ") for line in lines), lines
