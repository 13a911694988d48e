"""A relay outside the deployed container that sends it mail (issue 17: "mail from a relay
outside the container arrives DKIM-verified").

The outside relay is the project's local relay (chatmaild.relay.instance.Relay, as `python
-m chatmaild.relay up` runs it): Postfix, OpenDKIM signing, filtermail and the transport
service, in a network namespace of its own with its own unbound (chatmaild.relay.resolver),
for the domain `outside.test`.

Network: one veth pair straight from the outside relay's namespace into the container's
network namespace (`outside0` at both ends, 10.214.N.2 outside and 10.214.N.1 in the
container, N the deployment's index); the outside namespace routes the container's address
10.213.N.2 over it. Nothing changes on the host (no interface, no route, no forwarding):
the pair lives only in the two namespaces and goes away with the outside one. The
container answers on its own address from a new interface (Linux accepts any local
address on any interface) and replies over the pair, as the connected route says.

DNS: the outside unbound serves outside.test (its own records) and relay.deploy.test (A and
MX to the container). The container's unbound learns outside.test from a drop-in under
/etc/unbound/unbound.conf.d/ (`publish`), with or without the DKIM key record; `unpublish`
removes it.

TLS: the outside relay's Postfix and transport service verify certificates against one
file (`smtp_tls_ca_file`, the transport's SSL_CERT_FILE) that holds its own test CA and
pebble's root, which issued the container's certificate.
"""

import dataclasses
import os
import re
import socket
import subprocess
from pathlib import Path

from chatmaild.relay import netns as netns_mod
from chatmaild.relay.instance import Relay
from chatmaild.relay.peering import Peering
from chatmaild.relay.resolver import Resolver
from chatmaild.relay.testca import ca_cert_path, load_or_create
from chatmaild.render.dnsrecords import mta_sts_id
from chatmaild.render.zone import local_data_lines, relay_zone
from chatmaild.web.site import mta_sts_policy

OUTSIDE_DOMAIN = "outside.test"
LINK_IF = "outside0"
DROPIN = "/etc/unbound/unbound.conf.d/zz-test-outside.conf"
ROOT_ZONE_LINE = 'local-zone: "." static'
# The SOA of outside.test in the container: negative TTL 0, so filtermail does not cache the
# NXDOMAIN of the key record before it is published (with a usual negative TTL it would ask
# again only after a failed verification, and only a minute later: dkimkeys.REFRESH_MIN_AGE).
SOA = "ns.{d}. hostmaster.{d}. 1 3600 600 86400 0"


@dataclasses.dataclass(frozen=True)
class TrustingPeering(Peering):
    """Peering whose outgoing TLS trusts `trust_file` (the test CA and pebble's root)
    instead of the test CA alone."""

    trust_file: Path | None = None

    def layout_changes(self, layout=None):
        changes = super().layout_changes(layout)
        if self.trust_file is not None:
            changes["smtp_tls_ca_file"] = self.trust_file
        return changes


def unbound_dropin(zone):
    """An unbound.conf drop-in that serves `zone` (static: other names NXDOMAIN, with the
    SOA above) and leaves the rest of the resolver as it is."""
    lines = [line for line in local_data_lines([zone]) if line != ROOT_ZONE_LINE]
    lines.insert(1, f"local-data: '{zone.domain}. 0 IN SOA {SOA.format(d=zone.domain)}'")
    return "server:\n" + "".join(f"    {line}\n" for line in lines)


