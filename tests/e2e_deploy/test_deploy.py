"""deploy/ansible/site.yml against a booted Debian 12 container (issue 17).

One container for the session (conftest.py): the first playbook run takes it from a bare
Debian 12 (plus the cached layer of Debian packages) to a relay with a certificate from
pebble. The tests below run in file order; the ones that disturb the relay restore it.
"""

import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from .harness import ROOT
from .outside import OutsideRelay, filtermail_incoming_counts
from .prebuild import packages_layer
from conftest import require, require_tool

OUR_ALWAYS_ON = ("doveauth", "filtermail", "filtermail-incoming", "lastlogin")
SYSTEM = ("postfix", "dovecot", "opendkim", "nginx", "unbound", "rsyslog")
MONITORING = (
    "prometheus",
    "prometheus-node-exporter",
    "prometheus-nginx-exporter",
    "prometheus-postfix-exporter",
)
OPEN_TCP = (25, 80, 143, 443, 465, 587, 993, 3478)  # 3478: coturn (TURN)
LOOPBACK_ONLY = (10080, 3903, 9090)


def _active(d, unit):
    return d.container.run(["systemctl", "is-active", unit], check=False).stdout.strip()


def _our_units(d):
    """The service and timer units the playbook installed from systemd/."""
    out = d.container.sh("ls /etc/systemd/system/ | grep -E '\\.(service|timer)$'").stdout
    names = {p.name for p in (ROOT / "systemd").iterdir() if p.suffix in (".service", ".timer")}
    return sorted(n for n in out.split() if n in names)


def _connects(ip, port, timeout=3):
    try:
        with socket.create_connection((ip, port), timeout=timeout):
            return True
    except OSError:
        return False


def _connecting(ip, ports):
    """{port: connects?}, probed at once (a dropped port costs the whole timeout)."""
    with ThreadPoolExecutor(len(ports)) as pool:
        return dict(zip(ports, pool.map(lambda port: _connects(ip, port), ports), strict=True))


def _task_result(output, task):
    """`changed`, `ok`, `skipping`, ... of the task named `task` in a play's output."""
    header = rf"^TASK \[[^\]]*{re.escape(task)}\][^\n]*\n"
    m = re.search(header + r"(?:(?!TASK \[).*\n)*?(\w+): \[", output, re.M)
    return m and m.group(1)


def test_playbook_takes_a_bare_container_to_a_relay(deployment):
    first = deployment.first
    assert first.rc == 0 and first.failed == 0, first.output[-4000:]
    assert first.changed > 20
    if not packages_layer():
        # a bare Debian 12: the role's apt task installed every package, fetched through
        # the host (harness.py's apt proxy)
        assert _task_result(first.output, "Packages | install") == "changed"
        assert deployment.apt_proxy.count > 0 and not deployment.apt_proxy.errors
    for unit in (*SYSTEM, *OUR_ALWAYS_ON, "chatmail-metadata", "chatmail-web"):
        assert _active(deployment, unit) == "active", unit
    for unit in MONITORING:
        assert _active(deployment, unit) == "active", unit
    # every configuration file is the renderer's: a dry run of it finds nothing to change
    out = deployment.container.run(
        ["/usr/local/lib/chatmaild/venv/bin/python", "-m", "chatmaild.relay", "render",
         "--config", "/usr/local/lib/chatmaild/chatmail.ini", "--root", "/", "--dry-run"]
    ).stdout  # fmt: skip
    assert '"changed": []' in out


def test_a_second_run_changes_nothing(deployment):
    again = deployment.play()
    assert again.rc == 0, again.output[-4000:]
    assert again.changed == 0, again.changed_tasks()


def test_verify_passes_and_fails_when_a_service_is_stopped(deployment):
    ok = deployment.play("--tags", "verify")
    assert ok.rc == 0 and ok.failed == 0, ok.output[-4000:]
    assert "DKIM: " in ok.output
    deployment.container.run(["systemctl", "stop", "doveauth"])
    try:
        bad = deployment.play("--tags", "verify")
        assert bad.rc != 0 and bad.failed == 1
        assert "doveauth" in bad.output
    finally:
        deployment.container.run(["systemctl", "start", "doveauth"])
    assert deployment.play("--tags", "verify").rc == 0


