"""Faults against the real Postfix + Dovecot of `relay up` and our supervised daemons.

- `relay up` restarts a daemon killed with SIGKILL within seconds (logged, with the units'
  descriptor limit);
- SIGKILL of each of our daemons twice during traffic that retries like a client: nothing is
  lost, a duplicate only ever follows a client's retry (the counts are printed);
- no password reaches any file under the relay's state dir while doveauth is dead,
  restarting, hung or slow;
- 10,000 idle connections to filtermail leave normal mail delivered within 2 s;
- SIGTERM to filtermail during an upload: that message completes on the first try;
- a connection trickling bytes is closed by filtermail's deadline.
"""

import imaplib
import os
import resource
import secrets
import shutil
import signal
import smtplib
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from chatmaild.relay.daemons import LIMIT_NOFILE
from chatmaild.relay.netns import entered
from chatmaild.relay.processes import pid_alive

from .fault_helpers import (
    copies,
    daemon_pid,
    files_containing,
    kill_and_wait_restart,
    send_retrying,
    stopped,
)
from .helpers import encrypted_message, random_local_part, wait_until
from conftest import REPO_ROOT, daemon_env, require

OURS = ["doveauth", "lastlogin", "metadata", "filtermail-outgoing", "filtermail-incoming"]
ROUNDS = 8
KILL_AT = (2, 5)
IDLE_CONNECTIONS = 10_000
BATCH = 500
OTHER = "someone@other.example"


@pytest.mark.parametrize("name", [*OURS, "web", "iroh-relay", "logmetrics"])
def test_relay_up_restarts_a_killed_daemon_within_seconds(relay, name):
    relay.require_daemons(name)
    old, new, took = kill_and_wait_restart(relay, name)
    print(f"{name}: killed pid {old}, pid {new} ready after {took:.2f} s")
    assert took < 5
    log = relay.log_text(f"{name}.log")
    assert f"supervisor: {name} (pid {old}) was killed by signal 9 (SIGKILL)" in log
    assert f"supervisor: {name} restarted (pid {new}" in log
    limits = Path(f"/proc/{new}/limits").read_text()
    (line,) = [x for x in limits.splitlines() if x.startswith("Max open files")]
    assert line.split()[3:5] == [str(LIMIT_NOFILE), str(LIMIT_NOFILE)], line


@pytest.mark.parametrize("name", OURS)
def test_kill9_mid_traffic_loses_no_message(relay, name):
    relay.require_daemons(*OURS)
    (a, pa), (b, pb) = relay.new_account(), relay.new_account()
    attempts = {}  # marker -> attempts the client needed
    progress = [0]
    errors = []

    def traffic():
        try:
            for i in range(ROUNDS):
                marker, msg = encrypted_message(a, [b])
                attempts[marker] = send_retrying(lambda m=msg: relay.submit(465, a, pa, a, [b], m))
                marker, msg = encrypted_message(OTHER, [b])
                attempts[marker] = send_retrying(lambda m=msg: relay.send_port25(OTHER, [b], m))
                send_retrying(lambda: relay.imap(b, pb).logout())  # lastlogin, doveauth
                progress[0] = i + 1
        except Exception as e:  # reported below
            errors.append(e)

    thread = threading.Thread(target=traffic)
    thread.start()
    try:
        for at in KILL_AT:
            wait_until(lambda n=at: progress[0] >= n or not thread.is_alive(), "traffic", 120)
            kill_and_wait_restart(relay, name)
    finally:
        thread.join(300)
    assert not errors, errors

    def all_delivered():
        relay.relay.flush_queue()  # what a dict daemon's death deferred, now
        return all(copies(relay, b, attempts).values())

    try:
        wait_until(all_delivered, "every message delivered", timeout=60, interval=1)
    except AssertionError:
        pass  # counted and reported below
    counts = copies(relay, b, attempts)
    lost = [m for m, n in counts.items() if n == 0]
    duplicated = [m for m, n in counts.items() if n > 1]
    retried = [m for m, n in attempts.items() if n > 1]
    print(
        f"kill -9 {name} x{len(KILL_AT)}: sent {len(counts)}, delivered"
        f" {sum(1 for n in counts.values() if n)}, duplicated {len(duplicated)},"
        f" lost {len(lost)} (client retries {len(retried)})"
    )
    assert not lost
    assert set(duplicated) <= set(retried), "a duplicate without a client retry"


