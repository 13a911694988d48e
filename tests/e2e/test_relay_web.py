"""The web front with the real nginx: port 443 by ALPN, /new, website, autoconfig, MTA-STS.

One relay for this module, in its own namespace, whose certificate comes from a test CA.
Its domain starts with `_`: Delta Chat verifies certificates against its compiled-in web PKI
roots only (SSL_CERT_FILE does not count) and skips the chain check for such host names,
its supported path for relays without a public certificate (docs/web.md). Python clients
verify strictly against the test CA.
"""

import concurrent.futures
import io
import os
import shutil
import socket
import tempfile
import time
import xml.etree.ElementTree as ET

import pytest

from chatmaild.relay import testca
from chatmaild.relay.instance import Relay
from chatmaild.relay.netns import entered

from .conftest import relay_prerequisites
from .helpers import RelayClients, client_tls, random_local_part
from .web_helpers import Web, http2_first_frame_type, read_line, tls_connect
from conftest import require_tool

WEB_DOMAIN = "_web.example"
PRIVACY = {
    "privacy_mail": "privacy@web.example",
    "privacy_postal": "Relay Operator, Example Street 1, 12345 Example Town",
    "privacy_supervisor": "Example Data Protection Authority",
}
LIMIT_REFILL = 3.0  # /new: 2 r/s, burst 5 -> an empty bucket refills in 2.5 s


class WebRelay(RelayClients):
    def __init__(self, relay, ca_file):
        super().__init__(relay)
        self.ca_file = ca_file
        self.web = Web(relay.netns, self.domain, ca_file)

    def imap_login_993(self, addr, password):
        with entered(self.netns):
            client = __import__("imaplib").IMAP4_SSL(
                "127.0.0.1", 993, ssl_context=client_tls(), timeout=30
            )
        try:
            client.login(addr, password)
        finally:
            client.logout()


@pytest.fixture(scope="module")
def web_relay():
    relay_prerequisites()
    require_tool("nginx", "nft", "/usr/lib/nginx/modules/ngx_stream_module.so")
    state_dir = tempfile.mkdtemp(prefix="chatmaild-e2e-web-", dir="/tmp")
    logs = []
    instance = Relay(
        state_dir,
        netns=f"chatmaild-web-{os.getpid()}",
        mail_domain=WEB_DOMAIN,
        ca_dir=os.path.join(state_dir, "ca"),
        log=logs.append,
        ini_extra=PRIVACY,
    )
    try:
        instance.up()
        yield WebRelay(instance, testca.ca_cert_path(instance.ca_dir))
    finally:
        instance.down()
        if os.environ.get("CHATMAILD_E2E_KEEP"):
            print(f"relay state kept in {state_dir}")
        else:
            shutil.rmtree(state_dir, ignore_errors=True)


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
    """The PROXY hop carries the client's address to the site (per-address limits)."""
    web_relay.web.request("GET", "/?client-address-check")
    log = web_relay.log_text("nginx-access.log").splitlines()
    (line,) = [x for x in log if "client-address-check" in x][-1:]
    assert line.startswith("127.0.0.1 ")


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


def test_iroh_and_mxdeliv_are_proxied_to_their_ports(web_relay):
    """Nothing listens on 3340 (iroh-relay) or 10082 (mxdeliv) yet: nginx answers 502."""
    for path in ("/relay", "/ping", "/generate_204"):
        assert web_relay.web.request("GET", path)[0] == 502
    assert web_relay.web.request("POST", "/mxdeliv", body=b"x")[0] == 502
    log = web_relay.log_text("nginx-error.log")
    assert "127.0.0.1:3340" in log and "127.0.0.1:10082" in log


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
        doc = __import__("json").loads(body)
        local, _, domain = doc["email"].partition("@")
        assert domain == WEB_DOMAIN and len(local) == 9
        assert not web_relay.user_dir(doc["email"]).exists()
        web_relay.imap_login_993(doc["email"], doc["password"])  # created at first login
        assert (web_relay.user_dir(doc["email"]) / "password").exists()


def test_burst_from_one_address_is_limited_and_every_address_is_unique_and_works(
    web_relay, limiter_refilled
):
    with concurrent.futures.ThreadPoolExecutor(12) as pool:
        results = list(pool.map(lambda _: web_relay.web.new_account(), range(30)))
    statuses = [status for status, _ in results]
    accounts = [doc for status, doc in results if status == 200]
    assert set(statuses) <= {200, 429, 503}, statuses
    assert 429 in statuses or 503 in statuses
    assert 1 <= len(accounts) <= 10  # burst 5 plus what 2 r/s refills meanwhile
    addrs = [doc["email"] for doc in accounts]
    assert len(set(addrs)) == len(addrs)
    for doc in accounts:
        web_relay.imap_login_993(doc["email"], doc["password"])
        assert (web_relay.user_dir(doc["email"]) / "password").exists()
    # nothing crashed: the service still answers once the limit lets requests through
    time.sleep(LIMIT_REFILL)
    assert web_relay.web.new_account()[0] == 200
    assert "Traceback" not in web_relay.log_text("web.log")


def test_nocreate_file_closes_new_and_first_logins(web_relay, limiter_refilled):
    nocreate = web_relay.relay.config.nocreate_file
    nocreate.touch()
    try:
        status, doc = web_relay.web.new_account()
        assert status == 403 and "closed" in doc["reason"]
        addr = f"{random_local_part()}@{WEB_DOMAIN}"
        with pytest.raises(__import__("imaplib").IMAP4.error):
            web_relay.imap_login_993(addr, "a-password-long-enough")
    finally:
        nocreate.unlink()
    time.sleep(LIMIT_REFILL)
    assert web_relay.web.new_account()[0] == 200
