"""A whole chatmail relay on this machine: private Postfix + Dovecot + our daemons.

Everything lives under one state directory (configs, queue, sockets, logs, mailboxes,
certificate) and optionally inside a private network namespace. `Relay` is used by the
`python -m chatmaild.relay` command and by the end-to-end test fixture; its state file
(`relay.json`) lets `down` and `status` find what an earlier `up` started.
"""

import contextlib
import dataclasses
import grp
import ipaddress
import json
import os
import pwd
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

from chatmaild.metrics.exporter import parse_listen_spec
from chatmaild.relay import dkimrun, listening, printout, processes, webcert
from chatmaild.relay import netns as netns_mod
from chatmaild.relay.daemons import LIMIT_NOFILE, OPENDKIM_LOG, TURN_USER, relay_daemons
from chatmaild.relay.peering import Peering
from chatmaild.relay.printout import IMAP_PORT
from chatmaild.relay.processes import pid_alive, read_pid
from chatmaild.relay.webcert import host_names, relay_names
from chatmaild.render.files import local_layout, push_script_text, render_relay
from chatmaild.render.nginx import STREAM_MODULE
from chatmaild.render.opendkim import signing_layout
from chatmaild.render.templating import substitute
from chatmaild.turn import secretdb

APT_PACKAGES = ["postfix", "dovecot-core", "dovecot-imapd", "dovecot-lmtpd", "opendkim"]
APT_PACKAGES += ["bubblewrap", "nginx", "libnginx-mod-stream", "coturn"]
REQUIRED_FILES = [
    "/usr/sbin/postfix",
    "/usr/sbin/dovecot",
    "/usr/lib/dovecot/imap",
    "/usr/lib/dovecot/lmtp",
    "/usr/sbin/opendkim",
    "/usr/bin/bwrap",
    "/usr/sbin/nginx",
    STREAM_MODULE,
    "/usr/bin/turnserver",
]
VMAIL = "vmail"
# `_`: Delta Chat skips the certificate chain check (not the name check) for host names
# starting with `_`, so the self-signed local relay works with a one-tap `dcaccount:` URL.
DEFAULT_DOMAIN = "_chat.example"
DEFAULT_STATE_DIR = Path("/tmp/chatmaild-relay")
STATE_FILE = "relay.json"
POSTFIX_PORTS = (25, 465, 587)
NGINX_PORTS = (443, 8443, 8484)
NGINX_USER = "www-data"
READY_TIMEOUT = 30.0
STOP_TIMEOUT = 5.0
# a supervised daemon: filtermail lets sessions in flight finish (10 s) before it stops
DAEMON_STOP_TIMEOUT = 15.0
# Postfix', Dovecot's and nginx's masters stop their children first
MASTER_STOP_TIMEOUT = NGINX_STOP_TIMEOUT = 10.0
COTURN_LOG = "coturn.log"
REPO_ROOT = Path(__file__).resolve().parents[2]
SYSTEM_PYTHON = "/usr/bin/python3"


class RelayError(Exception):
    """Bringing the relay up or down failed; the text says what and where to look."""


def _read_template(name):
    from importlib import resources

    return resources.files("chatmaild.relay").joinpath(name).read_text()


def default_ini_text(state_dir, mail_domain=DEFAULT_DOMAIN, notification_url=None, extra=None):
    """The embedded demo chatmail.ini; `extra` {key: value} lines are appended (tests)."""
    text = substitute(
        _read_template("default-chatmail.ini"),
        {
            "state_dir": state_dir,
            "mail_domain": mail_domain,
            # empty: no push notifications (a demo relay posts nothing to the public server)
            "notification_url": notification_url or "",
        },
    )
    for key, value in (extra or {}).items():
        text += f"{key} = {value}\n"
    return text


def ensure_packages(log, packages=None, required=None):
    """apt-get install Postfix and Dovecot (or `packages`), only when a file is missing."""
    packages = APT_PACKAGES if packages is None else packages
    required = REQUIRED_FILES if required is None else required
    if all(Path(p).exists() for p in required):
        return
    log(f"installing {' '.join(packages)} with apt-get")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-q"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-q", *packages], check=True, env=env)


