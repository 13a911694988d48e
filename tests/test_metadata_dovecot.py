"""chatmail-metadata behind a real private Dovecot: IMAP METADATA over TLS and LMTP pushes.

The Dovecot instance is minimal (static passdb/userdb, everything under a temp dir, IMAPS on a
free loopback port, LMTP on a unix socket) and carries the chatmail settings that matter here:
mail_attribute_dict, imap_metadata, the XDELTAPUSH capability and the Lua push script.
"""

import http.server
import imaplib
import json
import os
import shutil
import signal
import smtplib
import socket
import ssl
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest

from conftest import daemon_argv, daemon_env, require, require_tool, write_ini

DOMAIN = "chat.example"
ALICE = f"alice1234@{DOMAIN}"
PASSWORD = "secret-password"
LUA_SCRIPT = Path(__file__).resolve().parent.parent / "chatmaild/metadata/push_notification.lua"

imaplib.Commands.setdefault("GETMETADATA", ("AUTH", "SELECTED"))
imaplib.Commands.setdefault("SETMETADATA", ("AUTH", "SELECTED"))

DOVECOT_CONF = """\
instance_name = meta-{port}
base_dir = {dir}/run
state_dir = {dir}/state
log_path = {dir}/dovecot.log
protocols = imap lmtp
listen = 127.0.0.1
ssl = required
ssl_cert = <{dir}/cert.pem
ssl_key = <{dir}/key.pem
auth_mechanisms = plain
first_valid_uid = 1
mail_uid = vmail
mail_gid = vmail
mail_home = {mailboxes}/%Lu
mail_location = maildir:~
passdb {{
  driver = static
  args = password={password}
}}
userdb {{
  driver = static
  args = uid=vmail gid=vmail home={mailboxes}/%Lu allow_all_users=yes
}}
mail_attribute_dict = proxy:{metadata_socket}:metadata
imap_metadata = yes
imap_capability = +XDELTAPUSH XCHATMAIL
protocol lmtp {{
  mail_plugins = $mail_plugins mail_lua notify push_notification push_notification_lua
}}
plugin {{
  push_notification_driver = lua:file={lua}
}}
service imap-login {{
  inet_listener imap {{
    port = 0
  }}
  inet_listener imaps {{
    port = {port}
    ssl = yes
  }}
}}
service lmtp {{
  unix_listener {dir}/lmtp.socket {{
    mode = 0666
  }}
}}
service anvil {{
  chroot =
}}
service imap-login {{
  chroot =
}}
"""


class PushServer:
    """A notification server in a thread: records POST bodies, answers `status`."""

    def __init__(self):
        self.status = 200
        self.bodies = []
        self.lock = threading.Condition()
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with owner.lock:
                    owner.bodies.append(body.decode())
                    status = owner.status
                    owner.lock.notify_all()
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}/notify"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def wait_for(self, count, timeout=30):
        with self.lock:
            assert self.lock.wait_for(lambda: len(self.bodies) >= count, timeout), self.bodies

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate, timeout=20, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


