"""Each daemon process with its metrics endpoint on: real traffic, then scrape, and check that
the counters moved by exactly the amounts the traffic implies."""

import asyncio
import subprocess

import pytest
from filtermail_samples import (
    RECIPIENT,
    SENDER,
    armor,
    encrypt,
    encrypted_mail,
    plain_mail,
    securejoin_mail,
)
from filtermail_server_helpers import Client, RecordingSink, closed_port

from chatmaild.metrics.scrape import samples

from conftest import daemon_argv, daemon_env, write_ini


async def wait_for_path(path, proc, timeout=20):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"daemon exited: {proc.stderr.read()}")
        if loop.time() > deadline:
            raise AssertionError(f"{path} did not appear")
        await asyncio.sleep(0.05)


async def scrape(spec):
    return await asyncio.to_thread(samples, spec)


def stop(proc):
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture
async def sink():
    sink = await RecordingSink().start()
    yield sink
    await sink.stop()


async def test_filtermail_outgoing_counters(tmp_path, sink):
    metrics_sock = tmp_path / "filtermail.metrics"
    port = closed_port()
    ini = write_ini(
        tmp_path / "chatmail.ini",
        mailboxes_dir=tmp_path / "mailboxes",
        filtermail_smtp_port=port,
        postfix_reinject_port=sink.port,
        passthrough_recipients="echo@pass.example",
        metrics_filtermail_outgoing=f"unix:{metrics_sock}",
    )
    proc = subprocess.Popen(
        daemon_argv("chatmaild.filtermail", ini, "outgoing"),
        env=daemon_env(),
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        await wait_for_path(metrics_sock, proc)
        armored = armor(encrypt(("x25519",)))
        encrypted = encrypted_mail(armored)
        messages = [
            (SENDER, [RECIPIENT], encrypted, 250),
            (SENDER, [RECIPIENT], encrypted, 250),
            (SENDER, [RECIPIENT], securejoin_mail(), 250),
            (SENDER, ["echo@pass.example"], plain_mail(to="echo@pass.example"), 250),
            (SENDER, [RECIPIENT], plain_mail(), 523),
            (SENDER, [RECIPIENT], plain_mail(sender="mallory@chat.example"), 500),
            (SENDER, ["tempdata@other.example"], encrypted_mail(armored), 451),
        ]
        client = await Client.connect(port)
        got = await scrape(f"unix:{metrics_sock}")
        assert got[("chatmail_filtermail_open_sessions", (("mode", "outgoing"),))] == 1
        decided_bytes = 0
        for mail_from, rcpts, data, expected in messages:
            code, text = await client.send_mail(mail_from, rcpts, data)
            assert code == expected, text
            decided_bytes += len(data)
            await client.cmd(b"RSET")
        # the rate limit (60/min, burst 10) from one flooding sender
        limited = 0
        for _ in range(20):
            code, _ = await client.cmd(b"MAIL FROM:<flood@chat.example>")
            limited += code == 450
            await client.cmd(b"RSET")
        assert limited >= 1
        await client.close()

        got = await scrape(f"unix:{metrics_sock}")

        def value(name, **labels):
            return got[(name, tuple(sorted({"mode": "outgoing", **labels}.items())))]

        outcomes = {
            "encrypted": 3,  # two plus the one whose reinjection failed
            "securejoin": 1,
            "exception": 1,
            "rejected": 1,
            "invalid": 1,
            "ratelimited": limited,
            "reinject_failed": 1,
            "cleartext": 0,
        }
        for outcome, n in outcomes.items():
            assert value("chatmail_filtermail_messages_total", outcome=outcome) == n, outcome
        assert value("chatmail_filtermail_received_bytes_total") == decided_bytes
        assert value("chatmail_filtermail_decision_seconds_count") == len(messages)
        assert value("chatmail_filtermail_reinject_seconds_count") == 5  # accepted ones
        assert len(sink.messages) == 4
        for _ in range(100):
            got = await scrape(f"unix:{metrics_sock}")
            if value("chatmail_filtermail_open_sessions") == 0:
                break
            await asyncio.sleep(0.05)
        assert value("chatmail_filtermail_open_sessions") == 0
    finally:
        stop(proc)


async def start_dict_daemon(module, tmp_path, ini, metrics_sock):
    socket_path = tmp_path / f"{module}.socket"
    proc = subprocess.Popen(
        daemon_argv(f"chatmaild.{module}", socket_path, ini),
        env=daemon_env(),
        stderr=subprocess.PIPE,
        text=True,
    )
    await wait_for_path(metrics_sock, proc)
    await wait_for_path(socket_path, proc)
    return proc, socket_path


async def ask(socket_path, body: bytes, nlines: int) -> list[bytes]:
    reader, writer = await asyncio.open_unix_connection(str(socket_path))
    try:
        writer.write(b"H3\t2\t0\t\tauth\n" + body)
        return [await asyncio.wait_for(reader.readline(), 30) for _ in range(nlines)]
    finally:
        writer.close()


async def test_doveauth_counters(tmp_path, ini_path):
    from test_doveauth_service import passdb_line, userdb_line

    metrics_sock = tmp_path / "doveauth.metrics"
    with open(ini_path, "a") as f:
        f.write(f"metrics_doveauth = unix:{metrics_sock}\n")
    proc, sock = await start_dict_daemon("doveauth", tmp_path, ini_path, metrics_sock)
    try:
        new = "abcdefghi@chat.example"
        replies = await ask(sock, passdb_line(new, "s3cretpass1"), 1)  # creates
        assert replies[0].startswith(b"O")
        replies = await ask(
            sock,
            passdb_line(new, "s3cretpass1")  # found
            + userdb_line(new)  # found
            + userdb_line("zzzzzzzzz@chat.example")  # notfound
            + passdb_line("bbbbbbbbb@chat.example", "short")  # refused: password
            + passdb_line("ab@chat.example", "s3cretpass1")  # refused: local part length
            + passdb_line("ddddddddd@other.example", "s3cretpass1"),  # not our domain
            6,
        )
        assert [r[:1] for r in replies] == [b"O", b"O", b"N", b"N", b"N", b"N"]
        (tmp_path / "nocreate").touch()
        replies = await ask(sock, passdb_line("ccccccccc@chat.example", "s3cretpass1"), 1)
        assert replies == [b"N\n"]

        got = await scrape(f"unix:{metrics_sock}")

        def lookups(kind, result):
            labels = (("kind", kind), ("result", result))
            return got[("chatmail_doveauth_lookups_total", labels)]

        assert lookups("passdb", "created") == 1
        assert lookups("passdb", "found") == 1
        assert lookups("passdb", "notfound") == 4
        assert lookups("userdb", "found") == 1
        assert lookups("userdb", "notfound") == 1
        assert got[("chatmail_doveauth_accounts_created_total", ())] == 1
        assert got[("chatmail_doveauth_hash_seconds_count", ())] == 1
        rejected = {
            labels[0][1]: v
            for (name, labels), v in got.items()
            if name == "chatmail_doveauth_registrations_rejected_total" and v
        }
        assert rejected == {"password": 1, "username": 1, "nocreate": 1}
    finally:
        stop(proc)


async def test_lastlogin_counters(tmp_path, ini_path):
    from chatmaild.mailbox import Mailboxes

    metrics_sock = tmp_path / "lastlogin.metrics"
    with open(ini_path, "a") as f:
        f.write(f"metrics_lastlogin = unix:{metrics_sock}\n")
    addr = "someone12@chat.example"
    Mailboxes(tmp_path / "mailboxes", "chat.example").user(addr).create("{SHA512-CRYPT}$6$x$y")
    proc, sock = await start_dict_daemon("lastlogin", tmp_path, ini_path, metrics_sock)

    def login(addr, ts, txid):
        return f"B{txid}\t{addr}\nS{txid}\tshared/last-login/{addr}\t{ts}\nC{txid}\n".encode()

    day = 20000 * 86400
    try:
        body = (
            login(addr, day + 10, 1)  # updated
            + login(addr, day + 500, 2)  # same day: unchanged
            + login(addr, day + 86400, 3)  # next day: updated
            + login("../evil@chat.example", day, 4)  # failed
            + login(addr, "notatime", 5)  # failed
        )
        assert await ask(sock, body, 5) == [b"O\n"] * 5
        got = await scrape(f"unix:{metrics_sock}")
        sets = {
            labels[0][1]: v
            for (name, labels), v in got.items()
            if name == "chatmail_lastlogin_sets_total"
        }
        assert sets == {"updated": 2, "unchanged": 1, "failed": 2}
    finally:
        stop(proc)