def _try_logins(relay, logins, timeout=45.0):
    """Attempt IMAP and SMTP AUTH logins for every (addr, password), in parallel threads;
    failures are expected while doveauth is down."""

    def imap(addr, password):
        with entered(relay.netns):
            client = imaplib.IMAP4_SSL("127.0.0.1", 993, ssl_context=_tls(), timeout=timeout)
        try:
            client.login(addr, password)
            client.logout()
        except (imaplib.IMAP4.error, OSError):
            pass

    def submission(addr, password):
        try:
            client = relay.smtp(465)
            client.sock.settimeout(timeout)
            try:
                client.login(addr, password)
            finally:
                client.close()
        except (smtplib.SMTPException, OSError):
            pass

    threads = [
        threading.Thread(target=f, args=login) for login in logins for f in (imap, submission)
    ]
    for t in threads:
        t.start()
    return threads


def _tls():
    from .helpers import client_tls

    return client_tls()


def _join(threads):
    for t in threads:
        t.join(90)
        assert not t.is_alive()


def test_no_password_in_any_log_while_doveauth_is_dead_restarting_hung_or_slow(relay):
    relay.require_daemons("doveauth")
    a, _ = relay.new_account()
    passwords = []

    def logins(what):
        """An existing and a new account, each with a password never seen before."""
        new = f"{random_local_part()}@{relay.domain}"
        pairs = [
            (a, f"{what}-old-{secrets.token_hex(8)}"),
            (new, f"{what}-new-{secrets.token_hex(8)}"),
        ]
        passwords.extend(p for _, p in pairs)
        return pairs

    dovecot_log = relay.relay.layout.dovecot_log
    supervisor = relay.relay.pids["doveauth"]

    # dead: the supervisor held, the daemon killed: nothing answers on the socket
    with stopped(supervisor):
        pid = daemon_pid(relay, "doveauth")
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: not pid_alive(pid), "doveauth dead")
        _join(_try_logins(relay, logins("dead")))
    relay.relay.wait_ready(only="doveauth")

    # restarting: logins while the supervisor waits to start it again
    os.kill(daemon_pid(relay, "doveauth"), signal.SIGKILL)
    _join(_try_logins(relay, logins("restarting")))
    relay.relay.wait_ready(only="doveauth")

    # hung: Dovecot's dict client gives up after 30 s and logs the query it waited for
    with stopped(daemon_pid(relay, "doveauth")):
        threads = _try_logins(relay, logins("hung"))
        wait_until(
            lambda: "Dict server timeout" in dovecot_log.read_text(errors="replace"),
            "Dovecot's dict timeout",
            timeout=45,
            interval=0.5,
        )
    _join(threads)

    # slow: an answer after 6 s (Dovecot warns about lookups slower than 5 s, with the query)
    with stopped(daemon_pid(relay, "doveauth")):
        threads = _try_logins(relay, logins("slow"))
        time.sleep(6)
    _join(threads)
    wait_until(
        lambda: "dict lookup took" in dovecot_log.read_text(errors="replace"),
        "Dovecot's slow-lookup warning",
        timeout=20,
    )

    text = dovecot_log.read_text(errors="replace")
    assert f"Failed to lookup key shared/passdb/{a}" in text  # the faults were seen...
    leaks = files_containing(relay.relay.state_dir, passwords)
    assert leaks == {}, leaks  # ...and no password reached any file
    journal = _journal_text()
    if journal is not None:
        assert not [p for p in passwords if p in journal]


def _journal_text():
    """Today's journal where systemd-journald runs (not in containers without it)."""
    if shutil.which("journalctl") is None or not os.path.exists("/run/systemd/journal/socket"):
        return None
    out = subprocess.run(
        ["journalctl", "-q", "-o", "cat", "--since", "-10min"],
        capture_output=True,
        text=True,
        check=False,
    )
    return out.stdout if out.returncode == 0 else None


def test_idle_connections_do_not_starve_mail(relay):
    relay.require_daemons("filtermail-incoming")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = IDLE_CONNECTIONS + 1000
    require(hard >= need, f"a hard RLIMIT_NOFILE of {need} for the test process")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, need), hard))
    b, _ = relay.new_account()
    pid = daemon_pid(relay, "filtermail-incoming")
    port = relay.relay.config.filtermail_smtp_port_incoming
    held = []
    try:
        base = len(os.listdir(f"/proc/{pid}/fd"))
        while len(held) < IDLE_CONNECTIONS:
            # in batches below the listen backlog: SYNs beyond it are dropped and retried late
            with entered(relay.netns):
                for _ in range(min(BATCH, IDLE_CONNECTIONS - len(held))):
                    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                    s.setblocking(False)
                    s.connect_ex(("127.0.0.1", port))
                    held.append(s)
            wait_until(
                lambda: len(os.listdir(f"/proc/{pid}/fd")) >= base + len(held),
                f"{len(held)} connections in filtermail",
                timeout=30,
                interval=0.05,
            )
        marker, msg = encrypted_message(OTHER, [b])
        started = time.monotonic()
        relay.send_port25(OTHER, [b], msg)
        wait_until(lambda: copies(relay, b, [marker])[marker], "delivery", 10, 0.02)
        took = time.monotonic() - started
        print(f"{IDLE_CONNECTIONS} idle connections to filtermail: delivered in {took:.2f} s")
        assert took < 2.0
    finally:
        for s in held:
            s.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert "out of file descriptors" not in relay.log_text("filtermail-incoming.log")


