"""The web front with the real nginx: port 443 by ALPN, /new, website, autoconfig, MTA-STS.

One relay for this module, in its own namespace, whose certificate comes from a test CA.
Its domain starts with `_`: Delta Chat verifies certificates against its compiled-in web PKI
roots only (SSL_CERT_FILE does not count) and skips the chain check for such host names,
its supported path for relays without a public certificate (docs/web.md). Python clients
verify strictly against the test CA.
"""

import concurrent.futures
import http.client
import imaplib
import io
import json
import os
import shutil
import socket
import tempfile
import time
import xml.etree.ElementTree as ET

import pytest

from chatmaild.irohrelay import frames as irohfr
from chatmaild.irohrelay import handshake as irohhs
from chatmaild.relay import testca
from chatmaild.relay.netns import entered, exec_prefix, tcp_port_open

from .conftest import E2ERelay, running_relay
from .deltachat_helpers import chat_with, rpc_server_binary, rpc_under, secure_join
from .helpers import client_tls, random_local_part
from .web_helpers import Web, http2_first_frame_type, read_line, run_in_netns, tls_connect
from conftest import require_tool

WEB_DOMAIN = "_web.example"
PRIVACY = {
    "privacy_mail": "privacy@web.example",
    "privacy_postal": "Relay Operator, Example Street 1, 12345 Example Town",
    "privacy_supervisor": "Example Data Protection Authority",
}
LIMIT_REFILL = 3.0  # /new: 2 r/s, burst 5 -> an empty bucket refills in 2.5 s


class WebRelay(E2ERelay):
    def __init__(self, relay, ca_file):
        super().__init__(relay, notifications=None)
        self.ca_file = ca_file
        self.web = Web(relay.netns, self.domain, ca_file)

    def imap_login_993(self, addr, password):
        with entered(self.netns):
            client = imaplib.IMAP4_SSL("127.0.0.1", 993, ssl_context=client_tls(), timeout=30)
        try:
            client.login(addr, password)
        finally:
            client.logout()


@pytest.fixture(scope="module")
def web_relay():
    require_tool("nginx", "nft", "/usr/lib/nginx/modules/ngx_stream_module.so")
    logs = []
    with running_relay(
        "chatmaild-web",
        with_ca=True,
        mail_domain=WEB_DOMAIN,
        log=logs.append,
        ini_extra=PRIVACY,
    ) as instance:
        yield WebRelay(instance, testca.ca_cert_path(instance.ca_dir))


@pytest.fixture
def limiter_refilled():
    """/new is limited per client address and every test comes from 127.0.0.1."""
    yield
    time.sleep(LIMIT_REFILL)


# -- port 443 by ALPN ---------------------------------------------------------------------


def test_alpn_imap_reaches_dovecot(web_relay):
    sock = tls_connect(web_relay.netns, WEB_DOMAIN, web_relay.ca_file, alpn=["imap"])
    with sock:
        assert read_line(sock).startswith(b"* OK")
        sock.sendall(b"a1 CAPABILITY\r\n")
        caps = read_line(sock)
        assert b"XCHATMAIL" in caps


def test_alpn_smtp_reaches_postfix(web_relay):
    sock = tls_connect(web_relay.netns, WEB_DOMAIN, web_relay.ca_file, alpn=["smtp"])
    with sock:
        greeting = read_line(sock)
        assert greeting.startswith(b"220 ") and b"ESMTP" in greeting
        sock.sendall(b"EHLO client.example\r\n")
        assert read_line(sock).startswith(b"250")


def test_alpn_h2_reaches_the_https_site(web_relay):
    sock = tls_connect(web_relay.netns, WEB_DOMAIN, web_relay.ca_file, alpn=["h2"])
    with sock:
        assert sock.selected_alpn_protocol() == "h2"
        assert http2_first_frame_type(sock) == 0x4  # the server's SETTINGS frame


