"""Each daemon process with its metrics endpoint on: real traffic, then scrape, and check that
the counters moved by exactly the amounts the traffic implies."""

import asyncio
import subprocess

from filtermail_samples import (
    RECIPIENT,
    SENDER,
    armor,
    encrypt,
    encrypted_mail,
    plain_mail,
    securejoin_mail,
)
from filtermail_server_helpers import Client, closed_port

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


class PushServer:
    """A local notification server: the token decides the status (good 200, gone 410, else 500)."""

    def __init__(self):
        self.posts = []
        self.arrived = asyncio.Event()

    async def handle(self, request):
        from aiohttp import web

        token = (await request.read()).decode()
        self.posts.append(token)
        self.arrived.set()
        status = 200 if token.startswith("good") else 410 if token.startswith("gone") else 500
        return web.Response(status=status)

    async def __aenter__(self):
        from aiohttp import web

        app = web.Application()
        app.router.add_post("/notify", self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/notify"
        return self

    async def __aexit__(self, *exc):
        await self.runner.cleanup()

    async def wait_for(self, n, timeout=20):
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while len(self.posts) < n:
            assert loop.time() < deadline, self.posts
            self.arrived.clear()
            try:
                await asyncio.wait_for(self.arrived.wait(), 0.5)
            except TimeoutError:
                pass


def labelled(got, name):
    return {labels[0][1]: v for (n, labels), v in got.items() if n == name}


async def test_metadata_counters(tmp_path):
    from metadata_helpers import MESSAGENEW_KEY, SERVER, TOKEN_KEY, DictClient, meta_ini

    metrics_sock = tmp_path / "metadata.metrics"
    async with PushServer() as push:
        ini = meta_ini(tmp_path, notification_url=push.url, metrics_metadata=f"unix:{metrics_sock}")
        socket_path = tmp_path / "metadata.socket"
        proc = subprocess.Popen(
            daemon_argv("chatmaild.metadata", socket_path, ini),
            env=daemon_env(),
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            await wait_for_path(metrics_sock, proc)
            await wait_for_path(socket_path, proc)
            client = await DictClient.connect(socket_path)
            for token in ("good-token-1", "gone-token-2", "bad-token-3"):
                assert await client.commit([(TOKEN_KEY, token)]) == "O"
            assert (await client.lookup(TOKEN_KEY)).startswith("O")
            assert (await client.lookup(SERVER + "irohrelay")).startswith("O")
            assert (await client.lookup(SERVER + "maxsmtprecipients")).startswith("O")
            assert (await client.lookup(SERVER + "maxsmtprecipients")).startswith("O")
            assert (await client.lookup(SERVER + "appversions")).startswith("O")
            assert await client.lookup("priv/0123/somethingelse") == "N"
            assert await client.commit([(MESSAGENEW_KEY, "")]) == "O"
            await client.close()
            await push.wait_for(3)
            for _ in range(100):  # the replies reach the daemon just after the POSTs land
                got = await scrape(f"unix:{metrics_sock}")
                results = labelled(got, "chatmail_metadata_notifications_total")
                if results["sent"] + results["gone"] + results["failed"] == 3:
                    break
                await asyncio.sleep(0.05)
            assert sorted(push.posts) == ["bad-token-3", "gone-token-2", "good-token-1"]
            assert results == {"sent": 1, "gone": 1, "failed": 1, "retried": 0, "dropped": 0}
            # the failed one waits 8 s for its retry
            assert got[("chatmail_metadata_notification_queue_depth", ())] == 1
            assert got[("chatmail_metadata_tokens_stored_total", ())] == 3
            assert labelled(got, "chatmail_metadata_lookups_total") == {
                "devicetoken": 1,
                "irohrelay": 1,
                "turn": 0,
                "maxsmtprecipients": 2,
                "appversions": 1,
                "other": 1,
            }
        finally:
            stop(proc)


async def test_metadata_retries_and_drops_counted(tmp_path):
    """Notifier under a fake clock and a short schedule, against a server that always fails."""
    from metadata_helpers import ALICE, MESSAGENEW_KEY, TOKEN_KEY, FakeClock, build, meta_ini

    from chatmaild.dictproxy.server import Transaction
    from chatmaild.metadata.backoff import RetrySchedule

    async with PushServer() as push:
        clock = FakeClock()
        service, _, _, notifier = build(
            meta_ini(tmp_path, notification_url=push.url),
            clock=clock,
            schedule=RetrySchedule(first_delay=10, factor=2, give_up_after=30),
        )
        service.metrics.observe_notifier(notifier)
        service.start()
        try:
            assert service.commit(Transaction(ALICE, [("S", TOKEN_KEY, "bad-token")]))
            assert service.commit(Transaction(ALICE, [("S", MESSAGENEW_KEY, "")]))
            for n in range(1, 10):
                await push.wait_for(n)
                for _ in range(200):
                    if notifier.depth == 0 or not notifier._inflight:
                        break
                    await asyncio.sleep(0.01)
                if notifier.depth == 0:
                    break
                clock.advance(10)
                notifier.poke()
            assert notifier.depth == 0
            got = await asyncio.to_thread(lambda: list(service.metrics.registry.collect()))
            results = {
                s.labels["result"]: s.value
                for family in got
                if family.name == "chatmail_metadata_notifications"
                for s in family.samples
            }
            posts = len(push.posts)
            assert posts >= 2
            assert results == {
                "sent": 0,
                "gone": 0,
                "failed": posts,
                "retried": posts - 1,
                "dropped": 1,
            }
        finally:
            await service.close()
