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

import pytest
from systemd_sandbox import CONFIG_DIR_IN_SANDBOX, HERE, SandboxedDaemon, tools_missing, wait_for
from systemd_unitfile import SYSTEMD_DIR, Unit, allowed_syscalls, syscall_groups

from conftest import require, write_ini

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


def start(unit_name, module, layout, tmp_path):
    require_sandbox_tools()
    require_module(module)
    unit = Unit.load(SYSTEMD_DIR / unit_name)
    args = [CFG if a.endswith("/chatmail.ini") else a for a in unit.exec_start()[1:]]
    ini, paths = layout
    workdir = tmp_path / "sandbox"
    workdir.mkdir()
    return SandboxedDaemon(unit, module, args, workdir, ini, paths).start()


def assert_confined(daemon, vmail):
    status = daemon.status()
    assert status, f"daemon process not found:\n{daemon.log()}"
    assert status["Uid"].split()[0] == str(vmail.pw_uid)
    assert status["Gid"].split()[0] == str(vmail.pw_gid)
    assert status["Groups"] == ""
    assert status["NoNewPrivs"] == "1"
    assert status["Seccomp"] == "2"
    assert int(status["CapEff"], 16) == 0 and int(status["CapBnd"], 16) == 0
    assert status["Umask"] == daemon.unit.get("UMask")
    print(f"{daemon.unit.name}: uid {vmail.pw_name}, seccomp filter, NNP, no caps, umask 0077")


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
