"""Each daemon runs, and serves, under its unit's sandbox (emulated: see systemd_sandbox.py).

Started the way the unit starts it (same argv after the program, same user, same socket
and mailbox paths), with the unit's mounts, credentials, umask, MDWE and seccomp filter.
"""

import importlib.util
import os
import pwd
import socket
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from systemd_sandbox import CONFIG_DIR_IN_SANDBOX, HERE, SandboxedDaemon, tools_missing, wait_for
from systemd_unitfile import SYSTEMD_DIR, Unit, allowed_syscalls, syscall_groups
from unbound_instance import free_udp_tcp_port

from conftest import require, write_ini, write_self_signed_cert

CFG = f"{CONFIG_DIR_IN_SANDBOX}/chatmail.ini"
MAIL_DOMAIN = "chat.example"
MAILBOXES = "/home/vmail/mail"


def require_sandbox_tools():
    missing = tools_missing()
    require(not missing, f"sandbox emulation needs: {', '.join(missing)}")


def require_module(module):
    require(importlib.util.find_spec(module) is not None, f"module {module} in the checkout")


@pytest.fixture
def vmail():
    try:
        return pwd.getpwnam("vmail")
    except KeyError:
        require(False, "user vmail")


@pytest.fixture
def layout(tmp_path, vmail):
    """Host dirs standing in for the unit's paths, and the chatmail.ini."""
    mail = tmp_path / "mail"
    (mail / MAIL_DOMAIN).mkdir(parents=True)
    for d in (mail, mail / MAIL_DOMAIN):
        os.chown(d, vmail.pw_uid, vmail.pw_gid)
        os.chmod(d, 0o700)
    textfile = tmp_path / "textfile"
    textfile.mkdir()
    os.chown(textfile, vmail.pw_uid, vmail.pw_gid)
    ini = write_ini(
        tmp_path / "chatmail.ini",
        mail_domain=MAIL_DOMAIN,
        mailboxes_dir=f"{MAILBOXES}/{MAIL_DOMAIN}",
        nocreate_file=f"{CONFIG_DIR_IN_SANDBOX}/nocreate",
        max_load_1m=1000,
        min_free_disk_space="1K",
        min_available_memory="1K",
        metrics_doveauth="",
        metrics_lastlogin="",
        metrics_metadata="",
        metrics_filtermail_outgoing="",
        metrics_filtermail_incoming="",
    )
    paths = {MAILBOXES: mail, "/var/lib/prometheus/node-exporter": textfile}
    return ini, paths


def start(unit_name, module, layout, tmp_path, **options):
    require_sandbox_tools()
    require_module(module)
    unit = Unit.load(SYSTEMD_DIR / unit_name)
    args = [CFG if a.endswith("/chatmail.ini") else a for a in unit.exec_start()[1:]]
    ini, paths = layout
    workdir = tmp_path / "sandbox"
    workdir.mkdir()
    return SandboxedDaemon(unit, module, args, workdir, ini, paths, **options).start()


CAPABILITY_BITS = {"CAP_DAC_OVERRIDE": 1, "CAP_DAC_READ_SEARCH": 2, "CAP_NET_ADMIN": 12}


def assert_confined(daemon, user, status=None):
    """The process status (/proc/PID/status fields) shows the unit's credentials."""
    status = status or daemon.status()
    assert status, f"daemon process not found:\n{daemon.log()}"
    assert status["Uid"].split()[0] == str(user.pw_uid)
    assert status["Gid"].split()[0] == str(user.pw_gid)
    assert status["Groups"] == ""
    assert status["NoNewPrivs"] == "1"
    assert status["Seccomp"] == "2"
    caps = sum(1 << CAPABILITY_BITS[c] for c in daemon.unit.all("CapabilityBoundingSet"))
    assert int(status["CapBnd"], 16) == caps
    assert int(status["CapEff"], 16) == (caps if user.pw_uid == 0 else 0)
    assert status["Umask"] == daemon.unit.get("UMask")
    print(
        f"{daemon.unit.name}: {user.pw_name}, seccomp filter, NNP, "
        f"caps {caps:#x}, umask {status['Umask']}"
    )


