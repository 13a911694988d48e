"""A private Dovecot 2.3 instance with our dict daemons, for real-peer tests.

Everything lives in one temp dir (base_dir, state_dir, logs, certificate, mailboxes, sockets)
that the `vmail` user can reach. Dovecot listens for IMAPS on 127.0.0.1 at a free port, asks
doveauth for passdb/userdb over the dict protocol, and records logins through lastlogin.
The daemons run as `vmail` (like on a relay, where Dovecot's auth-worker and the imap
processes connect to their sockets) through `run_as_vmail.py`.

Usage:

    with DovecotInstance(extra_config="mail_attribute_dict = proxy:{metadata_socket}:metadata")
        as dovecot:
        dovecot.start_daemon("chatmaild.metadata", dovecot.metadata_socket)
        dovecot.start()
        dovecot.doveadm("auth", "test", addr, password)
        imap = dovecot.imap_login(addr, password)

`extra_config` is appended to dovecot.conf; the placeholders `{dir}`, `{port}`,
`{doveauth_socket}`, `{lastlogin_socket}`, `{metadata_socket}`, `{mailboxes_dir}` and
`{mail_domain}` in it are filled in (other braces, e.g. Dovecot blocks, stay as written).
`**ini_params` override chatmail.ini keys; `write_ini(**overrides)` rewrites it later.
"""

import imaplib
import os
import pwd
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from conftest import REPO_ROOT, daemon_env, write_ini

MAIL_DOMAIN = "chat.example"
RUN_AS_VMAIL = Path(__file__).with_name("run_as_vmail.py")

DOVECOT_CONF = """\
base_dir = {dir}/run
state_dir = {dir}/state
log_path = {dir}/dovecot.log
info_log_path = {dir}/dovecot.log
instance_name = chatmaild-test-{port}
listen = 127.0.0.1
protocols = imap
first_valid_uid = 1
mail_location = maildir:~
mail_privileged_group =
auth_mechanisms = plain login
auth_verbose = yes
auth_failure_delay = 0
ssl = required
ssl_cert = <{dir}/cert.pem
ssl_key = <{dir}/key.pem
imap_capability = +XDELTAPUSH XCHATMAIL

service imap-login {{
  inet_listener imap {{
    port = 0
  }}
  inet_listener imaps {{
    port = {port}
    ssl = yes
  }}
}}
service auth-worker {{
  user = vmail
}}
# tests fail many logins on purpose: keep Dovecot's auth penalty (2..15 s per failure and IP)
# out of the way by making its anvil socket unreachable for the auth process
service anvil {{
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
service stats {{
  unix_listener stats-reader {{
    user = root
  }}
  unix_listener stats-writer {{
    user = root
    mode = 0666
  }}
}}

passdb {{
  driver = dict
  args = {dir}/auth.conf
}}
userdb {{
  driver = dict
  args = {dir}/auth.conf
}}

protocol imap {{
  mail_plugins = $mail_plugins last_login
}}
plugin {{
  last_login_dict = proxy:{lastlogin_socket}:lastlogin
  last_login_precision = s
}}
"""

AUTH_CONF = """\
uri = proxy:{doveauth_socket}:auth
iterate_disable = no
iterate_prefix = userdb/
default_pass_scheme = plain
password_key = passdb/%Ew"%Eu
user_key = userdb/%Eu
"""


def fill(text, paths):
    """Replace `{name}` placeholders of `paths` only: Dovecot's own braces stay as written."""
    for key, value in paths.items():
        text = text.replace("{" + key + "}", str(value))
    return text


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(check, what, timeout=15.0, proc=None):
    deadline = time.monotonic() + timeout
    while not check():
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what}: process exited with {proc.returncode}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.02)