def ensure_vmail(log):
    try:
        return pwd.getpwnam(VMAIL)
    except KeyError:
        pass
    log(f"creating system user {VMAIL}")
    subprocess.run(
        [
            "useradd",
            "--system",
            "--user-group",
            "--home-dir",
            "/home/vmail",
            "--create-home",
            "--shell",
            "/usr/sbin/nologin",
            VMAIL,
        ],
        check=True,
    )
    return pwd.getpwnam(VMAIL)


def _san(name):
    try:
        ipaddress.ip_address(name)
        return f"IP:{name}"
    except ValueError:
        return f"DNS:{name}"


def certificate_names(cert):
    """The subjectAltName entries of a PEM certificate file, as `DNS:x`/`IP:x`; empty when
    it cannot be read."""
    from cryptography import x509

    try:
        loaded = x509.load_pem_x509_certificate(Path(cert).read_bytes())
        san = loaded.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (OSError, ValueError, x509.ExtensionNotFound):
        return set()
    return {f"DNS:{n}" for n in san.get_values_for_type(x509.DNSName)} | {
        f"IP:{n}" for n in san.get_values_for_type(x509.IPAddress)
    }


def make_certificate(cert, key, domain):
    """A self-signed certificate for the relay's names (`domain`, www. and mta-sts. of a
    domain name) and 127.0.0.1; one already there is kept when it names exactly these
    (a state dir of an earlier domain gets a new one)."""
    wanted = [_san(name) for name in dict.fromkeys(relay_names(domain))]
    if key.exists() and certificate_names(cert) == set(wanted):
        return
    cert.parent.mkdir(parents=True, exist_ok=True)
    names = ",".join(wanted)
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "365",
            "-subj",
            f"/CN={domain}",
            "-addext",
            f"subjectAltName={names}",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    os.chmod(key, 0o600)


def unreachable_parent(path, uid):
    """The first existing ancestor of `path` that user `uid` cannot traverse, or None.

    Dovecot reads mailboxes as vmail: a state dir under e.g. /root (mode 0700) cannot work.
    """
    for parent in reversed(Path(path).resolve().parents):
        try:
            st = parent.stat()
        except FileNotFoundError:
            return None
        can = st.st_mode & stat.S_IXOTH or (st.st_uid == uid and st.st_mode & stat.S_IXUSR)
        if not can:
            return parent
    return None