class Relay:
    """The metadata daemon and a private Dovecot, under one temp dir readable by vmail."""

    def __init__(self, push_url):
        self.dir = Path(tempfile.mkdtemp(prefix="chatmaild-meta-"))
        os.chmod(self.dir, 0o755)
        self.mailboxes = self.dir / "mailboxes"
        self.mailboxes.mkdir()
        shutil.chown(self.mailboxes, "vmail", "vmail")
        self.socket = self.dir / "metadata.socket"
        self.ini = write_ini(
            self.dir / "chatmail.ini",
            mail_domain=DOMAIN,
            mailboxes_dir=self.mailboxes,
            turn_socket_path=self.dir / "turn.socket",
            notification_url=push_url,
            iroh_relay_listen="",  # no iroh relay to probe: advertised as it is
        )
        self.port = free_port()
        self.daemon = None
        self.dovecot_conf = self.dir / "dovecot.conf"

    def start_daemon(self):
        self.log = open(self.dir / "metadata.log", "ab")
        self.daemon = subprocess.Popen(
            daemon_argv("chatmaild.metadata", self.socket, self.ini),
            env=daemon_env(),
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=self.log,
        )
        wait_until(self.socket.exists, what="metadata socket")
        os.chmod(self.socket, 0o666)  # Dovecot's mail processes run as vmail

    def stop_daemon(self):
        self.daemon.send_signal(signal.SIGTERM)
        assert self.daemon.wait(10) == 0
        self.log.close()

    def start_dovecot(self):
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
             "-subj", f"/CN={DOMAIN}", "-keyout", self.dir / "key.pem",
             "-out", self.dir / "cert.pem"],
            check=True, capture_output=True,
        )  # fmt: skip
        self.dovecot_conf.write_text(
            DOVECOT_CONF.format(
                dir=self.dir,
                port=self.port,
                mailboxes=self.mailboxes,
                password=PASSWORD,
                metadata_socket=self.socket,
                lua=LUA_SCRIPT,
            )
        )
        with open(self.dir / "dovecot.stderr", "ab") as err:
            subprocess.run(
                ["dovecot", "-c", self.dovecot_conf],
                stdin=subprocess.DEVNULL, stdout=err, stderr=err, check=True, timeout=30,
            )  # fmt: skip

        def listening():
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.5).close()
                return True
            except OSError:
                return False

        wait_until(listening, what="dovecot imaps")

    def dovecot_log(self):
        path = self.dir / "dovecot.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def daemon_log(self):
        return (self.dir / "metadata.log").read_text(errors="replace")

    def stop(self):
        if (self.dir / "run" / "master.pid").exists():
            subprocess.run(["doveadm", "-c", self.dovecot_conf, "stop"], capture_output=True)
        if self.daemon is not None and self.daemon.poll() is None:
            self.daemon.kill()
            self.daemon.wait()
        shutil.rmtree(self.dir, ignore_errors=True)

    def imap(self):
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        conn = imaplib.IMAP4_SSL("127.0.0.1", self.port, ssl_context=ctx, timeout=30)
        conn.login(ALICE, PASSWORD)
        return conn

    def deliver(self, rcpt=ALICE):
        with smtplib.LMTP(str(self.dir / "lmtp.socket"), timeout=30) as lmtp:
            lmtp.sendmail(
                f"bob123456@{DOMAIN}",
                [rcpt],
                f"From: bob123456@{DOMAIN}\r\nTo: {rcpt}\r\nSubject: x\r\n\r\nhello\r\n",
            )

    def metadata_json(self):
        path = self.mailboxes / ALICE / "metadata.json"
        return json.loads(path.read_text()) if path.exists() else {}

    def queue_files(self):
        d = self.mailboxes / "pending_notifications"
        return [n for n in os.listdir(d) if not n.endswith(".tmp")] if d.exists() else []


def getmetadata(conn, mailbox, entry):
    typ, data = conn._simple_command("GETMETADATA", mailbox, f"({entry})")
    assert typ == "OK", data
    typ, data = conn._untagged_response(typ, data, "METADATA")
    return data


def setmetadata(conn, mailbox, entry, value):
    typ, data = conn._simple_command("SETMETADATA", mailbox, f"({entry} {value})")
    return typ


def value_of(data):
    """The value of the single entry in a METADATA response (None for NIL)."""
    item = data[0]
    if isinstance(item, tuple):  # a literal
        return item[1].decode()
    text = item.decode()
    if text.endswith(" NIL)"):
        return None
    return text.rsplit(' "', 1)[1].rstrip(")").rstrip('"')


@pytest.fixture
def relay():
    require(os.geteuid() == 0, "root (Dovecot runs mail processes as vmail)")
    require_tool("dovecot", "doveadm", "openssl")
    require(Path("/usr/lib/dovecot/modules/lib22_push_notification_lua_plugin.so").exists(),
            "Dovecot push_notification_lua plugin")  # fmt: skip
    push = PushServer()
    relay = Relay(push.url)
    relay.push = push
    try:
        relay.start_daemon()
        relay.start_dovecot()
        yield relay
    except BaseException:
        print("--- dovecot.log\n" + relay.dovecot_log())
        print("--- metadata.log\n" + relay.daemon_log())
        raise
    finally:
        relay.stop()
        push.close()