def _unbound_serves(d, text):
    """Let the container's unbound answer a record (a stand-in for the published zone)."""
    conf = "/etc/unbound/unbound.conf.d/zz-test-dkim.conf"
    if text is None:
        d.container.run(["rm", "-f", conf])
    else:
        d.container.run(["tee", conf], input=text)
    d.container.run(["systemctl", "restart", "unbound"])


def test_verify_checks_a_published_dkim_record_against_the_key(deployment):
    venv_python = "/usr/local/lib/chatmaild/venv/bin/python"
    record = deployment.container.run(
        [venv_python, "-m", "chatmaild.relay", "dkim-record", "--config",
         "/usr/local/lib/chatmaild/chatmail.ini"]
    ).stdout.strip()  # fmt: skip
    name = record.split()[0]
    try:
        _unbound_serves(deployment, f"server:\n    local-data: '{record}'\n")
        ok = deployment.play("--tags", "verify")
        assert ok.rc == 0 and "DKIM: ok" in ok.output, ok.output[-3000:]
        other = f'{name} TXT "v=DKIM1; k=rsa; p=MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAwrong"'
        _unbound_serves(deployment, f"server:\n    local-data: '{other}'\n")
        bad = deployment.play("--tags", "verify")
        assert bad.rc != 0 and "DKIM differs" in bad.output, bad.output[-3000:]
    finally:
        _unbound_serves(deployment, None)


