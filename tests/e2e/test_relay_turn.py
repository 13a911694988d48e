"""TURN on the relay with real clients: coturn, chatmail-turn, Delta Chat and aioice (issue 18).

The relay runs Debian's coturn and chatmail-turn in its namespace (`python -m chatmaild.relay
up`'s code path). Delta Chat 2.65 gets the credentials over IMAP METADATA and reports what it
would use (`ice_servers()`); aioice (a TURN client, RFC 5766) allocates a relayed address on
coturn with exactly those and relays UDP data to a peer and back; coturn's own
`turnutils_uclient` passes; wrong and expired passwords get 401.
"""

import asyncio
import base64
import hashlib
import hmac
import secrets
import socket
import subprocess
import time

import pytest

from chatmaild.relay.netns import entered, exec_prefix
from chatmaild.turn import secretdb
from chatmaild.turn.credentials import VALIDITY

from .deltachat_helpers import deltachat_in_netns
from .helpers import wait_until
from conftest import require, require_tool

TURN_PORT = 3478
PEER_DATA = b"relayed through coturn " * 40


def _fetch_line(relay):
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(5)
        sock.connect(str(relay.relay.config.turn_socket_path))
        data = b""
        while chunk := sock.recv(4096):
            data += chunk
    return data


def _secret(relay):
    config = relay.relay.config
    return secretdb.read_secret(config.turn_db_path, config.mail_domain)


def _password(secret, username):
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


@pytest.fixture(scope="module")
def turn_relay(relay):
    relay.require_daemons("turn", "metadata", "doveauth")
    require_tool("turnserver", "turnutils_uclient")
    require(relay.relay.pids.get("coturn"), "coturn running in the relay")
    return relay


@pytest.fixture(scope="module")
def ice_servers(turn_relay, tmp_path_factory):
    """What Delta Chat 2.65 would use for a call from an account on the relay."""
    from .test_relay_deltachat import _account

    accounts_dir = tmp_path_factory.mktemp("dc-turn")
    with deltachat_in_netns(
        turn_relay.netns, accounts_dir / "accounts", accounts_dir / "rpc-server.stderr"
    ) as deltachat:
        return _account(deltachat, turn_relay).ice_servers()


# -- chatmail-turn --------------------------------------------------------------------------


def test_credential_line_is_upstream_format_with_five_days(turn_relay):
    before = int(time.time())
    line = _fetch_line(turn_relay)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    username, password = line.decode().strip().split(":")
    assert before + VALIDITY <= int(username) <= int(time.time()) + VALIDITY
    assert password == _password(_secret(turn_relay), username)


def test_secret_is_random_and_readable_only_by_coturn_user(turn_relay):
    config = turn_relay.relay.config
    st = config.turn_db_path.stat()
    assert st.st_mode & 0o777 == 0o600
    assert config.turn_db_path.parent.stat().st_mode & 0o777 == 0o700
    import pwd

    assert pwd.getpwuid(st.st_uid).pw_name == "turnserver"
    assert len(_secret(turn_relay)) >= 40
    # not in the rendered coturn configuration, not on any command line
    conf = turn_relay.relay.layout.turn.conf.read_text()
    assert _secret(turn_relay) not in conf
    for pid in (turn_relay.relay.pids["coturn"], turn_relay.relay.pids["turn"]):
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            assert _secret(turn_relay).encode() not in f.read()


# -- Delta Chat -----------------------------------------------------------------------------


def test_deltachat_ice_servers_are_our_turn_server_with_our_credentials(turn_relay, ice_servers):
    ours = [s for s in ice_servers if any(f":{TURN_PORT}" in u for u in s["urls"])]
    assert ours, ice_servers
    server = ours[0]
    assert server["urls"] == [f"turn:127.0.0.1:{TURN_PORT}"]  # chat.example in the namespace
    username, credential = server["username"], server["credential"]
    assert int(username) > time.time() + VALIDITY - 3600
    assert credential == _password(_secret(turn_relay), username)


# -- aioice against coturn -----------------------------------------------------------------


class _Collect(asyncio.DatagramProtocol):
    def __init__(self):
        self.received = asyncio.Queue()

    def datagram_received(self, data, addr):
        self.received.put_nowait((data, addr))