def dict_exchange(path, lines, timeout=10):
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(str(path))
        s.sendall("".join(lines).encode())
        data = b""
        while not data.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        return data.decode()


DICT_SERVICES = [
    ("doveauth.service", "chatmaild.doveauth", "doveauth", "auth"),
    ("lastlogin.service", "chatmaild.lastlogin", "chatmail-lastlogin", "lastlogin"),
    ("chatmail-metadata.service", "chatmaild.metadata", "chatmail-metadata", "metadata"),
]


@pytest.mark.parametrize(
    "unit_name, module, runtime_dir, dict_name", DICT_SERVICES, ids=[d[0] for d in DICT_SERVICES]
)
def test_dict_service_serves_in_its_sandbox(
    unit_name, module, runtime_dir, dict_name, layout, tmp_path, vmail
):
    daemon = start(unit_name, module, layout, tmp_path)
    try:
        sock_path = daemon.unit.exec_start()[1]
        assert os.path.dirname(sock_path) == f"/run/{runtime_dir}"
        sock_name = os.path.basename(sock_path)
        sock = daemon.inside(sock_path)
        wait_for(sock.exists, f"{sock_name} to appear", daemon)
        st = os.stat(sock)
        assert stat.S_ISSOCK(st.st_mode)
        assert st.st_uid == vmail.pw_uid
        assert st.st_mode & 0o077 == 0, oct(st.st_mode)
        assert stat.S_IMODE(os.stat(sock.parent).st_mode) == 0o750
        user = f"x@{MAIL_DOMAIN}"
        reply = dict_exchange(
            sock, ["H3\t2\t0\t\t" + dict_name + "\n", f"Lshared/userdb/{user}\t{user}\n"]
        )
        assert reply[:1] in ("N", "O"), reply
        assert_confined(daemon, vmail)
    finally:
        daemon.stop()


def test_doveauth_creates_an_account_in_its_sandbox(layout, tmp_path, vmail):
    """Writes through BindPaths= as vmail with UMask=0077, hashing under MDWE + seccomp."""
    daemon = start("doveauth.service", "chatmaild.doveauth", layout, tmp_path)
    try:
        sock = daemon.inside("/run/doveauth/doveauth.socket")
        wait_for(sock.exists, "doveauth.socket to appear", daemon)
        addr, password = f"abcdefghi@{MAIL_DOMAIN}", "correct-horse-battery"
        reply = dict_exchange(
            sock,
            ["H3\t2\t0\t\tauth\n", f'Lshared/passdb/{password}"{addr}\t{addr}\n'],
        )
        assert reply.startswith("O"), f"{reply}\n{daemon.log()}"
        assert "{SHA512-CRYPT}$6$" in reply
        password_file = layout[1][MAILBOXES] / MAIL_DOMAIN / addr / "password"
        st = os.stat(password_file)
        assert st.st_uid == vmail.pw_uid
        assert st.st_mode & 0o077 == 0, oct(st.st_mode)
    finally:
        daemon.stop()


SMTP_CLIENT = textwrap.dedent(
    """
    import socket, sys, time
    deadline = time.monotonic() + 20
    while True:
        try:
            s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=10)
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    f = s.makefile("rb")
    greeting = f.readline()
    s.sendall(b"EHLO sandbox.test\\r\\n")
    lines = []
    while True:
        line = f.readline()
        lines.append(line)
        if not line or line[3:4] != b"-":
            break
    s.sendall(b"QUIT\\r\\n")
    print(greeting.decode().strip())
    print(b"".join(lines).decode().strip())
    """
)


