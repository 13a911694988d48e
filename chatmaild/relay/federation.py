"""Two relays that deliver to each other, each in its own network namespace.

Relay A (`relay-a.test`) and relay B (`relay-b.test`) are complete local relays
(chatmaild.relay.instance) in namespaces `<prefix>-a` and `<prefix>-b`, joined by a veth
pair (`peer0`, 10.77.0.1 and 10.77.0.2; the link exists only inside the two namespaces,
so the addresses cannot clash with anything). Each namespace runs its own unbound
(chatmaild.relay.resolver) serving both zones (chatmaild.render.zone): the records
`python -m chatmaild.relay dns` prints for each (A, MX, SPF, the DKIM key, DMARC, `_mta-sts`,
SRV). Both certificates come from one test CA in `<state>/ca`, which both Postfix SMTP
clients and both transport services trust; the rendering is otherwise the production one, so
mail between the relays goes Postfix -> the transport service -> MX lookup -> HTTPS
`POST /mxdeliv` (or port 25, STARTTLS verified) -> filtermail incoming of the peer.
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

from chatmaild.relay import netns as netns_mod
from chatmaild.relay.instance import Relay, RelayError, ensure_packages
from chatmaild.relay.peering import Peering
from chatmaild.relay.resolver import Resolver
from chatmaild.render.dnsrecords import mta_sts_id
from chatmaild.render.zone import relay_zone
from chatmaild.web.site import mta_sts_policy

DOMAINS = ("relay-a.test", "relay-b.test")
DEFAULT_PAIR_STATE_DIR = Path("/tmp/chatmaild-relay-pair")
DEFAULT_PAIR_NETNS = "chatmaild-pair"
SUBNET = "10.77.0"
PAIR_FILE = "pair.json"
SIDES = ("a", "b")
RESOLVER_PACKAGES = ["unbound"]
RESOLVER_FILES = ["/usr/sbin/unbound", "/usr/sbin/unbound-checkconf"]


def is_pair_dir(state_dir):
    return (Path(state_dir) / PAIR_FILE).exists()


class RelayPair:
    """Relays A and B under `state_dir/a` and `state_dir/b`, the test CA in `state_dir/ca`.

    `ini_extra` is appended to both relays' chatmail.ini; `per_relay_ini(domain, address)`,
    when given, returns keys for one relay only (e.g. its own `iroh_relay` URL on the link);
    `extra_zones` (chatmaild.render.zone Zones) are served by both resolvers besides the
    relays' own, e.g. a test sender domain.
    """

    def __init__(
        self,
        state_dir,
        netns_prefix,
        domains=DOMAINS,
        subnet=SUBNET,
        ini_extra=None,
        extra_zones=(),
        log=print,
        per_relay_ini=None,
    ):
        self.state_dir = Path(state_dir).resolve()
        self.netns_prefix = netns_prefix
        self.log = log
        self.extra_zones = tuple(extra_zones)
        self.domains = list(domains)
        self.subnet = subnet
        self.addresses = [f"{subnet}.{i}" for i in (1, 2)]
        self.netns = [f"{netns_prefix}-{side}" for side in SIDES]
        ca_dir = self.state_dir / "ca"
        self.relays = [
            Relay(
                self.state_dir / side,
                netns=ns,
                mail_domain=domain,
                log=log,
                ini_extra={
                    **(ini_extra or {}),
                    **(per_relay_ini(domain, address) if per_relay_ini else {}),
                },
                peering=Peering(address, ca_dir),
            )
            for side, ns, domain, address in zip(
                SIDES, self.netns, domains, self.addresses, strict=True
            )
        ]
        self.resolvers = [
            Resolver(ns, self.state_dir / side / "unbound")
            for side, ns in zip(SIDES, self.netns, strict=True)
        ]

    @property
    def a(self):
        return self.relays[0]

    @property
    def b(self):
        return self.relays[1]

    def resolver_of(self, relay):
        return self.resolvers[self.relays.index(relay)]

    # -- state file ---------------------------------------------------------------------

    @property
    def pair_file(self):
        return self.state_dir / PAIR_FILE

    def _save_state(self):
        data = {
            "netns_prefix": self.netns_prefix,
            "domains": self.domains,
            "subnet": self.subnet,
            "resolver_pids": [r.pid for r in self.resolvers],
        }
        self.pair_file.write_text(json.dumps(data, indent=1) + "\n")

    @classmethod
    def from_state(cls, state_dir, log=print):
        """The pair an earlier `up --pair` left in `state_dir` (for down/status)."""
        state_dir = Path(state_dir).resolve()
        try:
            data = json.loads((state_dir / PAIR_FILE).read_text())
        except (OSError, ValueError) as e:
            raise RelayError(f"no relay pair state in {state_dir}: {e}") from None
        pair = cls(
            state_dir,
            data["netns_prefix"],
            domains=data.get("domains", DOMAINS),
            subnet=data.get("subnet", SUBNET),
            log=log,
        )
        pair.relays = [pair._loaded(relay) or relay for relay in pair.relays]
        for resolver, pid in zip(pair.resolvers, data.get("resolver_pids", []), strict=False):
            resolver.pid = pid
        return pair

    # -- the DNS data -------------------------------------------------------------------

    def zones(self):
        """Both relays' zones, with the DKIM records of their keys, and the extra zones.

        Needs the relays prepared (`up` makes their keys)."""
        own = []
        for relay, domain, addr in zip(self.relays, self.domains, self.addresses, strict=True):
            sts = mta_sts_id(mta_sts_policy(relay.config))  # the policy its nginx serves
            own.append(relay_zone(domain, addr, relay.dkim_record, mta_sts_id=sts))
        return [*own, *self.extra_zones]

    # -- up and down --------------------------------------------------------------------

    def up(self):
        """Namespaces and link, both resolvers, both relays; returns when all answer."""
        if self.pair_file.exists() and any(self.status().values()):
            raise RelayError(f"a relay pair is already running from {self.state_dir}")
        ensure_packages(self.log, RESOLVER_PACKAGES, RESOLVER_FILES)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.state_dir, 0o755)  # vmail must reach the relays' mailboxes
        self._save_state()
        try:
            for ns, domain in zip(self.netns, self.domains, strict=True):
                netns_mod.create(ns, [domain, socket.gethostname()])
                netns_mod.use_resolver(ns)
            try:
                netns_mod.link(*self.netns, *self.addresses)
            except subprocess.CalledProcessError as e:
                raise RelayError(f"could not link {' and '.join(self.netns)}: {e}") from None
            for relay in self.relays:
                relay.up()
            zones = self.zones()
            for resolver, domain in zip(self.resolvers, self.domains, strict=True):
                resolver.write(zones)
                resolver.start(probe_name=domain)
                self._save_state()
        except BaseException:
            self.down()
            raise
        self._save_state()

    def _loaded(self, relay):
        """`relay` with its config and layout (read from its state file if need be), or
        None when it never started."""
        if relay.layout is not None:
            return relay
        try:
            return Relay.from_state(relay.state_dir, log=self.log)
        except RelayError:
            return None

    def down(self):
        for relay in filter(None, map(self._loaded, self.relays)):
            relay.down()
        for resolver in self.resolvers:
            resolver.stop()
        for ns in self.netns:
            netns_mod.delete(ns)
        if self.pair_file.exists():
            self._save_state()

    def status(self):
        """{component: running?} of both relays (prefixed a:/b:) and their resolvers."""
        result = {}
        for side, relay, resolver in zip(SIDES, self.relays, self.resolvers, strict=True):
            relay = self._loaded(relay)
            for name, running in relay.status().items() if relay else ():
                result[f"{side}:{name}"] = running
            result[f"{side}:unbound"] = resolver.running()
        return result

    def client_info(self):
        lines = [
            f"Two relays deliver to each other over HTTPS /mxdeliv (port 25 as the fallback)"
            f" with verified TLS"
            f" (test CA {self.state_dir / 'ca' / 'ca.pem'}):"
        ]
        for side, relay, address in zip(SIDES, self.relays, self.addresses, strict=True):
            lines.append(
                f"  {side}: {relay.config.mail_domain} at {address}, network namespace"
                f" {relay.netns}, state {relay.state_dir}"
            )
        lines += [
            "Each namespace resolves both domains with its own unbound (127.0.0.1:53).",
            "Run a Delta Chat client per relay inside its namespace, e.g.",
            f"  ip netns exec {self.a.netns} deltachat-rpc-server",
            "with the servers of that relay (IMAP 993, SMTP 465, accept invalid certificates).",
            f"Stop both with: {sys.executable} -m chatmaild.relay down"
            f" --state-dir {self.state_dir}",
        ]
        return "\n".join(lines)