class DovecotInstance:
    def __init__(self, extra_config="", mail_domain=MAIL_DOMAIN, **ini_params):
        self.mail_domain = mail_domain
        self.dir = Path(tempfile.mkdtemp(prefix="chatmaild-dovecot-"))
        os.chmod(self.dir, 0o755)
        self.vmail = pwd.getpwnam("vmail")
        self.port = free_port()
        self.conf_path = self.dir / "dovecot.conf"
        self.log_path = self.dir / "dovecot.log"
        self.ini_path = self.dir / "chatmail.ini"
        self.mailboxes_dir = self.dir / "mailboxes"
        self.nocreate_file = self.dir / "nocreate"
        sockets = self.dir / "sockets"
        self.doveauth_socket = sockets / "doveauth.socket"
        self.lastlogin_socket = sockets / "lastlogin.socket"
        self.metadata_socket = sockets / "metadata.socket"
        self.extra_config = extra_config
        self.ini_params = dict(
            mailboxes_dir=self.mailboxes_dir,
            nocreate_file=self.nocreate_file,
            max_load_1m=1000,
            min_available_memory="1K",
            min_free_disk_space="1K",
        )
        self.ini_params.update(ini_params)
        self.daemons = {}  # module -> (Popen, socket, log path)
        self.dovecot = None
        for sub in (sockets, self.mailboxes_dir):
            sub.mkdir()
            os.chown(sub, self.vmail.pw_uid, self.vmail.pw_gid)
        self.write_ini()

    def paths(self):
        return {
            "dir": self.dir,
            "port": self.port,
            "doveauth_socket": self.doveauth_socket,
            "lastlogin_socket": self.lastlogin_socket,
            "metadata_socket": self.metadata_socket,
            "mailboxes_dir": self.mailboxes_dir,
            "mail_domain": self.mail_domain,
        }

    def write_ini(self, **overrides):
        params = {**self.ini_params, **overrides}
        write_ini(self.ini_path, mail_domain=self.mail_domain, **params)
        os.chmod(self.ini_path, 0o644)

    # -- lifecycle ------------------------------------------------------------------------

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

    def start(self):
        """Write the configuration and certificate, start our daemons if not yet, then Dovecot."""
        self._make_cert()
        paths = self.paths()
        conf = DOVECOT_CONF.format(**paths) + fill(textwrap.dedent(self.extra_config), paths)
        self.conf_path.write_text(conf)
        (self.dir / "auth.conf").write_text(AUTH_CONF.format(**paths))
        for name in ("run", "state"):
            (self.dir / name).mkdir(exist_ok=True)
        if "chatmaild.doveauth" not in self.daemons:
            self.start_daemon("chatmaild.doveauth", self.doveauth_socket)
        if "chatmaild.lastlogin" not in self.daemons:
            self.start_daemon("chatmaild.lastlogin", self.lastlogin_socket)
        with open(self.dir / "dovecot.stdout", "ab") as out:
            self.dovecot = subprocess.Popen(
                ["dovecot", "-F", "-c", str(self.conf_path)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        wait_for(self._imaps_ready, "dovecot imaps port", proc=self.dovecot)
        wait_for(lambda: (self.dir / "run" / "auth-client").exists(), "auth-client socket")
        return self

    def _imaps_ready(self):
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
            return True
        except OSError:
            return False

    def _make_cert(self):
        if (self.dir / "cert.pem").exists():
            return
        subprocess.run(
            [
                "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                "-subj", f"/CN={self.mail_domain}",
                "-addext", f"subjectAltName=DNS:{self.mail_domain},IP:127.0.0.1",
                "-keyout", str(self.dir / "key.pem"), "-out", str(self.dir / "cert.pem"),
            ],
            check=True,
            capture_output=True,
        )  # fmt: skip

    def start_daemon(self, module, socket_path, *extra_args, preload=()):
        """Run `module`'s `cli.main([SOCKET, CONFIG, *extra_args])` as vmail; wait until it
        logs `listening on SOCKET`. `preload`: modules the daemon imports lazily (they must be
        imported before dropping root, see run_as_vmail.py)."""
        self.stop_daemon(module)
        log_path = self.dir / (module.rsplit(".", 1)[1] + ".log")
        offset = log_path.stat().st_size if log_path.exists() else 0
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(
                [sys.executable, str(RUN_AS_VMAIL), "--preload", ",".join(preload), module]
                + [str(socket_path), str(self.ini_path), *map(str, extra_args)],
                cwd=self.dir,
                env=daemon_env(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.daemons[module] = (proc, Path(socket_path), log_path)

        def listening():
            with open(log_path, "rb") as f:
                f.seek(offset)
                return f"listening on {socket_path}".encode() in f.read()

        wait_for(listening, f"{module} socket", proc=proc)
        return proc

    def stop_daemon(self, module):
        entry = self.daemons.pop(module, None)
        if entry is None:
            return None
        proc = entry[0]
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        return proc.returncode

    def daemon_log(self, module):
        return self.daemons[module][2].read_text()

    def stop(self):
        if self.dovecot is not None:
            if self.dovecot.poll() is None:
                self.dovecot.send_signal(signal.SIGTERM)
                try:
                    self.dovecot.wait(10)
                except subprocess.TimeoutExpired:
                    self.dovecot.kill()
                    self.dovecot.wait()
            self.dovecot = None
        for module in list(self.daemons):
            self.stop_daemon(module)
        if os.environ.get("CHATMAILD_KEEP_DOVECOT_DIR"):
            print(f"dovecot test dir kept: {self.dir}", file=sys.stderr)
        else:
            shutil.rmtree(self.dir, ignore_errors=True)

    # -- clients --------------------------------------------------------------------------

    def doveadm(self, *args, input=None):
        return subprocess.run(
            ["doveadm", "-c", str(self.conf_path), *args],
            capture_output=True,
            text=True,
            timeout=60,
            input=input,
        )

    def auth_test(self, user, password):
        """True if `doveadm auth test` accepts the login."""
        result = self.doveadm("auth", "test", user, password)
        return result.returncode == 0

    def imap_connect(self):
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return imaplib.IMAP4_SSL("127.0.0.1", self.port, ssl_context=context, timeout=30)

    def imap_login(self, user, password):
        imap = self.imap_connect()
        imap.login(user, password)
        return imap

    def log(self):
        return self.log_path.read_text() if self.log_path.exists() else ""


__all__ = ["DovecotInstance", "MAIL_DOMAIN", "REPO_ROOT"]
