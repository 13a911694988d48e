"""Tools for the two-relay tests: DKIM signing and checking against the test zones,
direct SMTP to a relay's port 25 from the peer's namespace, queue and log inspection.
"""

import contextlib
import re
import smtplib
import ssl
import subprocess
import time

import dkim
from e2e.helpers import RelayClients, maildir_messages, wire_form

from chatmaild.relay.netns import entered
from chatmaild.relay.testca import ca_cert_path
from chatmaild.render.dkimkey import new_private_pem
from chatmaild.render.opendkim import public_key_b64
from chatmaild.render.zone import Zone, dkim_record, dkim_txt

# Headers signed on test messages (the ones OpenDKIM signs on a relay, where present).
SIGNED_HEADERS = [b"from", b"to", b"subject", b"date", b"message-id", b"content-type"]


class SenderDomain:
    """A third domain that mails relay B directly, with keys of its own in the zones.

    Selectors: `good` (published), `revoked` (published with an empty `p=`). `unpublished`
    is a private key whose public half is in no record. `other.test` has a published
    `good` key too, for signatures by a domain other than the From: domain.
    """

    def __init__(self, domain="sender.test", other="other.test"):
        self.domain = domain
        self.other = other
        self.keys = {name: new_private_pem() for name in ("good", "unpublished", "other")}

    def zones(self):
        good = dkim_txt(public_key_b64(self.keys["good"]))
        other = dkim_txt(public_key_b64(self.keys["other"]))
        return [
            Zone(
                self.domain,
                (
                    dkim_record(self.domain, good, selector="good"),
                    dkim_record(self.domain, dkim_txt(""), selector="revoked"),
                ),
            ),
            Zone(self.other, (dkim_record(self.other, other, selector="good"),)),
        ]

    def sign(self, message, selector="good", key="good", domain=None):
        """`message` with a DKIM-Signature by `domain` (default: this one) prepended."""
        header = dkim.sign(
            message,
            selector.encode(),
            (domain or self.domain).encode(),
            self.keys[key],
            include_headers=SIGNED_HEADERS,
        )
        return header + message


class Side(RelayClients):
    """One relay of the pair: its clients, its resolver, its queue and log."""

    def __init__(self, pair, relay):
        super().__init__(relay)
        self.pair = pair
        self.resolver = pair.resolver_of(relay)
        self.address = relay.peering.address

    def postfix(self, *args):
        subprocess.run(self.relay.postfix_argv(*args), check=True, capture_output=True)

    def postqueue_list(self):
        argv = ["postqueue", "-c", str(self.relay.layout.postfix_config_dir), "-p"]
        out = subprocess.run(self.relay.in_netns(argv), check=True, capture_output=True)
        return out.stdout.decode(errors="replace")

    def reload_nginx(self):
        """nginx re-reads its configuration and certificate (new workers take over)."""
        conf = str(self.relay.layout.web.nginx_conf)
        subprocess.run(self.relay.in_netns(["nginx", "-c", conf, "-s", "reload"]), check=True)
        time.sleep(1.0)  # the old workers finish, the new ones use the new certificate

    def restart_postfix(self):
        self.postfix("stop")
        self.postfix("start")
        self.relay.wait_ready(only="postfix:25")

    def maildir(self, addr):
        return maildir_messages(self.user_dir(addr))

    def messages_with(self, addr, marker):
        needle = f"X-Test-Marker: {marker}".encode()
        return [m for m in self.maildir(addr) if needle in m]

    def dnsfunc(self, name, timeout=5):
        """dkimpy's TXT lookup, answered by this relay's own resolver."""
        if isinstance(name, bytes):
            name = name.decode()
        for rd in self.resolver.query(name, "TXT", timeout=timeout):
            return b"".join(rd.strings)
        return None

    def dkim_verified_domain(self, message):
        """The d= of the first DKIM-Signature of a stored message if it verifies here
        (with this relay's resolver), else None."""
        d = dkim.DKIM(wire_form(message))
        try:
            if not d.verify(dnsfunc=self.dnsfunc):
                return None
        except dkim.DKIMException:  # e.g. a body hash mismatch
            return None
        return d.domain.decode()

    def queue_id_of(self, message_id):
        """The Postfix queue id that took the message with `message_id`, from the log."""
        pattern = re.compile(r" ([0-9A-F]{6,}): message-id=<" + re.escape(message_id) + ">")
        m = pattern.search(self.log_text("postfix.log"))
        return m.group(1) if m else None

    def mxdeliv_posts(self):
        """[(client address, status)] of the POSTs to /mxdeliv in nginx's access log."""
        path = self.relay.log_dir / "nginx-access.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        posts = []
        for line in text.splitlines():
            m = re.match(r'(\S+) \S+ \S+ \[[^]]*\] "POST /mxdeliv HTTP/[\d.]+" (\d{3}) ', line)
            if m:
                posts.append((m.group(1), int(m.group(2))))
        return posts

    def transport_lines(self, domain=None):
        """The transport service's delivery lines (one per message and domain)."""
        lines = self.log_text("filtermail-transport.log").splitlines()
        want = "transport: to=<" + (f"{domain}>" if domain else "")
        return [line for line in lines if want in line]

    def delivery_lines(self, queue_id):
        return [
            line
            for line in self.log_text("postfix.log").splitlines()
            if f" {queue_id}: to=<" in line
        ]

    def smtp_to_peer(self, peer):
        """An SMTP session from this namespace to `peer`'s port 25, STARTTLS verified
        against the test CA for the peer's domain (as the peer's Postfix client would)."""
        ctx = ssl.create_default_context(cafile=str(ca_cert_path(self.pair.state_dir / "ca")))
        with entered(self.netns):
            client = smtplib.SMTP(peer.address, 25, timeout=30)
        client.ehlo(self.domain)
        client._host = peer.domain  # server_hostname for the certificate check
        client.starttls(context=ctx)
        client.ehlo(self.domain)
        return client


@contextlib.contextmanager
def nft_output_rule(netns, rule, table="chatmaild_test"):
    """An nftables output rule in `netns` (e.g. `oifname "peer0" tcp dport 25 drop`) while
    the block runs; the table is removed afterwards."""
    from conftest import require_tool

    require_tool("nft")
    script = "\n".join(
        [
            f"table inet {table} {{",
            "  chain out {",
            "    type filter hook output priority 0; policy accept;",
            f"    {rule}",
            "  }",
            "}",
            "",
        ]
    )
    subprocess.run(
        ["ip", "netns", "exec", netns, "nft", "-f", "-"], input=script.encode(), check=True
    )
    try:
        yield
    finally:
        subprocess.run(
            ["ip", "netns", "exec", netns, "nft", "delete", "table", "inet", table], check=False
        )