async def _relay_round_trip(username, password):
    """Allocate on coturn, send to a UDP peer through the relay and get its answer back.
    Returns (relayed address, peer saw data from, data echoed back)."""
    from aioice.turn import create_turn_endpoint

    loop = asyncio.get_running_loop()
    peer_transport, peer = await loop.create_datagram_endpoint(
        _Collect, local_addr=("127.0.0.1", 0)
    )
    turn, client = await create_turn_endpoint(
        _Collect, ("127.0.0.1", TURN_PORT), username, password
    )
    try:
        relayed = turn.get_extra_info("sockname")
        peer_addr = peer_transport.get_extra_info("sockname")
        turn.sendto(PEER_DATA, peer_addr)
        data, source = await asyncio.wait_for(peer.received.get(), 10)
        assert data == PEER_DATA
        peer_transport.sendto(data[::-1], source)
        back, _ = await asyncio.wait_for(client.received.get(), 10)
        return relayed, source, back
    finally:
        turn.close()
        peer_transport.close()


async def _allocation_error(username, password):
    from aioice.stun import TransactionFailed
    from aioice.turn import create_turn_endpoint

    try:
        turn, _ = await create_turn_endpoint(_Collect, ("127.0.0.1", TURN_PORT), username, password)
    except TransactionFailed as e:
        return e.response.attributes["ERROR-CODE"][0]
    turn.close()
    return None


def _in_netns(relay, coro):
    with entered(relay.netns):
        return asyncio.run(coro)


def _aioice():
    try:
        import aioice.turn  # noqa: F401
    except ImportError:
        require(False, "aioice (test extras)")


def test_aioice_allocates_and_relays_with_deltachats_credentials(turn_relay, ice_servers):
    _aioice()
    (server,) = [s for s in ice_servers if f"turn:127.0.0.1:{TURN_PORT}" in s["urls"]]
    relayed, seen_from, back = _in_netns(
        turn_relay, _relay_round_trip(server["username"], server["credential"])
    )
    assert relayed[0] == "127.0.0.1" and relayed[1] >= 49152
    assert seen_from == relayed  # the peer saw the relayed address, not the client's
    assert back == PEER_DATA[::-1]


def test_wrong_and_expired_passwords_get_401(turn_relay):
    _aioice()
    secret = _secret(turn_relay)
    future = str(int(time.time()) + 3600)
    past = str(int(time.time()) - 60)
    assert _in_netns(turn_relay, _allocation_error(future, "not-the-password")) == 401
    assert _in_netns(turn_relay, _allocation_error(future, _password("other", future))) == 401
    assert _in_netns(turn_relay, _allocation_error(past, _password(secret, past))) == 401
    # the same client with the right password is allocated (the 401s are not an outage)
    assert _in_netns(turn_relay, _allocation_error(future, _password(secret, future))) is None


