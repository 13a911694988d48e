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