def test_sigterm_during_an_upload_completes_that_message(relay):
    relay.require_daemons("filtermail-outgoing")
    (a, pa), (b, _) = relay.new_account(), relay.new_account()
    marker, msg = encrypted_message(a, [b], payload_size=3 * 1024 * 1024)
    half = msg.index(b"\r\n", len(msg) // 2) + 2
    old = daemon_pid(relay, "filtermail-outgoing")
    client = relay.smtp(465)
    try:
        client.login(a, pa)
        assert client.mail(a)[0] == 250
        assert client.rcpt(b)[0] == 250
        assert client.docmd("DATA")[0] == 354
        client.send(msg[:half])
        time.sleep(0.5)
        os.kill(old, signal.SIGTERM)
        wait_until(
            lambda: "shutting down" in relay.log_text("filtermail-outgoing.log"),
            "filtermail shutting down",
        )
        time.sleep(0.5)
        assert pid_alive(old)  # still there: its session is in flight
        client.send(msg[half:] + b".\r\n")
        code, text = client.getreply()
        assert code == 250, text  # the first try: no re-send of the whole message
        client.quit()
    finally:
        client.close()
    wait_until(lambda: copies(relay, b, [marker])[marker], "delivery")
    assert copies(relay, b, [marker])[marker] == 1
    wait_until(lambda: not pid_alive(old), "the old filtermail gone", timeout=20)
    daemon_pid(relay, "filtermail-outgoing")  # restarted by its supervisor
    relay.relay.wait_ready(only="filtermail-outgoing")


def _filtermail_ini(relay, tmp_path, port):
    """The relay's ini, with filtermail-incoming on `port` and no metrics endpoints."""
    drop = ("filtermail_smtp_port_incoming", "filtermail_http_port_incoming", "metrics_")
    lines = [
        line
        for line in relay.relay.config_path.read_text().splitlines()
        if not line.strip().startswith(drop)
    ]
    ini = tmp_path / "chatmail.ini"
    ours = [
        f"filtermail_smtp_port_incoming = {port}",
        f"filtermail_http_port_incoming = {port + 1}",
    ]
    ini.write_text("\n".join([*lines, *ours, ""]))
    return ini


def test_a_trickling_connection_is_closed_by_its_deadline(relay, tmp_path):
    """A second filtermail-incoming (the real daemon, short deadlines) in the relay's
    namespace, re-injecting into the relay's Postfix."""
    port = 10091
    ini = _filtermail_ini(relay, tmp_path, port)
    argv = [sys.executable, "-m", "chatmaild.filtermail", str(ini), "incoming"]
    argv += ["--command-timeout", "2", "--session-timeout", "60"]
    proc = subprocess.Popen(
        relay.relay.in_netns(argv),
        env=daemon_env(),
        cwd=REPO_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        from chatmaild.relay import netns as netns_mod

        wait_until(lambda: netns_mod.tcp_port_open(relay.netns, port), "filtermail listening")

        def trickle(prefix):
            with entered(relay.netns):
                s = socket.create_connection(("127.0.0.1", port), timeout=10)
            with s:
                s.sendall(prefix)
                started = time.monotonic()
                received = b""
                s.settimeout(1.0)
                for _ in range(30):  # one byte a second: a line would take ever so long
                    try:
                        s.send(b"x")
                    except OSError:
                        break
                    try:
                        chunk = s.recv(4096)
                    except TimeoutError:
                        continue
                    except ConnectionResetError:
                        # closed with our unread bytes pending: the peer's RST follows the
                        # 421 that an earlier recv() returned
                        break
                    if not chunk:
                        break
                    received += chunk
                return received.decode(), time.monotonic() - started

        text, took = trickle(b"")
        assert "421 4.4.2 Error: timeout exceeded" in text
        assert took < 6
        envelope = b"EHLO x\r\nMAIL FROM:<a@other.example>\r\nRCPT TO:<b@x>\r\nDATA\r\n"
        text, took = trickle(envelope)
        assert "421 4.4.2 Error: timeout exceeded" in text and took < 6

        # the daemon serves on: a message through it reaches the mailbox
        b, _ = relay.new_account()
        marker, msg = encrypted_message(OTHER, [b])
        with entered(relay.netns):
            client = smtplib.SMTP("127.0.0.1", port, timeout=30)
        with client:
            assert client.sendmail(OTHER, [b], msg) == {}
        wait_until(lambda: copies(relay, b, [marker])[marker], "delivery")
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=20)
    assert err.count("closing session from") >= 2, err