def test_turnutils_uclient_passes(turn_relay):
    username, password = _fetch_line(turn_relay).decode().strip().split(":")
    argv = ["turnutils_uclient", "-p", str(TURN_PORT), "-u", username, "-w", password]
    argv += ["-r", turn_relay.domain, "-e", "127.0.0.1", "-n", "10", "-m", "2", "-y"]
    argv += ["-L", "127.0.0.1", "127.0.0.1"]
    proc = subprocess.run(
        [*exec_prefix(turn_relay.netns), *argv], capture_output=True, text=True, timeout=60
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "ERROR" not in out, out
    assert "tot_send_msgs=40, tot_recv_msgs=40" in out, out
    assert "Total lost packets 0 (0.000000%)" in out, out


def test_coturn_restart_keeps_credentials_working(turn_relay):
    _aioice()
    turn_relay.relay.restart_coturn()
    username, password = _fetch_line(turn_relay).decode().strip().split(":")
    _, _, back = _in_netns(turn_relay, _relay_round_trip(username, password))
    assert back == PEER_DATA[::-1]


# -- advertised only while served -----------------------------------------------------------


async def _lookup(socket_path, name):
    from metadata_helpers import SERVER, DictClient

    client = await DictClient.connect(socket_path)
    try:
        return await client.lookup(SERVER + name, user="someone12@chat.example")
    finally:
        await client.close()


def _metadata(relay, name):
    return asyncio.run(_lookup(relay.relay.layout.metadata_socket, name))


def test_metadata_turn_absent_while_chatmail_turn_is_down(turn_relay):
    relay = turn_relay.relay
    config = relay.config
    answer = _metadata(turn_relay, "turn")
    assert answer.startswith(f"O{config.mail_domain}:{TURN_PORT}:"), answer
    (daemon,) = [d for d in relay.daemons() if d.name == "turn"]
    relay.stop_daemon("turn")
    try:
        assert _metadata(turn_relay, "turn") == "N"
        assert _metadata(turn_relay, "turn") == "N"
    finally:
        relay.start_daemon(daemon)
        relay.wait_ready(only="turn")
    answer = _metadata(turn_relay, "turn")
    assert answer.startswith(f"O{config.mail_domain}:{TURN_PORT}:"), answer
    log = turn_relay.log_text("metadata.log")
    assert log.count("TURN credentials unavailable") == 1  # one line for the whole outage
    assert log.count("TURN credentials available again") == 1


def _wait_irohrelay(relay, expected, what):
    """The answer once it is `expected` (the probe's result is cached for 5 s)."""
    wait_until(lambda: _metadata(relay, "irohrelay") == expected, what, timeout=20)


def test_metadata_irohrelay_only_while_the_iroh_relay_answers(turn_relay):
    relay = turn_relay.relay
    turn_relay.require_daemons("iroh-relay")
    advertised = f"O{relay.config.iroh_relay}"
    _wait_irohrelay(turn_relay, advertised, "irohrelay advertised")
    (daemon,) = [d for d in relay.daemons() if d.name == "iroh-relay"]
    relay.stop_daemon("iroh-relay")
    try:
        _wait_irohrelay(turn_relay, "N", "irohrelay withdrawn while the iroh relay is down")
    finally:
        relay.start_daemon(daemon)
        relay.wait_ready(only="iroh-relay")
    _wait_irohrelay(turn_relay, advertised, "irohrelay advertised again")
    log = turn_relay.log_text("metadata.log")
    assert log.count("iroh relay not answering") == 1, log  # one line for the outage


# -- /shared/admin -------------------------------------------------------------------------


def test_admin_contact_is_advertised_and_delivered(turn_relay):
    from .helpers import cleartext_message, maildir_messages

    domain = turn_relay.domain
    contact = turn_relay.relay.config.admin_contact
    assert contact == f"postmaster@{domain}"
    addr, password = turn_relay.new_account()
    client = turn_relay.imap(addr, password)
    try:
        typ, data = client._simple_command("GETMETADATA", '""', "/shared/admin")
        typ, data = client._untagged_response(typ, data, "METADATA")
    finally:
        client.logout()
    flat = [p for d in data for p in (d if isinstance(d, tuple) else (d,))]
    assert f"mailto:{contact}".encode() in b" ".join(p for p in flat if isinstance(p, bytes))

    sender = "someone@other.example"
    mailbox = turn_relay.user_dir(contact)
    markers = []
    for rcpt in (contact, f"root@{domain}", f"abuse@{domain}"):
        marker, message = cleartext_message(sender, [rcpt], secrets.token_hex(8))
        markers.append(marker)
        refused = turn_relay.send_port25(sender, [rcpt], message)
        assert refused == {}
        wait_until(
            lambda m=marker: any(m.encode() in body for body in maildir_messages(mailbox)),
            f"mail to {rcpt} in the admin mailbox",
        )
    # a user of the relay writes to the contact in cleartext (no key of the operator's)
    marker, message = cleartext_message(addr, [contact], secrets.token_hex(8))
    markers.append(marker)
    assert turn_relay.submit(465, addr, password, addr, [contact], message) == {}
    wait_until(
        lambda: any(marker.encode() in body for body in maildir_messages(mailbox)),
        "a user's cleartext mail in the admin mailbox",
    )
    refusals = [
        line
        for line in turn_relay.log_text("postfix.log").splitlines()
        if "doesn't exist" in line
        and any(f"{part}@{domain}" in line for part in ("postmaster", "root", "abuse"))
    ]
    assert refusals == []  # other tests' unknown users may be refused in this shared log
    # the operator reads the mailbox on the server (docs/turn.md): each message once. (The
    # mailbox also gets Postfix's own notices to postmaster, e.g. of other tests' faults.)
    conf = turn_relay.relay.layout.dovecot_config_dir / "dovecot.conf"
    for marker in markers:
        fetched = subprocess.run(
            turn_relay.relay.in_netns(
                ["doveadm", "-c", str(conf), "fetch", "-u", contact, "hdr.subject"]
                + ["mailbox", "INBOX", "header", "X-Test-Marker", marker]
            ),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert fetched.returncode == 0, fetched.stderr
        assert fetched.stdout.count("hdr.subject:") == 1, fetched.stdout