class OutsideRelay:
    """The outside relay of one deployment (harness.Deployment), under `state_dir`."""

    def __init__(self, deployment, state_dir, log=print):
        self.deployment = deployment
        self.container = deployment.container
        self.state_dir = Path(state_dir)
        self.log = log
        self.domain = OUTSIDE_DOMAIN
        self.netns = f"chatmaild-out-{os.getpid()}"
        self.address = f"10.214.{deployment.index}.2"
        self.container_link_ip = f"10.214.{deployment.index}.1"
        ca_dir = self.state_dir / "ca"
        self.trust_file = self.state_dir / "trust.pem"
        self.relay = Relay(
            self.state_dir / "relay",
            netns=self.netns,
            mail_domain=self.domain,
            log=log,
            peering=TrustingPeering(self.address, ca_dir, self.trust_file),
        )
        self.resolver = Resolver(self.netns, self.state_dir / "unbound")

    # -- up and down ----------------------------------------------------------------------

    def up(self):
        self.state_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.state_dir, 0o755)  # vmail must reach the relay's mailboxes
        ca_dir = self.relay.ca_dir
        load_or_create(ca_dir)
        self.trust_file.write_text(ca_cert_path(ca_dir).read_text() + self.deployment.pebble_root())
        try:
            netns_mod.create(self.netns, [self.domain, socket.gethostname()])
            netns_mod.use_resolver(self.netns)
            self._link()
            self.relay.up()
            self.resolver.write(self.zones())
            self.resolver.start(probe_name=self.deployment.domain)
        except BaseException:
            self.down()
            raise

    def _link(self):
        """The veth pair into the container's network namespace, and the route to the
        container's address over it."""
        leader = str(self.container.leader)
        subprocess.run(
            ["ip", "link", "add", LINK_IF, "netns", self.netns, "type", "veth",
             "peer", "name", LINK_IF, "netns", leader],
            check=True,
        )  # fmt: skip
        inside = ["nsenter", "-t", leader, "-n", "ip"]
        subprocess.run(
            [*inside, "addr", "add", f"{self.container_link_ip}/30", "dev", LINK_IF], check=True
        )
        subprocess.run([*inside, "link", "set", LINK_IF, "up"], check=True)
        outside = ["ip", "-n", self.netns]
        subprocess.run([*outside, "addr", "add", f"{self.address}/30", "dev", LINK_IF], check=True)
        subprocess.run([*outside, "link", "set", LINK_IF, "up"], check=True)
        subprocess.run(
            [*outside, "route", "add", f"{self.container.ip}/32", "via", self.container_link_ip],
            check=True,
        )

    def down(self):
        try:
            if self.relay.layout is not None:
                self.relay.down()  # removes the namespace, and so the veth pair
        finally:
            self.resolver.stop()
            netns_mod.delete(self.netns)
            if self.container.leader:
                leader = str(self.container.leader)
                subprocess.run(
                    ["nsenter", "-t", leader, "-n", "ip", "link", "del", LINK_IF],
                    check=False,
                    capture_output=True,
                )

    # -- DNS ------------------------------------------------------------------------------

    def zone(self, with_dkim=True):
        """outside.test as it publishes itself: A, MX, SPF, DMARC... and, `with_dkim`, the
        key record of its OpenDKIM key."""
        sts = mta_sts_id(mta_sts_policy(self.relay.config))
        dkim = self.relay.dkim_record if with_dkim else None
        return relay_zone(self.domain, self.address, dkim, mta_sts_id=sts)

    def zones(self):
        """What the outside resolver serves: its own zone and the deployed relay's."""
        deployed = relay_zone(self.deployment.domain, self.container.ip)
        return [self.zone(), deployed]

    def publish(self, with_dkim):
        """The container's unbound answers for outside.test (its DKIM key only `with_dkim`)."""
        self.container.run(["tee", DROPIN], input=unbound_dropin(self.zone(with_dkim)))
        self.container.run(["systemctl", "restart", "unbound"])

    def unpublish(self):
        self.container.run(["rm", "-f", DROPIN], check=False)
        self.container.run(["systemctl", "restart", "unbound"], check=False)

    # -- what happened --------------------------------------------------------------------

    def log_text(self, name):
        path = self.relay.log_dir / name
        return path.read_text(errors="replace") if path.exists() else ""

    def transport_lines(self, sender):
        """The transport service's delivery lines for mail from `sender` to the container."""
        want = f"transport: to=<{self.deployment.domain}> rcpts=1 from=<{sender}>"
        return [line for line in self.log_text("filtermail-transport.log").splitlines()
                if want in line]  # fmt: skip

    def postfix_statuses(self, message_id):
        """The `status=` words of Postfix' delivery lines for the message `message_id`."""
        postfix = self.log_text("postfix.log")
        m = re.search(r" ([0-9A-F]{6,}): message-id=<" + re.escape(message_id) + ">", postfix)
        if m is None:
            return []
        return re.findall(rf" {m.group(1)}: to=<[^>]*>.* status=(\w+)", postfix)

    def queue_is_empty(self):
        argv = ["postqueue", "-c", str(self.relay.layout.postfix_config_dir), "-p"]
        out = subprocess.run(self.relay.in_netns(argv), capture_output=True, text=True)
        return "Mail queue is empty" in out.stdout


def filtermail_incoming_counts(container, ini="/usr/local/lib/chatmaild/chatmail.ini"):
    """{sample name with labels: value} of the container's filtermail incoming metrics, from
    its endpoint (`metrics_filtermail_incoming` of the deployed chatmail.ini, an address
    inside the container)."""
    from prometheus_client.parser import text_string_to_metric_families

    text = container.run(["cat", ini]).stdout
    m = re.search(r"(?m)^metrics_filtermail_incoming\s*=\s*(\S+:\d+)\s*$", text)
    assert m, f"no metrics_filtermail_incoming in {ini}"
    url = f"http://{m.group(1)}/metrics"
    text = container.run(["curl", "-sS", "--fail", url]).stdout
    counts = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
            counts[f"{s.name}{{{labels}}}"] = s.value
    return counts