@pytest.mark.parametrize("alpn", [["http/1.1"], None], ids=["http/1.1", "no-alpn"])
def test_alpn_http1_and_none_reach_the_https_site(web_relay, alpn):
    sock = tls_connect(web_relay.netns, WEB_DOMAIN, web_relay.ca_file, alpn=alpn)
    with sock:
        assert sock.selected_alpn_protocol() in (None, "http/1.1")
        sock.sendall(f"GET / HTTP/1.1\r\nHost: {WEB_DOMAIN}\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    assert data.startswith(b"HTTP/1.1 200")
    assert WEB_DOMAIN.encode() in data


def test_port_443_keeps_the_client_address_for_the_site(web_relay):
    """The PROXY hop carries the client's address to the site (the stream proxy itself
    connects from 127.0.0.1, so without it every client would be 127.0.0.1)."""
    web_relay.web.request("GET", "/?client-address-check", source="127.0.0.2")
    log = web_relay.log_text("nginx-access.log").splitlines()
    (line,) = [x for x in log if "client-address-check" in x]
    assert line.startswith("127.0.0.2 ")


# -- the site -------------------------------------------------------------------------------


def test_website_shows_domain_join_link_qr_and_privacy_contacts(web_relay):
    import segno

    status, headers, body = web_relay.web.request("GET", "/")
    assert status == 200 and headers["content-type"].startswith("text/html")
    page = body.decode()
    url = f"dcaccount:https://{WEB_DOMAIN}/new"
    assert f"<h1>{WEB_DOMAIN}</h1>" in page
    assert f'href="{url}"' in page and 'src="qr-new.svg"' in page
    for value in PRIVACY.values():
        assert value in page

    status, headers, svg = web_relay.web.request("GET", "/qr-new.svg")
    assert status == 200 and headers["content-type"] == "image/svg+xml"
    expected = io.BytesIO()
    segno.make(url, error="m").save(expected, kind="svg", scale=8, border=2, xmldecl=False)
    assert svg == expected.getvalue()  # the QR code encodes exactly the dcaccount: URL


def test_mta_sts_policy_matches_the_ini(web_relay):
    for host in (WEB_DOMAIN, f"mta-sts.{WEB_DOMAIN}"):
        status, headers, body = web_relay.web.request("GET", "/.well-known/mta-sts.txt", host)
        assert status == 200 and headers["content-type"].startswith("text/plain")
        fields = dict(line.split(": ", 1) for line in body.decode().splitlines())
        assert fields == {
            "version": "STSv1",
            "mode": "enforce",
            "mx": web_relay.relay.config.mail_domain,
            "max_age": "2419200",
        }


def test_autoconfig_xml_parses_and_matches_the_ini(web_relay):
    path = "/.well-known/autoconfig/mail/config-v1.1.xml"
    status, headers, body = web_relay.web.request("GET", path)
    assert status == 200 and "xml" in headers["content-type"]
    root = ET.fromstring(body)
    assert root.tag == "clientConfig" and root.get("version") == "1.1"
    provider = root.find("emailProvider")
    domain = web_relay.relay.config.mail_domain
    assert provider.get("id") == domain and provider.findtext("domain") == domain

    def servers(tag):
        out = []
        for server in provider.findall(tag):
            assert server.findtext("hostname") == domain
            assert server.findtext("username") == "%EMAILADDRESS%"
            assert server.findtext("authentication") == "password-cleartext"
            out.append((int(server.findtext("port")), server.findtext("socketType")))
        return out

    assert servers("incomingServer") == [(993, "SSL"), (143, "STARTTLS"), (443, "SSL")]
    assert servers("outgoingServer") == [(465, "SSL"), (587, "STARTTLS"), (443, "SSL")]


def test_www_redirects_to_the_domain(web_relay):
    status, headers, _ = web_relay.web.request("GET", "/some/page?x=1", f"www.{WEB_DOMAIN}")
    assert status == 301
    assert headers["location"] == f"https://{WEB_DOMAIN}/some/page?x=1"


def test_stub_status_on_8484(web_relay):
    with entered(web_relay.netns):
        sock = socket.create_connection(("127.0.0.1", 8484), timeout=10)
    with sock:
        sock.sendall(b"GET /nginx_status HTTP/1.0\r\n\r\n")
        data = b""
        while chunk := sock.recv(4096):
            data += chunk
    assert data.startswith(b"HTTP/1.1 200") and b"Active connections:" in data


def test_mxdeliv_is_proxied_to_its_port(web_relay):
    """/mxdeliv reaches filtermail incoming on 10082 (tests/e2e/test_relay_mxdeliv.py tests
    it in depth)."""
    status, _, body = web_relay.web.request("POST", "/mxdeliv", body=b"x")
    assert (status, body) == (400, b"554 5.5.1 Error: no valid recipients")


def test_iroh_relay_probes_through_nginx(web_relay):
    """chatmail-iroh-relay answers the probes iroh's net_report makes, through port 443."""
    web_relay.require_daemons("iroh-relay")
    status, headers, body = web_relay.web.request("GET", "/ping")
    assert (status, body) == (200, b"") and headers["access-control-allow-origin"] == "*"
    conn_headers = {"X-Tailscale-Challenge": "abc.123"}
    conn = http.client.HTTPSConnection(web_relay.domain, 443, timeout=30)
    conn.sock = tls_connect(web_relay.netns, web_relay.domain, web_relay.ca_file)
    try:
        conn.request("GET", "/generate_204", headers=conn_headers)
        resp = conn.getresponse()
        assert resp.status == 204
        assert resp.getheader("X-Tailscale-Response") == "response abc.123"
    finally:
        conn.close()
    assert web_relay.web.request("GET", "/relay")[0] == 400  # no Upgrade header


def _relay_over_443(web_relay, key):
    """A relay client through nginx (TLS on 443, `GET /relay` upgraded), handshake sent."""
    sock = tls_connect(web_relay.netns, web_relay.domain, web_relay.ca_file)
    host = web_relay.domain
    sock.sendall(f"GET /relay HTTP/1.1\r\nHost: {host}\r\nUpgrade: iroh derp http\r\n\r\n".encode())
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        chunk = sock.recv(1)
        assert chunk, head
        head += chunk
    assert head.startswith(b"HTTP/1.1 101 "), head
    assert b"upgrade: iroh derp http" in head.lower()
    sock.sendall(irohhs.client_info(key))
    return sock


def _next_frame(sock, decoder, pending):
    while not pending:
        data = sock.recv(65536)
        assert data, "relay closed the connection"
        pending.extend(decoder.feed(data))
    return pending.pop(0)


def test_iroh_relay_forwards_through_nginx(web_relay):
    """Two relay clients through nginx's /relay location exchange packets both ways."""
    web_relay.require_daemons("iroh-relay")
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    keys = [Ed25519PrivateKey.generate() for _ in range(2)]
    pubs = [irohhs.public_key(k) for k in keys]
    socks = [_relay_over_443(web_relay, k) for k in keys]
    decoders, pendings = [irohfr.FrameDecoder(), irohfr.FrameDecoder()], [[], []]
    try:
        for i, sock in enumerate(socks):  # a Pong means the relay has the client registered
            sock.sendall(irohfr.ping(b"%8d" % i))
            assert _next_frame(sock, decoders[i], pendings[i]) == (irohfr.PONG, b"%8d" % i)
        data = os.urandom(30000)
        socks[0].sendall(irohfr.send_packet(pubs[1], data))
        assert _next_frame(socks[1], decoders[1], pendings[1]) == (
            irohfr.RECV_PACKET,
            pubs[0] + data,
        )
        socks[1].sendall(irohfr.send_packet(pubs[0], b"back"))
        assert _next_frame(socks[0], decoders[0], pendings[0]) == (
            irohfr.RECV_PACKET,
            pubs[1] + b"back",
        )
    finally:
        for sock in socks:
            sock.close()


# -- /new -------------------------------------------------------------------------------------


def test_get_new_redirects_to_dcaccount_on_a_relay_with_a_real_certificate(web_relay):
    for path in ("/new", "/cgi-bin/newemail.py"):
        status, headers, _ = web_relay.web.request("GET", path)
        assert status == 301
        assert headers["location"] == f"dcaccount:https://{WEB_DOMAIN}/new"


def test_post_new_hands_out_an_address_that_works(web_relay, limiter_refilled):
    for path in ("/new", "/cgi-bin/newemail.py"):
        status, headers, body = web_relay.web.request("POST", path)
        assert status == 200 and headers["content-type"] == "application/json"
        doc = json.loads(body)
        local, _, domain = doc["email"].partition("@")
        assert domain == WEB_DOMAIN and len(local) == 9
        assert not web_relay.user_dir(doc["email"]).exists()
        web_relay.imap_login_993(doc["email"], doc["password"])  # created at first login
        assert (web_relay.user_dir(doc["email"]) / "password").exists()


def test_burst_from_one_address_is_limited_and_every_address_is_unique_and_works(
    web_relay, limiter_refilled
):
    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(12) as pool:
        results = list(pool.map(lambda _: web_relay.web.new_account(), range(30)))
    elapsed = time.monotonic() - started
    statuses = [status for status, _ in results]
    accounts = [doc for status, doc in results if status == 200]
    assert set(statuses) <= {200, 429, 503}, statuses
    assert 429 in statuses or 503 in statuses
    # nginx lets the first and a burst of 5 through, then 2 a second: a loaded machine that
    # took longer over the 30 requests was let through more
    assert 1 <= len(accounts) <= 6 + 2 * elapsed, (statuses, elapsed)
    addrs = [doc["email"] for doc in accounts]
    assert len(set(addrs)) == len(addrs)
    for doc in accounts:
        web_relay.imap_login_993(doc["email"], doc["password"])
        assert (web_relay.user_dir(doc["email"]) / "password").exists()
    # nothing crashed: the service still answers once the limit lets requests through
    time.sleep(LIMIT_REFILL)
    assert web_relay.web.new_account()[0] == 200
    assert "Traceback" not in web_relay.log_text("web.log")


def test_the_new_limit_is_per_client_address(web_relay):
    # at once, so that nginx's refill of 2 a second cannot keep up even on a loaded machine
    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(12) as pool:
        statuses = list(
            pool.map(lambda _: web_relay.web.new_account(source="127.0.0.4")[0], range(12))
        )
    elapsed = time.monotonic() - started
    assert set(statuses) <= {200, 429, 503} and 429 in statuses, statuses
    # the burst of 5 got past nginx (503: chatmail-web itself was busy), and not many more
    let_through = len(statuses) - statuses.count(429)
    assert 5 <= let_through <= 6 + 2 * elapsed, (statuses, elapsed)
    # another client address has its own budget, even right after that burst
    assert web_relay.web.new_account(source="127.0.0.5")[0] == 200


def test_nocreate_file_closes_new_and_first_logins(web_relay, limiter_refilled):
    nocreate = web_relay.relay.config.nocreate_file
    nocreate.touch()
    try:
        status, doc = web_relay.web.new_account()
        assert status == 403 and "closed" in doc["reason"]
        addr = f"{random_local_part()}@{WEB_DOMAIN}"
        with pytest.raises(imaplib.IMAP4.error):
            web_relay.imap_login_993(addr, "a-password-long-enough")
    finally:
        nocreate.unlink()
    time.sleep(LIMIT_REFILL)
    assert web_relay.web.new_account()[0] == 200


# -- Delta Chat -------------------------------------------------------------------------------

CLIENT_UID = 64101  # the blocked client's uid (no passwd entry needed)
MAIL_PORTS = (143, 465, 587, 993)
NFT_TABLE = "chatmaild_client_block"


def _padlocked_messages_both_ways(alice, bob):
    """Secure-join, then an encrypted message each way; both show the padlock."""
    alice_addr, bob_addr = (a.get_config("configured_addr") for a in (alice, bob))
    secure_join(bob, alice)
    chat_with(alice, bob_addr).send_text("hello bob")
    msg = bob.wait_for_incoming_msg().get_snapshot()
    assert msg.text == "hello bob" and msg.show_padlock
    chat_with(bob, alice_addr).send_text("hello alice")
    msg = alice.wait_for_incoming_msg().get_snapshot()
    assert msg.text == "hello alice" and msg.show_padlock


def test_onboarding_from_the_dcaccount_qr_alone(web_relay, tmp_path, limiter_refilled):
    """As a new user does it: scan the website's QR, nothing else (no server settings)."""
    from deltachat_rpc_client import DeltaChat

    web_relay.require_daemons("doveauth", "web", "filtermail-outgoing")
    qr = f"dcaccount:https://{WEB_DOMAIN}/new"
    with (
        open(tmp_path / "rpc.stderr", "wb") as stderr,
        rpc_under(exec_prefix(web_relay.netns), tmp_path / "accounts", stderr) as rpc,
    ):
        deltachat = DeltaChat(rpc)
        accounts = []
        for _ in range(2):
            account = deltachat.add_account()
            assert account.check_qr(qr)["kind"] == "account"
            account.add_transport_from_qr(qr)
            account.bring_online()
            addr = account.get_config("configured_addr")
            assert addr.endswith(f"@{WEB_DOMAIN}")
            assert (web_relay.user_dir(addr) / "password").exists()  # doveauth created it
            accounts.append(account)
        _padlocked_messages_both_ways(*accounts)
    # the core POSTed to /new, then configured itself from the autoconfig XML
    access = web_relay.log_text("nginx-access.log")
    assert access.count('"POST /new HTTP/1.1" 200') >= 2
    assert access.count('"GET /.well-known/autoconfig/mail/config-v1.1.xml HTTP/1.1" 200') >= 2


def _nft(netns, script):
    proc = run_in_netns(netns, ["nft", "-f", "-"], input=script)
    assert proc.returncode == 0, proc.stderr


def _connects_as_client(netns, ports):
    """{port: connected?} for TCP connects to 127.0.0.1 made as the client's uid."""
    probe = (
        "import socket, sys\n"
        "for port in map(int, sys.argv[1:]):\n"
        "    s = socket.socket()\n"
        "    s.settimeout(5)\n"
        "    print(port, s.connect_ex(('127.0.0.1', port)) == 0)\n"
    )
    argv = ["setpriv", f"--reuid={CLIENT_UID}", f"--regid={CLIENT_UID}", "--clear-groups"]
    proc = run_in_netns(
        netns, [*argv, "/usr/bin/python3", "-c", probe, *map(str, ports)], timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    return {int(p): ok == "True" for p, ok in (line.split() for line in proc.stdout.splitlines())}


@pytest.fixture
def mail_ports_blocked_for_client(web_relay):
    """nft in the relay's namespace: the client's uid cannot reach 143/465/587/993. The
    relay's own loopback traffic (nginx -> Dovecot/Postfix) is other uids and passes."""
    require_tool("nft", "/usr/bin/python3")
    ports = ", ".join(map(str, MAIL_PORTS))
    _nft(
        web_relay.netns,
        f"table inet {NFT_TABLE} {{\n"
        "  chain output {\n"
        "    type filter hook output priority 0; policy accept;\n"
        f"    meta skuid {CLIENT_UID} tcp dport {{ {ports} }} reject with tcp reset\n"
        "  }\n"
        "}\n",
    )
    try:
        yield
    finally:
        _nft(web_relay.netns, f"delete table inet {NFT_TABLE}\n")


def test_through_port_443_only(web_relay, mail_ports_blocked_for_client):
    from deltachat_rpc_client import DeltaChat

    web_relay.require_daemons("doveauth", "filtermail-outgoing")
    reach = _connects_as_client(web_relay.netns, (*MAIL_PORTS, 443))
    assert reach == {143: False, 465: False, 587: False, 993: False, 443: True}
    # the relay itself still reaches Dovecot and Postfix over loopback
    assert all(tcp_port_open(web_relay.netns, port) for port in MAIL_PORTS)

    home = tempfile.mkdtemp(prefix="chatmaild-e2e-dc443-", dir="/tmp")
    try:
        os.chown(home, CLIENT_UID, CLIENT_UID)
        # a copy the client's uid can execute wherever the checkout lies (e.g. under /root)
        server = shutil.copy(rpc_server_binary(), home)
        prefix = ["setpriv", f"--reuid={CLIENT_UID}", f"--regid={CLIENT_UID}", "--clear-groups"]
        accounts_dir = os.path.join(home, "accounts")
        with (
            open(os.path.join(home, "rpc.stderr"), "wb") as stderr,
            rpc_under(
                [*exec_prefix(web_relay.netns), *prefix], accounts_dir, stderr, server
            ) as rpc,
        ):
            deltachat = DeltaChat(rpc)
            accounts = []
            for _ in range(2):
                account = deltachat.add_account()
                account.add_or_update_transport(
                    {
                        "addr": f"{random_local_part()}@{WEB_DOMAIN}",
                        "password": random_local_part(20),
                        "imapServer": WEB_DOMAIN,
                        "imapPort": 443,
                        "imapSecurity": "ssl",
                        "smtpServer": WEB_DOMAIN,
                        "smtpPort": 443,
                        "smtpSecurity": "ssl",
                    }
                )
                account.bring_online()
                accounts.append(account)
            _padlocked_messages_both_ways(*accounts)
    finally:
        shutil.rmtree(home, ignore_errors=True)