@pytest.mark.parametrize(
    "unit_name, port", [("filtermail.service", 10080), ("filtermail-incoming.service", 10081)]
)
def test_filtermail_answers_ehlo_in_its_sandbox(unit_name, port, layout, tmp_path, vmail):
    daemon = start(unit_name, "chatmaild.filtermail", layout, tmp_path)
    try:
        result = subprocess.run(
            daemon.in_netns([sys.executable, "-c", SMTP_CLIENT, str(port)]),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, f"{result.stderr}\n{daemon.log()}"
        greeting, *ehlo = result.stdout.splitlines()
        assert greeting.startswith("220")
        assert ehlo[0].startswith("250") and ehlo[-1].startswith("250 ")
        assert_confined(daemon, vmail)
    finally:
        daemon.stop()


@pytest.mark.parametrize(
    "unit_name, module",
    [
        ("chatmail-expire.service", "chatmaild.housekeeping.expire"),
        ("chatmail-fsreport.service", "chatmaild.housekeeping.fsreport"),
    ],
)
def test_oneshot_runs_in_its_sandbox(unit_name, module, layout, tmp_path):
    daemon = start(unit_name, module, layout, tmp_path)
    try:
        rc = daemon.proc.wait(timeout=60)
        assert rc == 0, daemon.log()
        if "fsreport" in unit_name:
            written = list(layout[1]["/var/lib/prometheus/node-exporter"].glob("*.prom"))
            assert written, daemon.log()
            assert stat.S_IMODE(os.stat(written[0]).st_mode) == 0o644
    finally:
        daemon.stop()


MDWE_PROBE = textwrap.dedent(
    """
    import asyncio, crypt, mmap, warnings
    import uvloop
    try:
        mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
        print("wx-mapping-allowed")
    except OSError:
        print("wx-mapping-refused")
    h = crypt.crypt("password123", crypt.mksalt(crypt.METHOD_SHA512))
    print("crypt-ok" if h.startswith("$6$") and crypt.crypt("password123", h) == h else "crypt-bad")
    async def main():
        await asyncio.sleep(0)
        return "uvloop-ok"
    print(uvloop.run(main()))
    """
)


def test_uvloop_and_sha512_crypt_work_under_mdwe_and_the_syscall_filter(tmp_path):
    """MemoryDenyWriteExecute=: the kernel's PR_SET_MDWE (Linux >= 6.3) has the same rule.
    The probe proves the restriction is active (a W+X mapping is refused) and that the
    event loop and the password hashing still work under it and doveauth's seccomp filter."""
    require(
        tuple(int(x) for x in os.uname().release.split(".")[:2]) >= (6, 3), "Linux >= 6.3 (MDWE)"
    )
    unit = Unit.load(SYSTEMD_DIR / "doveauth.service")
    syscalls = tmp_path / "syscalls"
    syscalls.write_text("\n".join(sorted(allowed_syscalls(unit, syscall_groups()))))
    result = subprocess.run(
        [
            sys.executable,
            str(HERE / "systemd_sandbox_exec.py"),
            "--mdwe",
            "--syscalls",
            str(syscalls),
        ]
        + ["--families", "1,2,10", "--", sys.executable, "-W", "ignore", "-c", MDWE_PROBE],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["wx-mapping-refused", "crypt-ok", "uvloop-ok"]


LOG_LINES = [
    # RFC 3164 with host, as rsyslog forwards it
    "<22>Jun  1 12:00:00 relay dovecot: lmtp(a@chat.example)<7><x>: msgid=<m1>: "
    "saved mail to INBOX",
    # RFC 3164 without host, as rsyslog's omuxsock sends it
    "<22>Jun  1 12:00:01 dovecot: lmtp(b@chat.example)<8><y>: msgid=<m2>: saved mail to INBOX",
]

SYSLOG_UDP_CLIENT = textwrap.dedent(
    """
    import socket, sys, time, urllib.request
    line, want = sys.argv[1], sys.argv[2]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(line.encode(), ("127.0.0.1", 3904))
    deadline = time.monotonic() + 20
    while True:
        body = urllib.request.urlopen("http://127.0.0.1:3903/metrics", timeout=10).read()
        if want.encode() in body or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    sys.stdout.write(body.decode())
    """
)


def listening(daemon, proto, port):
    """A socket of the daemon's network namespace bound to 127.0.0.1:port (TCP: listening)."""
    try:
        table = Path(f"/proc/{daemon.child_pid}/net/{proto}").read_text()
    except OSError:
        return False
    for row in table.splitlines()[1:]:
        local, state = row.split()[1], row.split()[3]
        if local == f"0100007F:{port:04X}" and (proto == "udp" or state == "0A"):
            return True
    return False


def test_logmetrics_counts_syslog_datagrams_in_its_sandbox(layout, tmp_path):
    """DynamicUser= (a uid no user has), the unix socket in its RuntimeDirectory, UDP 3904
    and the endpoint 127.0.0.1:3903 in a private network namespace (the ports are fixed)."""
    daemon = start("chatmail-logmetrics.service", "chatmaild.metrics.logmetrics", layout, tmp_path)
    try:
        user = daemon.user
        assert user.pw_uid != 0
        with pytest.raises(KeyError):
            pwd.getpwuid(user.pw_uid)
        sock_path = daemon.unit.exec_start()[daemon.unit.exec_start().index("--unix-dgram") + 1]
        assert sock_path == "/run/chatmail-logmetrics/syslog.socket"
        sock = daemon.inside(sock_path)
        wait_for(sock.exists, "syslog.socket to appear", daemon)
        wait_for(lambda: listening(daemon, "tcp", 3903), "the endpoint on 3903", daemon)
        assert listening(daemon, "udp", 3904)
        st = os.stat(sock)
        assert stat.S_ISSOCK(st.st_mode) and st.st_uid == user.pw_uid
        # the program makes it 0660 (its group); nothing for others
        assert stat.S_IMODE(st.st_mode) == 0o660, oct(st.st_mode)
        assert stat.S_IMODE(os.stat(sock.parent).st_mode) == 0o755
        # one datagram over the unix socket (from the host, as rsyslog), one over UDP
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as ux:
            ux.sendto(LOG_LINES[1].encode(), str(sock))
        # the client polls until both are counted (bounded: it gives up after 20 s)
        want = 'delivered_mail{prog="delivered_mail.mtail"} 2.0'
        result = subprocess.run(
            daemon.in_netns([sys.executable, "-c", SYSLOG_UDP_CLIENT, LOG_LINES[0], want]),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, f"{result.stderr}\n{daemon.log()}"
        samples = {
            sample.name: sample.value
            for family in text_string_to_metric_families(result.stdout)
            for sample in family.samples
        }
        assert samples["delivered_mail"] == 2, f"{samples}\n{daemon.log()}"
        assert samples["chatmail_logmetrics_lines_total"] == 2
        assert samples["chatmail_logmetrics_malformed_total"] == 0
        assert_confined(daemon, user)
    finally:
        daemon.stop()


FAKE_BIN = "/run/chatmaild-test-bin"
TEXTFILE_DIR = "/var/lib/prometheus/node-exporter"
FAKE_TOOL_OUTPUT = {
    "fail2ban-client": None,  # answers by argument, below
    "wg": "wg0\tcHJpdg==\tcHVi\t51820\toff\n"
    "wg0\tcGVlckE=\t(none)\t198.51.100.1:51820\t10.0.0.2/32\t0\t1000\t2000\toff\n",
    "postqueue": '{"queue_name": "deferred", "queue_id": "5C3D22C0789", "recipients": []}\n',
    "doveadm": "username proto pid ip\na@chat.example imap 1 192.0.2.1\n"
    "b@chat.example imap 2 192.0.2.2\n",
}
F2B_STATUS = "Status\n|- Number of jail:\t1\n`- Jail list:\tsshd\n"
F2B_SSHD = (
    "Status for the jail: sshd\n`- Actions\n   |- Currently banned:\t3\n   |- Total banned:\t17\n"
)


def make_fake_tools(bindir):
    """fail2ban-client, wg, postqueue, doveadm printing canned output (as seen in the
    sandbox at FAKE_BIN). `wg` also leaves its own /proc/self/status in the textfile dir:
    the process credentials the unit gives the tools it runs."""
    bindir.mkdir()
    (bindir / "f2b-status").write_text(F2B_STATUS)
    (bindir / "f2b-sshd").write_text(F2B_SSHD)
    for tool, output in FAKE_TOOL_OUTPUT.items():
        if tool == "fail2ban-client":
            script = (
                f'[ "$1" = status ] || exit 2\n'
                f'[ -z "$2" ] && exec /bin/cat {FAKE_BIN}/f2b-status\n'
                f'exec /bin/cat {FAKE_BIN}/f2b-"$2"\n'
            )
        else:
            (bindir / f"{tool}.out").write_text(output)
            script = f"exec /bin/cat {FAKE_BIN}/{tool}.out\n"
            if tool == "wg":
                script = f"/bin/cat /proc/self/status > {TEXTFILE_DIR}/wg.status\n" + script
        (bindir / tool).write_text("#!/bin/sh\n" + script)
        (bindir / tool).chmod(0o755)


def read_prom(path):
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(path.read_text())
        for s in family.samples
    }


def textfile_dir_of_another_user(layout):
    """node-exporter's directory, owned by another user (vmail standing in for prometheus): root
    writes there through CAP_DAC_OVERRIDE only."""
    textfile = layout[1][TEXTFILE_DIR]
    os.chmod(textfile, 0o755)
    assert os.stat(textfile).st_uid != 0
    return textfile


def test_extra_metrics_runs_with_tools_and_the_relay_certificate_in_its_sandbox(layout, tmp_path):
    """Root with the unit's two capabilities, read-only system, fake tools on PATH, the
    relay's certificate at its production path /var/lib/acme/live/<mail_domain>/fullchain
    (a temp dir bound there: nothing is written to the host's /var/lib)."""
    make_fake_tools(tmp_path / "bin")
    certdir = tmp_path / "acme-live-domain"
    certdir.mkdir()
    # a certificate whose name differs: the label must come from chatmail.ini
    write_self_signed_cert(certdir / "fullchain", f"mx.{MAIL_DOMAIN}", 45)
    textfile = textfile_dir_of_another_user(layout)
    daemon = start(
        "chatmail-extra-metrics.service",
        "chatmaild.metrics.extra",
        layout,
        tmp_path,
        extra_ro_binds={FAKE_BIN: tmp_path / "bin", f"/var/lib/acme/live/{MAIL_DOMAIN}": certdir},
        env={"PATH": FAKE_BIN},
    )
    try:
        assert daemon.user.pw_uid == 0
        rc = daemon.proc.wait(timeout=60)
        assert rc == 0, daemon.log()
        assert daemon.log() == ""
        prom = textfile / "chatmail_extra.prom"
        assert stat.S_IMODE(os.stat(prom).st_mode) == 0o644
        samples = read_prom(prom)
        tls = samples.pop(("tls_cert_expiry_days", (("domain", MAIL_DOMAIN),)))
        assert 44.9 < tls <= 45
        handshake = samples.pop(
            ("wireguard_last_handshake_seconds", (("interface", "wg0"), ("peer", "cGVlckE=")))
        )
        assert handshake == float("inf")
        assert samples == {
            ("fail2ban_banned_total", (("jail", "sshd"),)): 3,
            ("fail2ban_bans_total", (("jail", "sshd"),)): 17,
            ("wireguard_received_bytes_total", (("interface", "wg0"), ("peer", "cGVlckE="))): 1000,
            ("wireguard_sent_bytes_total", (("interface", "wg0"), ("peer", "cGVlckE="))): 2000,
            ("postfix_queue_depth", ()): 1,
            ("dovecot_connected_users", ()): 2,
        }
        status = dict(
            (key, value.strip())
            for key, _, value in (
                line.partition(":") for line in (textfile / "wg.status").read_text().splitlines()
            )
        )
        assert_confined(daemon, daemon.user, status)
    finally:
        daemon.stop()


def test_extra_metrics_without_tools_or_certificate_in_its_sandbox(layout, tmp_path):
    """Nothing to ask: one line per source on stderr, an (empty) .prom file all the same."""
    (tmp_path / "empty-bin").mkdir()
    textfile = textfile_dir_of_another_user(layout)
    daemon = start(
        "chatmail-extra-metrics.service",
        "chatmaild.metrics.extra",
        layout,
        tmp_path,
        extra_ro_binds={FAKE_BIN: tmp_path / "empty-bin"},
        env={"PATH": FAKE_BIN},
    )
    try:
        rc = daemon.proc.wait(timeout=60)
        assert rc == 0, daemon.log()
        lines = daemon.log().splitlines()
        assert sorted(line.split(":")[1].strip() for line in lines) == [
            "dovecot users",
            "fail2ban",
            "postfix queue",
            "tls certificates",
            "wireguard",
        ], lines
        assert f"tls certificates: /var/lib/acme/live/{MAIL_DOMAIN}/fullchain not found" in lines[0]
        assert read_prom(textfile / "chatmail_extra.prom") == {}
    finally:
        daemon.stop()


def test_chatmail_turn_serves_credentials_in_its_sandbox(layout, tmp_path):
    """As turnserver, no network, the secret read from its read-only database; nobody else
    (vmail here) can read that database."""
    from chatmaild.turn import secretdb
    from chatmaild.turn.credentials import password

    try:
        turnserver = pwd.getpwnam("turnserver")
    except KeyError:
        require(False, "user turnserver (Debian's coturn)")
    db_dir = tmp_path / "turn-db"
    secretdb.ensure_secret(db_dir / "turndb", MAIL_DOMAIN, owner="turnserver")
    secret = secretdb.read_secret(db_dir / "turndb", MAIL_DOMAIN)
    daemon = start(
        "chatmail-turn.service",
        "chatmaild.turn",
        layout,
        tmp_path,
        extra_ro_binds={"/var/lib/chatmail-turn": db_dir},
    )
    try:
        sock = daemon.inside("/run/chatmail-turn/turn.socket")
        # the file appears at bind(), before listen(): ready when it accepts a connection
        wait_for(lambda: _unix_accepts(sock), "turn.socket to accept connections", daemon)
        assert stat.S_IMODE(os.stat(sock).st_mode) == 0o666
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(10)
            s.connect(str(sock))
            line = s.makefile("rb").read()
        username, pw = line.decode().rstrip("\n").split(":")
        assert pw == password(secret, username)
        assert_confined(daemon, turnserver)
    finally:
        daemon.stop()
    probe = "import sys; open(sys.argv[1], 'rb')"
    as_vmail = subprocess.run(
        ["setpriv", "--reuid=vmail", "--regid=vmail", "--clear-groups"]
        + [sys.executable, "-c", probe, str(db_dir / "turndb")],
        capture_output=True,
        text=True,
    )
    assert as_vmail.returncode != 0 and "PermissionError" in as_vmail.stderr


def test_coturn_relays_under_its_hardening_dropin(layout, tmp_path):
    """Debian's coturn.service plus systemd/dropins/coturn.service.d/hardening.conf: coturn
    (the real binary) starts as turnserver with no capability, under the drop-in's syscall
    filter, MDWE and read-only system, reads the secret from its database and relays
    (turnutils_uclient passes against it)."""
    from systemd_unitfile import DROPINS_DIR

    from chatmaild.config import read_config
    from chatmaild.turn import secretdb
    from chatmaild.turn.coturn import TurnLayout, render_turnserver_conf
    from chatmaild.turn.credentials import credential_line

    from conftest import require_tool

    require_sandbox_tools()
    require_tool("turnserver", "turnutils_uclient")
    base = Path("/lib/systemd/system/coturn.service")
    require(base.exists(), "Debian's coturn.service")
    turnserver = pwd.getpwnam("turnserver")
    unit = Unit.load(base, DROPINS_DIR / "coturn.service.d" / "hardening.conf")

    port = free_udp_tcp_port()  # coturn listens on both
    db_dir = tmp_path / "turn-db"
    secretdb.ensure_secret(db_dir / "turndb", MAIL_DOMAIN, owner="turnserver")
    ini = write_ini(
        tmp_path / "coturn.ini",
        mail_domain=MAIL_DOMAIN,
        turn_port=port,
        turn_relay_ports="61000-61100",
        turn_db_path="/var/lib/chatmail-turn/turndb",
    )
    conf = tmp_path / "turnserver.conf"
    turn_layout = TurnLayout(
        conf=conf, listening_ips=("127.0.0.1",), relay_ip="127.0.0.1", allow_loopback_peers=True
    )
    conf.write_text(render_turnserver_conf(read_config(ini), turn_layout))
    os.chmod(conf, 0o644)

    ini_path, paths = layout
    workdir = tmp_path / "sandbox"
    workdir.mkdir()
    daemon = SandboxedDaemon(
        unit,
        "unused",
        [],
        workdir,
        ini_path,
        {**paths, "/var/lib/chatmail-turn": db_dir},
        extra_ro_binds={"/etc/turnserver.conf": conf},
    )
    daemon.argv = unit.exec_start()  # /usr/bin/turnserver -c /etc/turnserver.conf --pidfile=
    daemon.start()
    try:
        username, pw = (
            credential_line(secretdb.read_secret(db_dir / "turndb", MAIL_DOMAIN), time.time())
            .decode()
            .strip()
            .split(":")
        )
        argv = ["turnutils_uclient", "-p", str(port), "-u", username, "-w", pw]
        argv += ["-r", MAIL_DOMAIN, "-e", "127.0.0.1", "-n", "5", "-m", "1", "-y"]
        argv += ["-L", "127.0.0.1", "127.0.0.1"]
        deadline = time.monotonic() + 60  # coturn starts slowly on a loaded machine
        while True:
            out = subprocess.run(argv, capture_output=True, text=True, timeout=60)
            text = out.stdout + out.stderr
            if "tot_send_msgs=10, tot_recv_msgs=10" in text or time.monotonic() > deadline:
                break
            assert daemon.running(), daemon.log()
            time.sleep(0.5)
        assert "tot_send_msgs=10, tot_recv_msgs=10" in text, text + daemon.log()
        assert "ERROR" not in text, text
        assert_confined(daemon, turnserver)
    finally:
        daemon.stop()


IROH_CLIENTS = textwrap.dedent(
    """
    import asyncio, sys
    from chatmaild.irohrelay.client import RelayClient

    async def main():
        a = await RelayClient.connect("127.0.0.1", 3340)
        b = await RelayClient.connect("127.0.0.1", 3340)
        for c in (a, b):  # a Pong: the relay has registered the client
            c.ping(b"register")
            assert await c.recv_frame() == (13, b"register")
        a.send_packet(b.key, b"through the sandbox")
        assert await b.recv_packet() == (a.key, b"through the sandbox")
        print("forwarded")

    asyncio.run(main())
    """
)


def test_iroh_relay_forwards_in_its_sandbox(layout, tmp_path):
    """DynamicUser=, the seccomp filter (ed25519 through OpenSSL, uvloop) and MDWE: two relay
    clients in the sandbox's network namespace exchange a packet on 127.0.0.1:3340."""
    daemon = start("chatmail-iroh-relay.service", "chatmaild.irohrelay", layout, tmp_path)
    try:
        user = daemon.user
        assert user.pw_uid != 0
        wait_for(lambda: listening(daemon, "tcp", 3340), "the relay on 3340", daemon)
        env = {**os.environ, "PYTHONPATH": str(HERE.parent.parent)}
        result = subprocess.run(
            daemon.in_netns([sys.executable, "-c", IROH_CLIENTS]),
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
        )
        assert result.returncode == 0, f"{result.stderr}\n{daemon.log()}"
        assert result.stdout.strip() == "forwarded"
        assert_confined(daemon, user)
    finally:
        daemon.stop()


def _unix_accepts(path):
    """Whether the unix stream socket at `path` accepts a connection."""
    with socket.socket(socket.AF_UNIX) as s:
        try:
            s.connect(str(path))
        except OSError:
            return False
    return True