def test_the_served_certificate_is_pebbles(deployment, tmp_path):
    root = tmp_path / "pebble-root.pem"
    root.write_text(deployment.pebble_root())
    d, ip = deployment.domain, deployment.ip
    curl = subprocess.run(
        ["curl", "-sS", "--fail", "--cacert", str(root), "--resolve", f"{d}:443:{ip}",
         "-o", "/dev/null", "-w", "%{http_code}", f"https://{d}/"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert curl.returncode == 0 and curl.stdout == "200", curl.stderr
    for port in (465, 993, 443):
        ssl = subprocess.run(
            ["openssl", "s_client", "-connect", f"{ip}:{port}", "-servername", d,
             "-CAfile", str(root), "-verify_return_error", "-verify_hostname", d, "-brief"],
            input="", capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert ssl.returncode == 0, (port, ssl.stderr)
        assert "Verification: OK" in ssl.stderr, (port, ssl.stderr)
    # not pebble's listener CA, not the temporary self-signed one: the issued chain
    assert (
        "/etc/chatmail/tls-self-signed"
        not in deployment.container.run(["readlink", f"/var/lib/acme/live/{d}"]).stdout
    )


def test_firewall_lets_in_the_relay_ports_only(deployment):
    ip = deployment.ip
    answers = _connecting(ip, OPEN_TCP + LOOPBACK_ONLY)
    assert [port for port in OPEN_TCP if not answers[port]] == []
    assert [port for port in LOOPBACK_ONLY if answers[port]] == []
    # a listener on every address that the rules do not name is dropped, not just closed
    probe = deployment.container.run(
        ["systemd-run", "--unit=fw-probe", "--collect", "/usr/bin/python3", "-c",
         "import socket,time; s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, "
         "socket.SO_REUSEADDR, 1); s.bind(('0.0.0.0', 10999)); s.listen(); time.sleep(120)"]
    )  # fmt: skip
    assert probe.returncode == 0
    try:
        # systemd-run returns once the unit started, which may be before the probe listens:
        # inside, connecting is retried for up to 10 s
        connect = (
            "import socket, time\n"
            "for attempt in range(50):\n"
            "    try:\n"
            "        socket.create_connection(('127.0.0.1', 10999), 3); break\n"
            "    except ConnectionRefusedError:\n"
            "        if attempt == 49: raise\n"
            "        time.sleep(0.2)\n"
        )
        inside = deployment.container.run(["/usr/bin/python3", "-c", connect], check=False)
        assert inside.returncode == 0, inside.stderr
        assert not _connects(ip, 10999)
    finally:
        deployment.container.run(["systemctl", "stop", "fw-probe"], check=False)


EXPOSURE = re.compile(r"Overall exposure level for (\S+): (\d+\.\d+)")


def test_systemd_security_of_our_units_monitoring_and_coturn(deployment):
    units = [u for u in _our_units(deployment) if u.endswith(".service")]
    units += [f"{m}.service" for m in MONITORING]
    # and every other installed service that systemd/dropins/ hardens (coturn)
    for dropin in sorted((ROOT / "systemd" / "dropins").iterdir()):
        unit = dropin.name.removesuffix(".d")
        installed = deployment.container.run(["systemctl", "cat", unit], check=False)
        if unit not in units and installed.returncode == 0:
            units.append(unit)
    assert "coturn.service" in units
    scores = {}
    for unit in units:
        out = deployment.container.run(
            ["systemd-analyze", "security", "--no-pager", unit], check=False
        ).stdout
        m = EXPOSURE.search(out)
        assert m, (unit, out[-500:])
        scores[unit] = float(m.group(2))
    print("systemd-analyze security:", scores)
    assert set(units) <= set(scores)
    assert all(score < 2.0 for score in scores.values()), scores


def _rpc_server_binary():
    try:
        import deltachat_rpc_server
    except ImportError:
        require(False, "deltachat-rpc-server (test extras)")
    return str(Path(deltachat_rpc_server.__file__).parent / "deltachat-rpc-server")


def _dcaccount_credentials(deployment, ca_file):
    """What Delta Chat does with the website's QR, verified against pebble's root: the
    relay sends a browser's GET /new to `dcaccount:https://DOMAIN/new`, and a POST there
    makes an account."""
    d, ip = deployment.domain, deployment.ip
    curl = ["curl", "-sS", "--cacert", str(ca_file), "--resolve", f"{d}:443:{ip}"]
    get = subprocess.run(
        [*curl, "-o", "/dev/null", "-w", "%{redirect_url}", f"https://{d}/new"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    location = get.stdout.strip()
    assert location == f"dcaccount:https://{d}/new", (get.stdout, get.stderr)
    post = subprocess.run(
        [*curl, "--fail", "-X", "POST", location.removeprefix("dcaccount:")],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert post.returncode == 0, post.stderr
    creds = json.loads(post.stdout)
    assert creds["email"].endswith(f"@{d}")
    return creds


def test_deltachat_accounts_from_the_qr_exchange_padlocked_mail_over_443(deployment, tmp_path):
    """Two Delta Chat 2.65 accounts from the relay's dcaccount: QR, IMAP and SMTP through
    port 443 (ALPN), secure-join, one encrypted message each way with the padlock.

    Delta Chat checks certificates against its compiled-in public roots only and pebble
    issues no `_` names (the tests' other path), so the client alone accepts the
    certificate; curl checked the same certificate against pebble's root above and the
    account request below goes through curl with that root."""
    from deltachat_rpc_client import DeltaChat, Rpc

    root = tmp_path / "pebble-root.pem"
    root.write_text(deployment.pebble_root())
    hosts = tmp_path / "hosts"
    hosts.write_text(f"127.0.0.1 localhost\n{deployment.ip} {deployment.domain}\n")
    # the RPC server runs on the host, in a mount namespace whose /etc/hosts names the relay
    wrapper = tmp_path / "rpc-server"
    wrapper.write_text(
        "#!/bin/sh\n"
        f"exec unshare --mount sh -c 'mount --bind {hosts} /etc/hosts && exec "
        f"{_rpc_server_binary()}'\n"
    )
    wrapper.chmod(0o755)
    accounts = []
    with (
        open(tmp_path / "rpc.stderr", "wb") as stderr,
        Rpc(
            accounts_dir=str(tmp_path / "accounts"),
            rpc_server_path=str(wrapper),
            stderr=stderr,
            env={**os.environ, "RUST_LOG": "warn", "HOME": str(tmp_path)},
        ) as rpc,
    ):
        deltachat = DeltaChat(rpc)
        for _ in range(2):
            creds = _dcaccount_credentials(deployment, root)
            account = deltachat.add_account()
            # Delta Chat reads the website's QR as an account QR of this relay; the POST it
            # would make is curl's above (its own TLS trusts compiled-in roots only: a CA
            # bundle mounted over the system's or SSL_CERT_FILE still gives UnknownIssuer)
            qr = account.check_qr(f"dcaccount:https://{deployment.domain}/new")
            assert qr["kind"] == "account" and qr["domain"] == deployment.domain, qr
            account.add_or_update_transport(
                {
                    "addr": creds["email"],
                    "password": creds["password"],
                    "imapServer": deployment.domain,
                    "imapPort": 443,
                    "imapSecurity": "ssl",
                    "smtpServer": deployment.domain,
                    "smtpPort": 443,
                    "smtpSecurity": "ssl",
                    "certificateChecks": "acceptInvalidCertificates",
                }
            )
            account.bring_online()
            accounts.append(account)
        alice, bob = accounts
        alice_addr, bob_addr = (a.get_config("configured_addr") for a in accounts)
        bob.secure_join(alice.get_qr_code())
        alice.wait_for_securejoin_inviter_success()
        bob.wait_for_securejoin_joiner_success()
        alice.get_chat_by_contact(alice.get_contact_by_addr(bob_addr)).send_text("hello bob")
        msg = bob.wait_for_incoming_msg().get_snapshot()
        assert msg.text == "hello bob" and msg.show_padlock
        bob.get_chat_by_contact(bob.get_contact_by_addr(alice_addr)).send_text("hello alice")
        msg = alice.wait_for_incoming_msg().get_snapshot()
        assert msg.text == "hello alice" and msg.show_padlock


def _mailbox(d, addr):
    return f"/home/vmail/mail/{d.domain}/{addr}"


def _sha(d, path):
    return hashlib.sha256(d.container.run(["cat", path]).stdout.encode()).hexdigest()


@pytest.fixture
def account(deployment):
    """An account made by logging in over IMAP (doveauth creates it), from inside."""
    addr = f"dtest{deployment.index:04d}@{deployment.domain}"  # 9 characters
    password = "correct-horse-battery-staple-1"
    login = (
        "import imaplib, ssl, sys\n"
        "c = imaplib.IMAP4_SSL('127.0.0.1', 993, ssl_context=ssl._create_unverified_context())\n"
        "c.login(sys.argv[1], sys.argv[2]); c.logout()\n"
    )
    deployment.container.run(["/usr/bin/python3", "-c", login, addr, password])
    return addr, password


@pytest.fixture
def outside(deployment):
    """A local relay for outside.test in a namespace of its own, linked to the container
    (outside.py); down and removed afterwards (kept with CHATMAILD_DEPLOY_KEEP)."""
    from e2e.conftest import relay_prerequisites

    relay_prerequisites()
    require_tool("unbound", "unbound-checkconf")
    # not under the deployment's workdir (0700): vmail must reach the mailboxes
    state = Path(tempfile.mkdtemp(prefix="chatmaild-outside-", dir="/tmp"))
    relay = OutsideRelay(deployment, state, log=lambda msg: print(f"[outside] {msg}"))
    t0 = time.monotonic()
    relay.up()
    print(f"[outside] up in {time.monotonic() - t0:.1f}s")
    try:
        yield relay
    finally:
        relay.down()
        if not os.environ.get("CHATMAILD_DEPLOY_KEEP"):
            shutil.rmtree(state, ignore_errors=True)


def _messages_with(deployment, addr, marker):
    from e2e.helpers import maildir_messages

    mailbox = deployment.container.root / _mailbox(deployment, addr).lstrip("/")
    needle = f"X-Test-Marker: {marker}".encode()
    return [m for m in maildir_messages(mailbox) if needle in m]


MESSAGES = "chatmail_filtermail_messages_total{mode=incoming,outcome=%s}"
HTTP_200 = "chatmail_filtermail_http_requests_total{mode=incoming,status=200}"


def test_mail_from_a_relay_outside_arrives_dkim_verified(deployment, account, outside):
    """The outside relay's Postfix signs with OpenDKIM and its transport service delivers
    over HTTPS /mxdeliv (certificate verified against pebble's root), SMTP after. While the
    container's resolver knows outside.test without its DKIM key, the container refuses the
    mail (550 5.7.1) and the outside relay bounces it; with the key published, the next
    message arrives once, and its signature by d=outside.test verifies with that key."""
    import dkim
    from e2e.helpers import RelayClients, encrypted_message, wait_until, wire_form

    rcpt, _ = account
    c = deployment.container
    clients = RelayClients(outside.relay)
    sender, password = clients.new_account()

    def send():
        marker, message = encrypted_message(sender, [rcpt])
        assert clients.submit(465, sender, password, sender, [rcpt], message) == {}
        return marker

    try:
        # outside.test resolves in the container, but publishes no DKIM key
        outside.publish(with_dkim=False)
        before = filtermail_incoming_counts(c)
        refused = send()
        (line,) = wait_until(lambda: outside.transport_lines(sender), "the transport's attempt")
        assert re.search(r": 550 5\.7\.1 ", line), line
        statuses = wait_until(
            lambda: outside.postfix_statuses(f"{refused}@relay.test"), "Postfix' verdict"
        )
        assert statuses == ["bounced"], statuses
        failed = filtermail_incoming_counts(c)
        assert failed[MESSAGES % "dkim_failed"] > before[MESSAGES % "dkim_failed"]
        assert failed[MESSAGES % "encrypted"] == before[MESSAGES % "encrypted"]
        journal = c.run(["journalctl", "-u", "filtermail-incoming", "-o", "cat", "--no-pager"])
        assert f"DKIM failed for mail from <{sender}>" in journal.stdout
        assert not _messages_with(deployment, rcpt, refused)

        # the outside relay's key published: the same kind of mail is taken
        outside.publish(with_dkim=True)
        accepted = send()
        (stored,) = wait_until(
            lambda: _messages_with(deployment, rcpt, accepted), "delivery into the container"
        )
        lines = wait_until(
            lambda: outside.transport_lines(sender)[1:], "the transport's second delivery"
        )
        assert " via=https " in lines[0] and ": 250 " in lines[0], lines
        wait_until(outside.queue_is_empty, "the outside relay's queue to empty")
        passed = filtermail_incoming_counts(c)
        assert passed[MESSAGES % "encrypted"] == failed[MESSAGES % "encrypted"] + 1
        assert passed[MESSAGES % "dkim_failed"] == failed[MESSAGES % "dkim_failed"]
        assert passed[HTTP_200] == failed[HTTP_200] + 1
    finally:
        outside.unpublish()
    assert len(_messages_with(deployment, rcpt, accepted)) == 1
    assert not _messages_with(deployment, rcpt, refused)
    # signed by the outside relay's OpenDKIM, verifiable with the record it publishes
    message = wire_form(stored)
    signature = dkim.DKIM(message)
    record = outside.relay.dkim_record.encode()
    name = f"opendkim._domainkey.{outside.domain}".encode()
    assert signature.verify(dnsfunc=lambda q, timeout=5: record if q.rstrip(b".") == name else None)
    assert signature.domain == outside.domain.encode()


def test_restart_brings_everything_back_and_delivers_queued_mail(deployment, account):
    addr, _ = account
    c = deployment.container
    c.run(["test", "-f", f"{_mailbox(deployment, addr)}/password"])
    c.run(["systemctl", "stop", "dovecot"])
    marker = f"queued-before-restart-{deployment.index}"
    c.run(
        ["/usr/sbin/sendmail", "-f", f"root@{deployment.domain}", addr],
        input=f"Subject: {marker}\n\n{marker}\n",
    )
    queue = c.run(["postqueue", "-p"]).stdout
    assert "Mail queue is empty" not in queue
    c.restart()
    units = (*SYSTEM, *OUR_ALWAYS_ON, *MONITORING)
    back = c.sh(
        f"for i in $(seq 120); do bad=0; for u in {' '.join(units)}; do"
        " systemctl is-active --quiet $u || bad=1; done; [ $bad = 0 ] && exit 0; sleep 0.5;"
        f" done; systemctl is-active {' '.join(units)}; exit 1",
        check=False,
        timeout=90,
    )
    assert back.returncode == 0, back.stdout
    c.run(["postqueue", "-f"])
    found = c.sh(
        f"for i in $(seq 60); do grep -rl {marker} {_mailbox(deployment, addr)}/ && exit 0;"
        " sleep 1; postqueue -f; done; exit 1",
        check=False,
        timeout=90,
    )
    assert found.returncode == 0, c.run(["postqueue", "-p"]).stdout
    # the delivery reached chatmail-logmetrics through rsyslog's feed (rendered config)
    fed = c.sh(
        "for i in $(seq 30); do curl -s http://127.0.0.1:3903/metrics"
        " | grep -E '^chatmail_deliveries_total(\\{[^}]*\\})? [1-9]' && exit 0; sleep 1; done;"
        " exit 1",
        check=False,
        timeout=60,
    )
    assert fed.returncode == 0, c.run(["curl", "-s", "http://127.0.0.1:3903/metrics"]).stdout
    ok = deployment.play("--tags", "verify")
    assert ok.rc == 0, ok.output[-3000:]


FAKE_MTAIL = """[Unit]
Description=stand-in for upstream's mtail (cmdeploy)

[Service]
ExecStart=/bin/sleep infinity

[Install]
WantedBy=multi-user.target
"""


def _as_upstream_cmdeploy_left_it(c):
    """The host as upstream's cmdeploy leaves it: a venv directory (not our symlink) with the
    units of the same names pointing into it, mtail running, upstream's cron job."""
    target = c.run(["readlink", "-f", "/usr/local/lib/chatmaild/venv"]).stdout.strip()
    c.sh(
        "rm /usr/local/lib/chatmaild/venv"
        f" && cp -a {target} /usr/local/lib/chatmaild/venv"
        " && echo '0 3 * * * root true' > /etc/cron.d/expunge"
    )
    c.run(["tee", "/etc/systemd/system/mtail.service"], input=FAKE_MTAIL)
    c.run(["systemctl", "daemon-reload"])
    c.run(["systemctl", "enable", "--now", "mtail.service"])


def test_upgrade_and_migration_keep_mailboxes_passwords_and_the_dkim_key(
    deployment, account, tmp_path
):
    """One run that is both an upgrade (a newer package version) and a migration (from the
    layout upstream's cmdeploy leaves): the venv is replaced, upstream's leftovers are
    stopped, and only our daemons restart; mailboxes, passwords, the DKIM key and the
    certificate stay."""
    addr, password = account
    c = deployment.container
    before = {
        p: _sha(deployment, p)
        for p in (f"{_mailbox(deployment, addr)}/password", "/etc/dkimkeys/opendkim.private")
    }
    mailboxes = c.run(["ls", f"/home/vmail/mail/{deployment.domain}"]).stdout
    cert = c.run(["readlink", f"/var/lib/acme/live/{deployment.domain}"]).stdout
    postfix_pid = c.run(["systemctl", "show", "-P", "MainPID", "postfix@-"]).stdout
    dovecot_pid = c.run(["systemctl", "show", "-P", "MainPID", "dovecot"]).stdout
    doveauth_pid = c.run(["systemctl", "show", "-P", "MainPID", "doveauth"]).stdout
    _as_upstream_cmdeploy_left_it(c)
    newer = deployment.newer_checkout(tmp_path / "checkout", "0.1.1")
    try:
        up = deployment.play(checkout=newer)
        assert up.rc == 0, up.output[-4000:]
        # the upgrade: this version's venv behind the symlink
        venv = c.run(["readlink", "/usr/local/lib/chatmaild/venv"]).stdout
        assert "/venvs/0.1.1-" in venv
        version = c.run(
            ["/usr/local/lib/chatmaild/venv/bin/python", "-c",
             "import importlib.metadata as m; print(m.version('chatmaild'))"]
        ).stdout.strip()  # fmt: skip
        assert version == "0.1.1"
        # the migration: upstream's venv set aside, its mtail and cron job gone
        c.run(["test", "-d", "/usr/local/lib/chatmaild/venv.cmdeploy"])
        assert c.run(["systemctl", "is-active", "mtail"], check=False).stdout.strip() != "active"
        assert c.run(["systemctl", "is-enabled", "mtail"], check=False).stdout.strip() != "enabled"
        assert c.run(["test", "-e", "/etc/cron.d/expunge"], check=False).returncode != 0
        # kept
        assert before == {p: _sha(deployment, p) for p in before}
        assert mailboxes == c.run(["ls", f"/home/vmail/mail/{deployment.domain}"]).stdout
        assert cert == c.run(["readlink", f"/var/lib/acme/live/{deployment.domain}"]).stdout
        # only our daemons restarted
        assert postfix_pid == c.run(["systemctl", "show", "-P", "MainPID", "postfix@-"]).stdout
        assert dovecot_pid == c.run(["systemctl", "show", "-P", "MainPID", "dovecot"]).stdout
        assert doveauth_pid != c.run(["systemctl", "show", "-P", "MainPID", "doveauth"]).stdout
        # the old password still logs in (the passdb is the mailbox's password file)
        login = (
            "import imaplib, ssl, sys\n"
            "c = imaplib.IMAP4_SSL('127.0.0.1', 993, "
            "ssl_context=ssl._create_unverified_context())\n"
            "c.login(sys.argv[1], sys.argv[2]); c.logout()\n"
        )
        c.run(["/usr/bin/python3", "-c", login, addr, password])
        assert deployment.play("--tags", "verify", checkout=newer).rc == 0
    finally:
        c.sh("rm -f /etc/systemd/system/mtail.service; systemctl daemon-reload", check=False)
