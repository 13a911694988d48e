"""What a local relay changes to exchange mail with peer relays on a private test link.

Pure: the relay listens on its link address too (port 25 and nginx's 443, for `/mxdeliv`,
reachable by the peer; submission and Dovecot stay as they are), its certificate comes
from the shared test CA for every name a peer or client may use, and Postfix's SMTP
client trusts that CA, so the production `smtp_tls_security_level = verify` holds between
the relays. Nothing else of the rendering changes.
"""

import dataclasses
from pathlib import Path

from chatmaild.relay.testca import ca_cert_path
from chatmaild.relay.webcert import relay_names


@dataclasses.dataclass(frozen=True)
class Peering:
    address: str  # the relay's IPv4 address on the link to its peers
    ca_dir: Path  # the test CA shared by every relay of the network

    def layout_changes(self, layout=None):
        """Fields of the local Layout to replace (with `layout`: its nginx listens on the
        link address too, so the peer can POST to /mxdeliv)."""
        changes = {
            "inet_interfaces": f"127.0.0.1, {self.address}",
            "smtp_tls_ca_file": ca_cert_path(self.ca_dir),
        }
        if layout is not None and layout.web is not None:
            listen = (*layout.web.stream_listen, f"{self.address}:443")
            changes["web"] = dataclasses.replace(layout.web, stream_listen=listen)
        return changes

    def turn_changes(self):
        """Fields of the local TurnLayout to replace: coturn answers on the link address too
        (the peers' DNS names the relay there) and may relay to the link's addresses."""
        return {
            "listening_ips": ("127.0.0.1", self.address),
            "relay_ip": self.address,
            "allowed_peers": (
                f"{self.address.rpartition('.')[0]}.0-{self.address.rpartition('.')[0]}.255",
            ),
        }

    def certificate_names(self, domain):
        """The relay's usual names (domain, www., mta-sts., 127.0.0.1) and its link address."""
        return [*relay_names(domain), self.address]

    def to_json(self):
        return {"address": self.address, "ca_dir": str(self.ca_dir)}

    @classmethod
    def from_json(cls, data):
        return cls(data["address"], Path(data["ca_dir"])) if data else None
