"""Clients and messages for the end-to-end tests against a running relay.

Client sockets are opened with the calling thread inside the relay's network namespace
(`chatmaild.relay.netns.entered`); a socket stays in the namespace it was created in, so
the rest of the test talks to the relay with the standard library's smtplib and imaplib.
"""

import base64
import gzip
import http.server
import imaplib
import os
import secrets
import smtplib
import ssl
import string
import threading
import time
import uuid
from email.utils import formatdate

from chatmaild.metrics.scrape import samples
from chatmaild.relay.netns import entered

WAIT_TIMEOUT = 30.0

imaplib.Commands.setdefault("GETMETADATA", ("AUTH", "SELECTED"))
imaplib.Commands.setdefault("SETMETADATA", ("AUTH", "SELECTED"))


def client_tls():
    """The relay's certificate is self-signed: clients accept it as Delta Chat is told to."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def random_local_part(length=9):
    alphabet = string.ascii_lowercase + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(length))


def wait_until(predicate, what, timeout=WAIT_TIMEOUT, interval=0.1):
    """Poll until `predicate()` returns something truthy, then return it."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what} after {timeout:.0f} s")
        time.sleep(interval)


# -- messages ---------------------------------------------------------------------------


def _new_format_packet(tag, body):
    """A new-format packet (RFC 4880 4.2.2): a one-octet length below 192, else five octets."""
    if len(body) < 192:
        return bytes([0xC0 | tag, len(body)]) + body
    return bytes([0xC0 | tag, 0xFF]) + len(body).to_bytes(4, "big") + body


def pgp_message_armor(payload_size=100):
    """An ASCII-armored OpenPGP message: one PKESK, then one SEIPD ending at the last byte
    whose encrypted payload is `payload_size` random bytes."""
    pkesk = _new_format_packet(1, b"\x03" + os.urandom(8) + b"\x12" + os.urandom(40))
    seipd = _new_format_packet(18, b"\x01" + os.urandom(payload_size))
    b64 = base64.b64encode(pkesk + seipd).decode()
    lines = [b64[i : i + 64] for i in range(0, len(b64), 64)]
    armor = ["-----BEGIN PGP MESSAGE-----", "", *lines, "-----END PGP MESSAGE-----", ""]
    return "\r\n".join(armor)


def _headers(mail_from, to, subject, marker, extra=()):
    return [
        f"From: <{mail_from}>",
        f"To: {', '.join(f'<{a}>' for a in to)}",
        f"Subject: {subject}",
        f"Date: {formatdate()}",
        f"Message-ID: <{marker}@relay.test>",
        f"X-Test-Marker: {marker}",
        "MIME-Version: 1.0",
        *extra,
    ]


def encrypted_message(mail_from, to, marker=None, payload_size=100):
    """(marker, bytes) of an RFC 3156 multipart/encrypted message (OpenPGP payload of
    about `payload_size` bytes)."""
    marker = marker or uuid.uuid4().hex
    boundary = "b-" + uuid.uuid4().hex
    head = _headers(
        mail_from,
        to,
        "[...]",
        marker,
        [
            f'Content-Type: multipart/encrypted; protocol="application/pgp-encrypted"; '
            f'boundary="{boundary}"'
        ],
    )
    body = [
        "",
        f"--{boundary}",
        "Content-Type: application/pgp-encrypted",
        "",
        "Version: 1",
        "",
        f"--{boundary}",
        'Content-Type: application/octet-stream; name="encrypted.asc"',
        "",
        pgp_message_armor(payload_size).rstrip("\r\n"),
        "",
        f"--{boundary}--",
        "",
    ]
    return marker, "\r\n".join(head + body).encode()


def cleartext_message(mail_from, to, marker=None):
    marker = marker or uuid.uuid4().hex
    head = _headers(mail_from, to, "hello", marker, ["Content-Type: text/plain; charset=utf-8"])
    return marker, "\r\n".join(head + ["", "a cleartext message", ""]).encode()


def mailer_daemon_report(to, domain="other.example", marker=None):
    marker = marker or uuid.uuid4().hex
    boundary = "r-" + uuid.uuid4().hex
    head = _headers(
        f"MAILER-DAEMON@{domain}",
        [to],
        "Undelivered Mail Returned to Sender",
        marker,
        [
            "Auto-Submitted: auto-replied",
            f'Content-Type: multipart/report; report-type=delivery-status; boundary="{boundary}"',
        ],
    )
    body = [
        "",
        f"--{boundary}",
        "Content-Type: text/plain",
        "",
        "Your message could not be delivered.",
        "",
        f"--{boundary}",
        "Content-Type: message/delivery-status",
        "",
        f"Reporting-MTA: dns; {domain}",
        "",
        "Final-Recipient: rfc822; nobody@" + domain,
        "Action: failed",
        "Status: 5.1.1",
        "",
        f"--{boundary}--",
        "",
    ]
    return marker, "\r\n".join(head + body).encode()