def test_imap_metadata_and_lmtp_push(relay):
    push = relay.push
    try:
        conn = relay.imap()
        typ, caps = conn.capability()
        assert b"XDELTAPUSH" in caps[0] and b"XCHATMAIL" in caps[0] and b"METADATA" in caps[0]

        # server entries
        server = "/shared/vendor/deltachat/"
        assert value_of(getmetadata(conn, '""', server + "irohrelay")) == f"https://{DOMAIN}"
        assert value_of(getmetadata(conn, '""', server + "maxsmtprecipients")) == "1000"
        appversions = value_of(getmetadata(conn, '""', server + "appversions"))
        assert isinstance(json.loads(appversions), dict)
        assert value_of(getmetadata(conn, '""', server + "turn")) is None
        assert value_of(getmetadata(conn, '""', "/shared/vendor/deltachat/nothing")) is None
        typ, _ = conn._simple_command("GETMETADATA", "(DEPTH infinity)", '""', "(/shared)")
        assert typ == "OK"

        # device token
        assert value_of(getmetadata(conn, "INBOX", "/private/devicetoken")) is None
        assert setmetadata(conn, "INBOX", "/private/devicetoken", '"openpgp:tok1"') == "OK"
        assert value_of(getmetadata(conn, "INBOX", "/private/devicetoken")) == "openpgp:tok1"
        assert list(relay.metadata_json()["devicetoken"]) == ["openpgp:tok1"]
        huge = "x" * 5000
        assert setmetadata(conn, "INBOX", "/private/devicetoken", f'"{huge}"') != "OK"
        conn.logout()

        # a delivery runs the Lua script: exactly one POST of the token
        relay.deliver()
        push.wait_for(1)
        time.sleep(0.5)
        assert push.bodies == ["openpgp:tok1"]
        wait_until(lambda: not relay.queue_files(), what="queue drained")

        # 410: the token is removed from the user
        push.status = 410
        relay.deliver()
        push.wait_for(2)
        wait_until(lambda: not relay.metadata_json().get("devicetoken"), what="token removed")
        conn = relay.imap()
        assert value_of(getmetadata(conn, "INBOX", "/private/devicetoken")) is None
        assert setmetadata(conn, "INBOX", "/private/devicetoken", '"openpgp:tok2"') == "OK"
        conn.logout()

        # 500: retried (8 s after the first attempt), then delivered
        push.status = 500
        relay.deliver()
        push.wait_for(3)
        push.status = 200
        push.wait_for(4, timeout=30)
        assert push.bodies[2:] == ["openpgp:tok2", "openpgp:tok2"]
        wait_until(lambda: not relay.queue_files(), what="queue drained")

        # stop the daemon with a queued notification, start it: delivered, schedule kept
        push.status = 500
        relay.deliver()
        push.wait_for(5)
        wait_until(lambda: relay.queue_files(), what="queued retry")
        relay.stop_daemon()
        (name,) = relay.queue_files()
        item = json.loads((relay.mailboxes / "pending_notifications" / name).read_text())
        assert item["attempts"] == 1 and item["token"] == "openpgp:tok2"
        push.status = 200
        relay.start_daemon()
        push.wait_for(6, timeout=30)
        wait_until(lambda: not relay.queue_files(), what="queue drained after restart")
        assert len(push.bodies) == 6

        # unset removes the tokens
        conn = relay.imap()
        assert setmetadata(conn, "INBOX", "/private/devicetoken", "NIL") == "OK"
        assert value_of(getmetadata(conn, "INBOX", "/private/devicetoken")) is None
        conn.logout()
        assert "Panic" not in relay.dovecot_log() and "Fatal" not in relay.dovecot_log()
        assert "Traceback" not in relay.daemon_log()
    except BaseException:
        print("--- dovecot.log\n" + relay.dovecot_log())
        print("--- metadata.log\n" + relay.daemon_log())
        raise
