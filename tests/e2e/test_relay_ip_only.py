"""An IP-only relay end to end: `mail_domain = 10.199.0.1`, addresses `x@[10.199.0.1]`.

`python -m chatmaild.relay up --config INI --netns NS` as a user runs it: the namespace's
loopback gets the address and the relay listens on it. Delta Chat 2.65 makes two accounts
from the `dclogin:` URLs that `/new` hands out (with ih=/sh= the address), secure-joins and
sends a padlocked message each way; nothing is DKIM-signed (no OpenDKIM runs), and filtermail
incoming, with its DKIM check on, takes `From: x@[A]` on port 25 only from address A.
"""

import json
import shlex
import smtplib
import subprocess
import tempfile
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from chatmaild.relay.instance import Relay
from chatmaild.relay.netns import entered

from .conftest import relay_cli, relay_cli_cleanup, relay_prerequisites
from .deltachat_helpers import rpc_under
from .helpers import (
    RelayClients,
    client_tls,
    encrypted_message,
    maildir_messages,
    wait_until,
)
from .test_relay_web import _padlocked_messages_both_ways
from conftest import daemon_env, require_tool, write_ini

ADDRESS = "10.199.0.1"
OTHER_RELAY = "10.199.0.2"  # a second address in the namespace: "another IP-only relay"
DKIM_550 = b"5.7.1 No valid DKIM signature found"


class IpRelay(RelayClients):
    def __init__(self, relay, stdout):
        super().__init__(relay)
        self.domain = relay.config.address_domain  # addresses end in @[10.199.0.1]
        self.stdout = stdout

    def port25_from(self, source, mail_from, rcpts, message):
        """STARTTLS on port 25 of the relay's address, from `source`, as another relay."""
        with entered(self.netns):
            client = smtplib.SMTP(ADDRESS, 25, timeout=30, source_address=(source, 0))
        try:
            client.ehlo("[" + source + "]")
            client.starttls(context=client_tls())
            client.ehlo("[" + source + "]")
            return client.sendmail(mail_from, rcpts, message)
        finally:
            client.close()


@pytest.fixture(scope="module")
def ip_relay():
    relay_prerequisites()
    require_tool("nginx", "curl")
    state = Path(tempfile.mkdtemp(prefix="chatmaild-ip-", dir="/tmp"))
    netns = f"chatmaild-ip-{state.name[-6:]}"
    ini = write_ini(
        state / "chatmail.ini",
        mail_domain=ADDRESS,
        mailboxes_dir=state / "mailboxes",
        nocreate_file=state / "nocreate",
        notification_url="",
        max_load_1m=1000,
        min_available_memory="1K",
        min_free_disk_space="1K",
    )
    up = relay_cli("up", "--config", ini, "--state-dir", state, "--netns", netns)
    try:
        assert up.returncode == 0, up.stderr
        relay = Relay.from_state(state, log=lambda _: None)
        subprocess.run(
            ["ip", "-n", netns, "addr", "add", f"{OTHER_RELAY}/32", "dev", "lo"], check=True
        )
        yield IpRelay(relay, up.stdout)
    finally:
        relay_cli_cleanup(state)


def _new_account(ip_relay):
    """/new through the curl command `relay up` printed."""
    curl = ip_relay.stdout.split("a new account: ", 1)[1].split(" -X POST", 1)[0]
    out = subprocess.run(
        [*shlex.split(curl), "-sS", "-X", "POST", f"https://{ADDRESS}/new"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return json.loads(out.stdout)


def test_up_says_it_signs_nothing_and_runs_no_opendkim(ip_relay):
    assert f"Chatmail relay for {ADDRESS} is up" in ip_relay.stdout
    assert "an IP-only relay signs nothing" in ip_relay.stdout
    assert ip_relay.relay.dkim is None
    assert "opendkim" not in ip_relay.relay.status()
    assert all(ip_relay.relay.status().values())


def test_new_hands_out_a_dclogin_url_naming_the_servers(ip_relay):
    doc = _new_account(ip_relay)
    assert doc["email"].endswith(f"@[{ADDRESS}]")
    query = parse_qs(urlsplit(doc["dclogin_url"]).query)
    assert query["ih"] == [ADDRESS] and query["sh"] == [ADDRESS] and query["ic"] == ["3"]


def test_delta_chat_from_dclogin_urls_padlocked_both_ways(ip_relay, tmp_path):
    from deltachat_rpc_client import DeltaChat

    assert not ip_relay.relay.skipped
    with (
        open(tmp_path / "rpc.stderr", "wb") as stderr,
        rpc_under(
            ["ip", "netns", "exec", ip_relay.netns], tmp_path / "accounts", stderr, env=daemon_env()
        ) as rpc,
    ):
        deltachat = DeltaChat(rpc)
        accounts = []
        for _ in range(2):
            doc = _new_account(ip_relay)
            account = deltachat.add_account()
            assert account.check_qr(doc["dclogin_url"])["kind"] == "login"
            account.add_transport_from_qr(doc["dclogin_url"])
            account.bring_online()
            assert account.get_config("configured_addr") == doc["email"]
            accounts.append((account, doc["email"]))
        _padlocked_messages_both_ways(*(a for a, _ in accounts))


def test_submitted_mail_is_delivered_unsigned(ip_relay):
    """Submission -> filtermail outgoing -> reinjection (no milter) -> Dovecot: on a
    relay for a domain this path DKIM-signs; here the stored message carries no signature."""
    sender, password = ip_relay.new_account()
    rcpt, _ = ip_relay.new_account()
    marker, message = encrypted_message(sender, [rcpt])
    assert ip_relay.submit(465, sender, password, sender, [rcpt], message) == {}
    wait_until(lambda: maildir_messages(ip_relay.user_dir(rcpt)), f"delivery to {rcpt}")
    (stored,) = maildir_messages(ip_relay.user_dir(rcpt))
    head = stored.replace(b"\r\n", b"\n").split(b"\n\n", 1)[0].lower()
    assert marker.encode() in head and b"dkim-signature:" not in head


def test_ip_literal_from_is_taken_only_from_that_address(ip_relay):
    addr, password = ip_relay.new_account()
    assert addr.endswith(f"@[{ADDRESS}]")
    sender = f"relay@[{OTHER_RELAY}]"
    marker, message = encrypted_message(sender, [addr])
    assert ip_relay.port25_from(OTHER_RELAY, sender, [addr], message) == {}
    ip_relay.wait_delivered(addr, password, marker)
    # the same From from another address: no DKIM key can vouch for a literal
    marker, message = encrypted_message(sender, [addr])
    with pytest.raises(smtplib.SMTPDataError) as e:
        ip_relay.port25_from("127.0.0.1", sender, [addr], message)
    assert (e.value.smtp_code, e.value.smtp_error) == (550, DKIM_550)
    assert not ip_relay.inbox_has(addr, password, marker)