# -- stored mail ------------------------------------------------------------------------


def read_stored(path):
    """A Maildir file's message bytes (Dovecot's zlib plugin stores them gzip-compressed)."""
    data = path.read_bytes()
    return gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data


DELIVERY_HEADERS = (b"return-path:", b"delivered-to:")


def wire_form(stored):
    """A stored message as it crossed SMTP: CRLF line ends, without the delivery headers
    (Return-Path, Delivered-To) that LMTP delivery put on top."""
    lines = stored.replace(b"\r\n", b"\n").split(b"\n")
    while lines and lines[0].lower().startswith(DELIVERY_HEADERS):
        lines.pop(0)
    return b"\r\n".join(lines)


def maildir_messages(mailbox_dir):
    """Bytes of every message in the INBOX Maildir (new/ and cur/)."""
    out = []
    for sub in ("new", "cur"):
        d = mailbox_dir / sub
        if d.is_dir():
            out.extend(read_stored(p) for p in sorted(d.iterdir()) if p.is_file())
    return out


# -- notification server ----------------------------------------------------------------


class NotificationServer:
    """A local push notification endpoint inside the namespace, recording every POST."""

    def __init__(self, netns, port):
        self.posts = []
        self.cond = threading.Condition()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                n = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(n).decode(errors="replace")
                with server.cond:
                    server.posts.append((self.path, body))
                    server.cond.notify_all()
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        with entered(netns):
            self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def posts_with(self, body):
        with self.cond:
            return [p for p in self.posts if p[1] == body]

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


# -- clients ----------------------------------------------------------------------------


class RelayClients:
    """SMTP and IMAP clients of one running relay (see tests/e2e/conftest.py)."""

    def __init__(self, relay):
        self.relay = relay
        self.netns = relay.netns
        self.domain = relay.config.mail_domain
        self.mailboxes_dir = relay.config.mailboxes_dir

    def smtp(self, port):
        """A connected SMTP client: 465 wrapped in TLS, 587/25 after STARTTLS."""
        with entered(self.netns):
            if port == 465:
                client = smtplib.SMTP_SSL("127.0.0.1", port, context=client_tls(), timeout=30)
            else:
                client = smtplib.SMTP("127.0.0.1", port, timeout=30)
        client.ehlo("client.relay.test")
        if port != 465:
            client.starttls(context=client_tls())
            client.ehlo("client.relay.test")
        return client

    def submit(self, port, login, password, mail_from, rcpts, message):
        """Send one message over submission; returns smtplib's refused dict (empty)."""
        client = self.smtp(port)
        try:
            client.login(login, password)
            return client.sendmail(mail_from, rcpts, message)
        finally:
            client.close()

    def send_port25(self, mail_from, rcpts, message):
        """Send one message to port 25 (STARTTLS) from 127.0.0.1, as another relay would."""
        client = self.smtp(25)
        try:
            return client.sendmail(mail_from, rcpts, message)
        finally:
            client.close()

    def imap(self, addr, password):
        with entered(self.netns):
            client = imaplib.IMAP4_SSL("127.0.0.1", 993, ssl_context=client_tls(), timeout=30)
        client.login(addr, password)
        return client

    def new_account(self):
        """(addr, password) of a fresh account, created by its first IMAP login."""
        addr = f"{random_local_part()}@{self.domain}"
        password = secrets.token_hex(10)
        client = self.imap(addr, password)
        client.logout()
        return addr, password

    def user_dir(self, addr):
        return self.mailboxes_dir / addr

    def inbox_has(self, addr, password, marker):
        """Whether the INBOX holds the message with `marker`, looked up over IMAP."""
        client = self.imap(addr, password)
        try:
            client.select("INBOX", readonly=True)
            typ, data = client.search(None, "HEADER", "X-Test-Marker", marker)
            return typ == "OK" and bool(data[0].split())
        finally:
            client.logout()

    def wait_delivered(self, addr, password, marker):
        wait_until(lambda: self.inbox_has(addr, password, marker), f"{marker} in {addr}")

    def log_text(self, name):
        return (self.relay.log_dir / name).read_text(errors="replace")


# -- metrics ----------------------------------------------------------------------------


class Endpoints:
    """Scrapes of every metrics endpoint of a relay (`relay.relay` its Relay), from inside
    its namespace."""

    def __init__(self, relay):
        self.relay = relay
        self.specs = {d.name: d.metrics for d in relay.relay.daemons() if d.metrics}

    def scrape(self, name):
        with entered(self.relay.netns):
            return samples(self.specs[name])

    def all(self):
        return {name: self.scrape(name) for name in self.specs}


def value(scraped, name, **labels):
    """The sample `name{labels}` of a scrape; 0.0 where it is absent."""
    key = (name, tuple(sorted(labels.items())))
    return scraped.get(key, 0.0)