def _tail(path, lines=15):
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class Relay:
    """One relay instance rooted at `state_dir`."""

    def __init__(
        self,
        state_dir=DEFAULT_STATE_DIR,
        config_path=None,
        netns=None,
        mail_domain=DEFAULT_DOMAIN,
        notification_url=None,
        log=print,
        ini_extra=None,
        ca_dir=None,
        peering=None,
    ):
        self.state_dir = Path(state_dir).resolve()
        self.netns = netns
        self.log = log
        self._mail_domain = mail_domain
        self._notification_url = notification_url
        self._ini_extra = dict(ini_extra or {})
        # Peering: a relay of a test network (chatmaild.relay.federation)
        self.peering = peering
        if ca_dir is None and peering is not None:
            ca_dir = peering.ca_dir
        # a test CA (testca.py) issues the certificate; None: a self-signed one
        self.ca_dir = Path(ca_dir).resolve() if ca_dir else None
        self._config_path = Path(config_path).resolve() if config_path else None
        self.pids = {}
        self.skipped = []
        self.config = None
        self.layout = None
        self.dkim_record = None  # TXT value of opendkim._domainkey.DOMAIN, if it signs
        self._daemon_prefix = None

    # -- paths --------------------------------------------------------------------------

    @property
    def state_file(self):
        return self.state_dir / STATE_FILE

    @property
    def log_dir(self):
        return self.state_dir / "log"

    @property
    def config_path(self):
        return self._config_path or self.state_dir / "chatmail.ini"

    # -- state file ---------------------------------------------------------------------

    def _save_state(self):
        data = {
            "config": str(self.config_path),
            "netns": self.netns,
            "pids": self.pids,
            "skipped": self.skipped,
        }
        if self.peering is not None:
            data["peering"] = self.peering.to_json()
        self.state_file.write_text(json.dumps(data, indent=1) + "\n")

    @classmethod
    def from_state(cls, state_dir=DEFAULT_STATE_DIR, log=print):
        """The relay an earlier `up` left in `state_dir` (for down/status)."""
        state_dir = Path(state_dir).resolve()
        try:
            data = json.loads((state_dir / STATE_FILE).read_text())
        except (OSError, ValueError) as e:
            raise RelayError(f"no relay state in {state_dir}: {e}") from None
        peering = Peering.from_json(data.get("peering"))
        relay = cls(state_dir, data.get("config"), data.get("netns"), log=log, peering=peering)
        relay.pids = {k: int(v) for k, v in data.get("pids", {}).items()}
        relay.skipped = list(data.get("skipped", []))
        relay._load_config()
        return relay

    def _load_config(self):
        from chatmaild.config import read_config

        self.config = read_config(self.config_path)
        push = push_script_text() is not None
        uid = pwd.getpwnam(VMAIL).pw_uid if _has_user(VMAIL) else 500
        self.layout = local_layout(
            self.state_dir,
            push=push,
            first_valid_uid=min(uid, 500),
            self_signed=self.ca_dir is None,
            address=self.config.mail_domain if self.config.ipv4_relay else None,
        )
        if self.peering is not None:
            changes = self.peering.layout_changes(self.layout)
            self.layout = dataclasses.replace(self.layout, **changes)
            turn = dataclasses.replace(self.layout.turn, **self.peering.turn_changes())
            self.layout = dataclasses.replace(self.layout, turn=turn)

    # -- running commands ---------------------------------------------------------------

    def in_netns(self, argv):
        return [*netns_mod.exec_prefix(self.netns), *argv]

    def postfix_argv(self, *args):
        """`postfix -c DIR ARGS`, inside the namespace once it exists: every postfix
        command checks inet_interfaces, which may name an address only the namespace has."""
        argv = ["postfix", "-c", str(self.layout.postfix_config_dir), *args]
        return self.in_netns(argv) if self.netns and netns_mod.exists(self.netns) else argv

    def _run(self, argv, what, **kwargs):
        log_path = self.log_dir / "commands.log"
        with open(log_path, "ab") as out:
            out.write(f"$ {' '.join(map(str, argv))}\n".encode())
            out.flush()
            proc = subprocess.run(
                argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out, check=False, **kwargs
            )
        if proc.returncode != 0:
            raise RelayError(f"{what} failed (exit {proc.returncode}):\n{_tail(log_path)}")

    def _daemon_env(self):
        env = dict(os.environ)
        env["PYTHONPATH"] = str(REPO_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def _as_user_prefix(self, user):
        """setpriv argv that runs a command as `user` (vmail, or turnserver for chatmail-turn).

        The interpreter or the checkout may sit where that user cannot read (e.g. a Python
        under /root): then the daemons keep CAP_DAC_READ_SEARCH (read-only access) and
        nothing more.
        """
        if self._daemon_prefix is None:
            self._daemon_prefix = {}
        if user in self._daemon_prefix:
            return self._daemon_prefix[user]
        base = ["setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups"]
        probe = [sys.executable, "-c", "import chatmaild.relay"]
        ok = subprocess.run(
            [*base, *probe], env=self._daemon_env(), capture_output=True, check=False
        )
        if ok.returncode != 0:
            base += ["--inh-caps=+dac_read_search", "--ambient-caps=+dac_read_search"]
            self.log(f"note: {sys.executable} is not readable by {user}; daemons keep read access")
        self._daemon_prefix[user] = base
        return base

    # -- preparing ----------------------------------------------------------------------

    def prepare(self):
        """Everything before starting processes: packages, user, dirs, configs, cert."""
        ensure_packages(self.log)
        vmail = ensure_vmail(self.log)
        blocked = unreachable_parent(self.state_dir, vmail.pw_uid)
        if blocked is not None:
            raise RelayError(
                f"{VMAIL} cannot enter {blocked} (no search permission), so Dovecot could not"
                f" reach mailboxes under {self.state_dir}: use a --state-dir elsewhere,"
                f" e.g. {DEFAULT_STATE_DIR}"
            )
        self.state_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.state_dir, 0o755)  # vmail must traverse it
        self.log_dir.mkdir(exist_ok=True)
        if self._config_path is None:
            self.config_path.write_text(
                default_ini_text(
                    self.state_dir, self._mail_domain, self._notification_url, self._ini_extra
                )
            )
        self._load_config()
        layout, config = self.layout, self.config
        if config.ipv4_relay and not self.netns and not _local_address(config.mail_domain):
            raise RelayError(
                f"{config.mail_domain} (mail_domain) is no address of this machine: an IP-only"
                " relay listens on its address; run it in a namespace (--netns NAME), which"
                " gets the address"
            )

        postfix_uid = pwd.getpwnam("postfix").pw_uid
        postfix_gid = grp.getgrnam("postfix").gr_gid
        for d in (layout.postfix_config_dir, layout.dovecot_config_dir, layout.postfix_queue_dir):
            d.mkdir(parents=True, exist_ok=True)
        layout.postfix_data_dir.mkdir(parents=True, exist_ok=True)
        os.chown(layout.postfix_data_dir, postfix_uid, postfix_gid)
        layout.dovecot_state_dir.mkdir(parents=True, exist_ok=True)
        for sock in (layout.doveauth_socket, layout.metadata_socket, layout.lastlogin_socket):
            sock.parent.mkdir(parents=True, exist_ok=True)
            os.chown(sock.parent, vmail.pw_uid, vmail.pw_gid)
        config.mailboxes_dir.mkdir(parents=True, exist_ok=True)
        os.chown(config.mailboxes_dir, vmail.pw_uid, vmail.pw_gid)
        for name in ("filtermail-outgoing", "filtermail-incoming", "filtermail-transport"):
            (self.log_dir / f"{name}.log").touch()
        # chatmail-logmetrics (as vmail) follows the Postfix and Dovecot logs: create them
        # readable by group vmail (Dovecot would create its log 0600 root; both keep the
        # mode of an existing file).
        for log_file in (layout.postfix_log, layout.dovecot_log):
            log_file.touch()
            os.chown(log_file, 0, vmail.pw_gid)
            os.chmod(log_file, 0o640)

        dkim = self.dkim
        if dkim is not None:
            self.dkim_record = dkimrun.prepare_opendkim(dkim, config.mail_domain, vmail, self.log)
            opendkim_log = self.log_dir / OPENDKIM_LOG
            opendkim_log.touch()
            os.chown(opendkim_log, vmail.pw_uid, vmail.pw_gid)

        for path, text in render_relay(config, layout).items():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        self._write_checkpassword_wrapper()
        self._prepare_web(vmail)
        self._prepare_turn()
        if self.ca_dir is not None:
            names = relay_names(config.mail_domain)
            if self.peering is not None:
                names = self.peering.certificate_names(config.mail_domain)
            webcert.issue(self.ca_dir, names, layout.tls_cert, layout.tls_key)
        else:
            make_certificate(layout.tls_cert, layout.tls_key, config.mail_domain)
        if self.netns:
            # nginx -t binds the listen addresses: an IP-only relay's is the namespace's
            self._make_netns()
        self._run(self.in_netns(["nginx", "-t", "-c", str(layout.web.nginx_conf)]), "nginx -t")
        # Creates the queue subdirectories and checks ownership.
        self._run(self.postfix_argv("check"), "postfix check")
        if dkim is not None:
            self._run(dkimrun.check_argv(dkim), "opendkim -n (configuration check)")

    def _write_checkpassword_wrapper(self):
        """The program of Dovecot's checkpassword passdb (account creation): Dovecot's auth
        process runs it as vmail, without capabilities, so it needs an interpreter vmail can
        execute and this checkout on its path (it imports only the standard library)."""
        wrapper = Path(self.layout.checkpassword_command)
        env = {"PYTHONPATH": str(REPO_ROOT), "PATH": os.defpath}
        probe = 'exec "$0" -s -c "import chatmaild.doveauth.checkpassword"'
        # through a shell, as Dovecot runs it (setpriv itself may still reach the binary)
        as_vmail = ["setpriv", f"--reuid={VMAIL}", f"--regid={VMAIL}", "--init-groups"]
        for python in (sys.executable, SYSTEM_PYTHON):
            ok = subprocess.run(
                [*as_vmail, "/bin/sh", "-c", probe, python],
                env=env,
                capture_output=True,
                check=False,
            )
            if ok.returncode == 0:
                break
        else:
            raise RelayError(
                f"{VMAIL} cannot run {sys.executable} or {SYSTEM_PYTHON} with {REPO_ROOT}"
                " on its path: Dovecot's checkpassword (account creation) would fail"
            )
        wrapper.write_text(
            "#!/bin/sh\n# Dovecot's checkpassword passdb: creates accounts on a first login.\n"
            f"PYTHONPATH={REPO_ROOT} exec {python} -s -m chatmaild.doveauth.checkpassword"
            ' "$@"\n'
        )
        os.chmod(wrapper, 0o755)

    def _make_netns(self):
        """The namespace, its hosts file and, for an IP-only relay, its address on lo."""
        names = [*host_names(self.config.mail_domain), socket.gethostname()]
        netns_mod.create(self.netns, names)
        if self.config.ipv4_relay:
            netns_mod.add_address(self.netns, self.config.mail_domain)

    def _prepare_turn(self):
        """coturn's secret (made once, as on a server), pid and log files, and the socket
        directory of chatmail-turn, all owned by coturn's user."""
        turn = self.layout.turn
        if turn is None:
            return
        user = pwd.getpwnam(TURN_USER)
        secretdb.ensure_secret(self.config.turn_db_path, self.config.mail_domain, TURN_USER)
        coturn_log = turn.log_file or self.log_dir / COTURN_LOG
        coturn_log.touch()
        os.chown(coturn_log, user.pw_uid, user.pw_gid)
        for d in (turn.pid_file.parent, self.config.turn_socket_path.parent):
            d.mkdir(parents=True, exist_ok=True)
            os.chown(d, user.pw_uid, user.pw_gid)

    def start_coturn(self):
        """coturn in the relay's namespace as its own user (it stays in the foreground, so the
        recorded pid is coturn's: setpriv and `ip netns exec` exec it)."""
        turn = self.layout.turn
        turn.pid_file.unlink(missing_ok=True)
        argv = ["setpriv", f"--reuid={TURN_USER}", f"--regid={TURN_USER}", "--init-groups"]
        argv += ["turnserver", "-c", str(turn.conf)]
        with open(self.log_dir / "coturn.stderr", "ab") as out:
            proc = subprocess.Popen(
                self.in_netns(argv),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                start_new_session=True,
            )
        self.pids["coturn"] = proc.pid
        self._save_state()

    def restart_coturn(self):
        """Stop coturn and start it again; returns when it listens again."""
        self.stop_daemon("coturn")
        self.start_coturn()
        self.wait_ready(only="coturn")

    @property
    def dkim(self):
        """The relay's OpenDKIM layout, None when it does not sign (IP-only relay)."""
        return signing_layout(self.config, self.layout.dkim)

    def _prepare_web(self, vmail):
        """nginx's temp dirs (written by its workers) and chatmail-web's socket directory."""
        web = self.layout.web
        www = pwd.getpwnam(NGINX_USER)
        web.temp_dir.mkdir(parents=True, exist_ok=True)
        os.chown(web.temp_dir, www.pw_uid, www.pw_gid)
        web.web_socket.parent.mkdir(parents=True, exist_ok=True)
        os.chown(web.web_socket.parent, vmail.pw_uid, vmail.pw_gid)

    # -- starting -----------------------------------------------------------------------

    def daemon_pid_file(self, name):
        return self.state_dir / "run" / "supervise" / f"{name}.pid"

    def daemon_pid(self, name):
        """The pid of daemon `name` itself (its supervisor's child), None while it is down."""
        return read_pid(self.daemon_pid_file(name))

    def start_daemon(self, daemon):
        """Start `daemon` under its supervisor (supervise.py), which restarts it when it dies
        and gives it the units' descriptor limit; `pids` records the supervisor."""
        log_path = self.log_dir / f"{daemon.name}.log"
        pid_file = self.daemon_pid_file(daemon.name)
        pid_file.parent.mkdir(parents=True, exist_ok=True)
        supervisor = [
            sys.executable,
            "-m",
            "chatmaild.relay.supervise",
            f"--name={daemon.name}",
            f"--pid-file={pid_file}",
            f"--nofile={LIMIT_NOFILE}",
            f"--stop-timeout={DAEMON_STOP_TIMEOUT - 2}",
            "--",
        ]
        argv = self.in_netns(
            [
                *supervisor,
                *self._as_user_prefix(daemon.user),
                "--pdeathsig=TERM",  # the daemon ends with its supervisor, even on SIGKILL
                sys.executable,
                "-m",
                daemon.module,
                *daemon.args,
            ]
        )
        with open(log_path, "ab") as out:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                env={**self._daemon_env(), **dict(daemon.env)},
                start_new_session=True,
            )
        self.pids[daemon.name] = proc.pid
        self._save_state()
        return proc

    def daemons(self):
        return relay_daemons(self.config, self.layout, self.log_dir)

    def start_opendkim(self):
        """OpenDKIM in the relay's namespace (after its syslog sink); pid recorded."""
        dkim = self.dkim
        if not dkimrun.wait_syslog_socket(dkim):
            raise RelayError(f"no syslog socket {dkim.syslog_socket} for OpenDKIM")
        log_path = self.log_dir / OPENDKIM_LOG
        with open(log_path, "ab") as out:
            proc = subprocess.Popen(
                self.in_netns(dkimrun.opendkim_argv(dkim)),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                start_new_session=True,
            )
        pid = dkimrun.wait_pid_file(dkim, proc)
        if pid is None:
            proc.kill()
            proc.wait()
            raise RelayError(f"opendkim did not start:\n{_tail(log_path)}")
        self.pids["opendkim"] = pid
        self._save_state()

    def up(self):
        """Prepare and start everything; returns when the relay accepts connections."""
        if self.state_file.exists():
            try:
                old = Relay.from_state(self.state_dir, log=self.log)
            except RelayError:
                old = None  # an unreadable state file: nothing of it can be running
            if old is not None and any(old.status().values()):
                # before anything is touched: the running relay's state file stays intact
                raise RelayError(
                    f"a relay is already running from {self.state_dir}: run `down` first"
                )
        try:
            self.prepare()
        except BaseException:
            if self.netns:
                netns_mod.delete(self.netns)
            raise
        self.pids = {}
        self.skipped = []
        self._save_state()
        try:
            for daemon in self.daemons():
                if not daemon.available():
                    self.skipped.append(daemon.name)
                    self.log(f"skipping {daemon.name}: {daemon.module} is not in this checkout")
                    continue
                self.start_daemon(daemon)
            self._save_state()
            if self.dkim is not None:
                self.start_opendkim()
            if self.layout.turn is not None:
                self.start_coturn()
            dovecot_conf = self.layout.dovecot_config_dir / "dovecot.conf"
            self._run(self.in_netns(["dovecot", "-c", str(dovecot_conf)]), "dovecot start")
            self._run(self.postfix_argv("start"), "postfix start")
            nginx = ["nginx", "-c", str(self.layout.web.nginx_conf)]
            self._run(self.in_netns(nginx), "nginx start")
            self.wait_ready()
        except BaseException:
            self.down()
            raise

    def _checks(self):
        """(what, ready?(listening.Listening)) for every listener of the relay: decided from
        the kernel's socket tables, never by connecting (see listening.py)."""
        checks = []
        for daemon in self.daemons():
            if daemon.name in self.skipped:
                continue
            if daemon.socket is not None:
                checks.append((daemon.name, lambda ls, p=daemon.socket: ls.unix_path(p)))
            elif daemon.port is not None:
                checks.append((daemon.name, lambda ls, p=daemon.port: ls.tcp_port(p)))
            if daemon.metrics:
                checks.append((daemon.name, self._endpoint_check(daemon.metrics)))

        def port_open(port):
            return lambda ls: ls.tcp_port(port)

        checks.append((f"dovecot:{IMAP_PORT}", port_open(IMAP_PORT)))
        lmtp = self.layout.postfix_queue_dir / "private" / "dovecot-lmtp"
        checks.append(("dovecot:lmtp", lambda ls: ls.unix_path(lmtp)))
        if self.dkim is not None:
            checks.append(("opendkim", lambda ls: ls.unix_path(self.dkim.socket)))
        ports = (
            *POSTFIX_PORTS,
            self.config.postfix_reinject_port,
            self.config.postfix_reinject_port_incoming,
        )
        for port in ports:
            checks.append((f"postfix:{port}", port_open(port)))
        for port in NGINX_PORTS:
            checks.append((f"nginx:{port}", port_open(port)))
        if self.layout.turn is not None:
            checks.append(("coturn", port_open(self.config.turn_port)))
        return checks

    def _endpoint_check(self, spec):
        listen = parse_listen_spec(spec)
        if listen.path is not None:
            return lambda ls: ls.unix_path(listen.path)
        return lambda ls: ls.tcp_port(listen.port, host=listen.host)

    def metrics_urls(self):
        """{daemon name: URL of its Prometheus endpoint} for the daemons that run."""
        urls = {}
        for daemon in self.daemons():
            if daemon.metrics and daemon.name not in self.skipped:
                listen = parse_listen_spec(daemon.metrics)
                if listen.path is not None:
                    urls[daemon.name] = f"unix:{listen.path} (GET /metrics)"
                else:
                    urls[daemon.name] = f"http://{listen.describe()}/metrics"
        return urls

    def wait_ready(self, timeout=READY_TIMEOUT, only=None):
        deadline = time.monotonic() + timeout
        pending = [(what, ok) for what, ok in self._checks() if only is None or what == only]
        while pending:
            for name, pid in self.pids.items():
                if (only is None or name == only) and not pid_alive(pid):
                    raise RelayError(
                        f"{name} exited at start:\n{_tail(self.log_dir / f'{name}.log')}"
                    )
            now = listening.snapshot(self.netns)
            pending = [(what, ok) for what, ok in pending if not ok(now)]
            if not pending:
                break
            if time.monotonic() > deadline:
                names = ", ".join(what for what, _ in pending)
                raise RelayError(
                    f"not ready after {timeout:.0f} s: {names}; logs in {self.log_dir}"
                )
            time.sleep(0.05)

    # -- stopping -----------------------------------------------------------------------

    def _hint(self, name):
        """What the command line of recorded process `name` contains while it is ours."""
        modules = {d.name: d.module for d in self.daemons()} if self.config else {}
        modules["coturn"] = "turnserver"
        return modules.get(name, name.split("-")[0])

    def _stop_pid(self, name, pid):
        timeout = DAEMON_STOP_TIMEOUT if name in self._supervised() else STOP_TIMEOUT
        if processes.stop(pid, self._hint(name), timeout) is False:
            self.log(f"{name} did not stop on SIGTERM: killed it")

    def _supervised(self):
        return {d.name for d in self.daemons()} if self.config else set()

    def stop_daemon(self, name):
        pid = self.pids.pop(name, None)
        if pid is not None:
            self._stop_pid(name, pid)
        self._save_state()

    def restart_daemon(self, name):
        """Stop and start one of our daemons; returns when it is ready again."""
        (daemon,) = [d for d in self.daemons() if d.name == name]
        self.stop_daemon(name)
        self.start_daemon(daemon)
        self.wait_ready(only=name)

    def flush_queue(self):
        """Ask Postfix to retry deferred mail now (e.g. after a dict daemon restarted)."""
        self._run(self.postfix_argv("flush"), "postfix flush")

    def _postfix_master_pid(self):
        return read_pid(self.layout.postfix_queue_dir / "pid" / "master.pid")

    def _nginx_master_pid(self):
        return read_pid(self.layout.web.pid)

    def _dovecot_master_pid(self):
        return read_pid(self.layout.dovecot_base_dir / "master.pid")

    def down(self):
        """Stop Postfix, Dovecot and our daemons; remove the network namespace."""
        layout = self.layout
        # libmilter notices SIGTERM only at its next poll (up to 5 s): OpenDKIM starts
        # stopping now, while Postfix and Dovecot stop.
        processes.terminate(self.pids.get("opendkim"), self._hint("opendkim"))
        if layout is not None:
            processes.stop(self._nginx_master_pid(), "nginx", NGINX_STOP_TIMEOUT)  # fast shutdown
            master = self._postfix_master_pid()
            if master and pid_alive(master):
                with contextlib.suppress(RelayError):
                    self._run(self.postfix_argv("stop"), "postfix stop")
                processes.wait_exit(master, MASTER_STOP_TIMEOUT)
            master = self._dovecot_master_pid()
            if master and pid_alive(master):
                with contextlib.suppress(RelayError):
                    self._run(
                        ["dovecot", "-c", str(layout.dovecot_config_dir / "dovecot.conf"), "stop"],
                        "dovecot stop",
                    )
                processes.wait_exit(master, MASTER_STOP_TIMEOUT)
        # reverse start order: OpenDKIM before its syslog sink, logmetrics last
        for name in reversed(list(self.pids)):
            self.stop_daemon(name)
        if self.netns:
            netns_mod.delete(self.netns)
        self._save_state()

    # -- status -------------------------------------------------------------------------

    def status(self):
        """{component: running?} for Postfix, Dovecot and each started daemon."""
        result = {}
        if self.layout is not None:
            master = self._postfix_master_pid()
            result["postfix"] = bool(master and pid_alive(master))
            master = self._dovecot_master_pid()
            result["dovecot"] = bool(master and pid_alive(master))
            master = self._nginx_master_pid()
            result["nginx"] = bool(master and pid_alive(master))
        for name, pid in self.pids.items():
            result[name] = pid_alive(pid)
        return result

    # -- what to tell the user ----------------------------------------------------------

    def one_tap_url(self):
        """The `dcaccount:` URL that sets Delta Chat up in one tap, or None where the core
        cannot take it: its strict TLS trusts only public CAs, except for host names
        starting with `_`, whose chain it does not check (the name it still checks)."""
        domain = self.config.mail_domain
        return f"dcaccount:https://{domain}/new" if domain.startswith("_") else None

    def stop_command(self):
        """The `down` command line, with the interpreter that runs this one."""
        return f"{sys.executable} -m chatmaild.relay down --state-dir {self.state_dir}"

    def client_info(self):
        """What `relay up` prints: how to reach the relay, onboard, watch and stop it."""
        return printout.client_info(self)


def _local_address(address):
    """Whether this machine has `address` (a socket can be bound to it)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind((address, 0))
        return True
    except OSError:
        return False
    finally:
        sock.close()


def _has_user(name):
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False
