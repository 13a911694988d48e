"""doveauth over its unix socket: lookups, creation, races, hostile addresses."""

import asyncio
import json
import logging
import socket
import subprocess
import threading
import time

import pytest
from dictproxy_helpers import dict_served

from chatmaild.config import read_config
from chatmaild.dictproxy import proto
from chatmaild.doveauth import hashing, sysres
from chatmaild.doveauth.rules import Resources
from chatmaild.doveauth.service import DoveauthService, worker_count

from conftest import daemon_argv, daemon_env, write_ini

DOMAIN = "chat.example"
CALM = Resources(0.1, 10 * 1024**3, 100 * 1024**3)


def esc(text):
    """Dovecot's %E: backslash before `"`, `'` and `\\`."""
    return "".join("\\" + c if c in "\"'\\" else c for c in text)


def passdb_line(addr, password):
    key = "shared/passdb/" + esc(password) + '"' + esc(addr)
    return ("L" + proto.escape(key) + "\t" + proto.escape(addr) + "\n").encode(
        "utf-8", "surrogateescape"
    )


def userdb_line(addr):
    return f"Lshared/userdb/{proto.escape(addr)}\t{proto.escape(addr)}\n".encode()


@pytest.fixture
def config(tmp_path):
    return read_config(
        write_ini(
            tmp_path / "chatmail.ini",
            mailboxes_dir=tmp_path / "mailboxes",
            nocreate_file=tmp_path / "nocreate",
            max_load_1m=5,
            min_available_memory="1M",
            min_free_disk_space="1M",
        )
    )


class Harness:
    def __init__(self, config, path):
        self.config = config
        self.path = path
        self.resources = CALM
        self.service = DoveauthService(config, read_resources=lambda _dir: self.resources)

    async def ask(self, data, nlines=1):
        reader, writer = await asyncio.open_unix_connection(str(self.path))
        try:
            writer.write(b"H3\t2\t0\t\tauth\n" + data)
            return [
                proto.unescape((await asyncio.wait_for(reader.readline(), 10)).decode()[:-1])
                for _ in range(nlines)
            ]
        finally:
            writer.close()

    async def passdb(self, addr, password):
        (reply,) = await self.ask(passdb_line(addr, password))
        return reply

    def stored(self, addr):
        path = self.config.mailboxes_dir / addr / "password"
        return path.read_text() if path.exists() else None


@pytest.fixture
async def auth(config, tmp_path):
    harness = Harness(config, tmp_path / "doveauth.socket")
    async with dict_served(harness.path, harness.service):
        yield harness
    harness.service.close()


@pytest.fixture
def stick_hashing(monkeypatch):
    """`stick_hashing()`: from then on creations hang in hashing until the returned event is
    set (at the latest at teardown)."""
    gate = threading.Event()
    real_hash = hashing.hash_password

    def stuck_hash(password):
        gate.wait(10)
        return real_hash(password)

    def stick():
        monkeypatch.setattr(hashing, "hash_password", stuck_hash)
        return gate

    yield stick
    gate.set()


def record(reply):
    assert reply[:1] == "O", reply
    return json.loads(reply[1:])


async def test_first_login_creates_then_lookups_return_record(auth, config, caplog):
    caplog.set_level(logging.INFO)
    addr = "abcdefghi@" + DOMAIN
    assert await auth.passdb(addr, "s3cretpass") is not None
    rec = record(await auth.passdb(addr, "s3cretpass"))
    assert set(rec) == {"addr", "home", "uid", "gid", "password"}
    assert rec["addr"] == addr
    assert rec["home"] == str(config.mailboxes_dir / addr)
    assert rec["uid"] == rec["gid"] == "vmail"
    assert hashing.verify_password("s3cretpass", rec["password"])
    assert (config.mailboxes_dir / addr / "enforceE2EEincoming").exists()
    assert caplog.text.count(f"Created address: {addr}") == 1
    assert "s3cretpass" not in caplog.text
    # a second login with another password: same stored record, Dovecot refuses it
    assert record(await auth.passdb(addr, "otherpassword")) == rec
    assert record((await auth.ask(userdb_line(addr)))[0]) == rec


async def test_userdb_lookup_of_unknown_user_does_not_create(auth, config):
    addr = "abcdefghi@" + DOMAIN
    assert await auth.ask(userdb_line(addr)) == ["N"]
    assert not (config.mailboxes_dir / addr).exists()


@pytest.mark.parametrize(
    "password",
    ['with"quote', "with'apos", "back\\slash", "with/slash/", "with\ttab", "pässwörd✓", "\\\"'"],
)
async def test_special_passwords(auth, password):
    addr = "user12345@" + DOMAIN
    password = password + "-padding"
    rec = record(await auth.passdb(addr, password))
    assert hashing.verify_password(password, rec["password"])
    assert hashing.verify_password(password, auth.stored(addr))


async def test_refusals(auth, config, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    cases = [
        ("short123@" + DOMAIN, "longenough"),  # 8 chars
        ("abcdefghij@" + DOMAIN, "longenough"),  # 10 chars
        ("abcd+fghi@" + DOMAIN, "longenough"),
        ("abcdefghi@" + DOMAIN, "short"),
        ("abcdefghi@other.example", "longenough"),
    ]
    for addr, password in cases:
        assert await auth.passdb(addr, password) == "N", addr
    assert not config.mailboxes_dir.exists() or not any(config.mailboxes_dir.iterdir())

    config.nocreate_file.touch()
    assert await auth.passdb("abcdefghi@" + DOMAIN, "longenough") == "N"
    config.nocreate_file.unlink()

    for busy in (
        Resources(99.0, CALM.available_memory, CALM.free_disk),
        Resources(CALM.load_1m, 1024, CALM.free_disk),
        Resources(CALM.load_1m, CALM.available_memory, 1024),
    ):
        auth.resources = busy
        assert await auth.passdb("abcdefghi@" + DOMAIN, "longenough") == "N"
    assert caplog.text.count("registration rejected: ") == 3
    assert "Created address" not in caplog.text

    auth.resources = CALM
    assert record(await auth.passdb("abcdefghi@" + DOMAIN, "longenough"))


HOSTILE = [
    "../escape1@" + DOMAIN,
    "../../etc/x@" + DOMAIN,
    "..@" + DOMAIN,
    ".@" + DOMAIN,
    "a/../../b@" + DOMAIN,
    "abcdefghi@" + DOMAIN + "/../..",
    "abcdefghi@../../" + DOMAIN,
    "abc\x00defgh@" + DOMAIN,
    "two@at@" + DOMAIN,
    "/abs/path@" + DOMAIN,
    "",
]


async def test_hostile_addresses_touch_nothing(auth, config, tmp_path):
    before = sorted(p for p in tmp_path.rglob("*"))
    for addr in HOSTILE:
        assert await auth.passdb(addr, "longenoughpassword") == "N", addr
        assert await auth.ask(userdb_line(addr)) == ["N"]
    after = sorted(p for p in tmp_path.rglob("*"))
    assert after == before
    assert not (tmp_path.parent / "escape1@chat.example").exists()


async def test_twenty_concurrent_first_logins_store_one_password(auth):
    addr = "racer1234@" + DOMAIN
    passwords = [f"password-{i:02d}" for i in range(20)]
    replies = await asyncio.gather(*(auth.passdb(addr, pw) for pw in passwords))
    records = [record(r) for r in replies]
    assert all(r == records[0] for r in records)
    stored = auth.stored(addr)
    assert records[0]["password"] == stored
    assert sum(hashing.verify_password(pw, stored) for pw in passwords) == 1


async def test_userdb_iteration(auth, config):
    addrs = [f"iterate{i:02d}@{DOMAIN}" for i in range(3)]
    for addr in addrs:
        record(await auth.passdb(addr, "longenough"))
    (config.mailboxes_dir / "pending_notifications").mkdir()
    replies = await auth.ask(b"I0\t0\tshared/userdb/\t\n", 4)
    assert sorted(replies[:3]) == [f"Oshared/userdb/{a}\t" for a in addrs]
    assert replies[3] == ""
    # any other prefix: just the terminator
    assert await auth.ask(b"I0\t0\tshared/passdb/\t\nLshared/nothing\t\n", 2) == ["", "N"]


async def test_unknown_keys_and_writes(auth):
    replies = await auth.ask(
        b"Lshared/other/x\t\nLshared/passdb/no-separator\t\nB1\t\nS1\tshared/x\ty\nC1\n", 3
    )
    assert replies[0] == "N"
    assert replies[1] == "N"
    assert replies[2].startswith("F")


def _run_daemon(socket_path, ini):
    return subprocess.Popen(
        daemon_argv("chatmaild.doveauth", socket_path, ini),
        env=daemon_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_socket(path, proc):
    """Until the daemon accepts connections (the file exists between bind and listen)."""
    deadline = time.monotonic() + 10
    while True:
        assert proc.poll() is None, proc.stderr.read()
        assert time.monotonic() < deadline, "socket did not accept connections"
        with socket.socket(socket.AF_UNIX) as probe:
            try:
                probe.connect(str(path))
                return
            except OSError:
                time.sleep(0.02)


async def test_two_daemons_race_for_one_address(tmp_path):
    """Exactly-once across processes: two doveauth daemons share one mailboxes_dir."""
    ini = write_ini(
        tmp_path / "chatmail.ini",
        mailboxes_dir=tmp_path / "mailboxes",
        nocreate_file=tmp_path / "nocreate",
        max_load_1m=1000,
        min_available_memory="1K",
        min_free_disk_space="1K",
    )
    sockets = [tmp_path / "a.socket", tmp_path / "b.socket"]
    procs = [_run_daemon(s, ini) for s in sockets]
    try:
        for s, p in zip(sockets, procs, strict=True):
            _wait_socket(s, p)
        config = read_config(ini)
        harnesses = [Harness(config, s) for s in sockets]
        addr = "crossproc@" + DOMAIN
        passwords = [f"password-{i:02d}" for i in range(20)]
        replies = await asyncio.gather(
            *(harnesses[i % 2].passdb(addr, pw) for i, pw in enumerate(passwords))
        )
        stored = harnesses[0].stored(addr)
        assert {record(r)["password"] for r in replies} == {stored}
        assert sum(hashing.verify_password(pw, stored) for pw in passwords) == 1
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            assert p.wait(10) == 0
    stderr = "".join(p.stderr.read() for p in procs)
    assert stderr.count("Created address: crossproc@") == 1
    assert not any(s.exists() for s in sockets)  # removed on SIGTERM


def test_bad_config_exits_with_one_line(tmp_path):
    ini = write_ini(tmp_path / "chatmail.ini", max_message_size="big")
    proc = subprocess.run(
        daemon_argv("chatmaild.doveauth", tmp_path / "s", ini),
        env=daemon_env(),
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert proc.returncode == 2
    assert "max_message_size" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


async def test_hashing_does_not_block_lookups(auth, stick_hashing):
    """While creations are stuck in hashing, lookups of existing users are still answered."""
    existing = "existing1@" + DOMAIN
    record(await auth.passdb(existing, "longenough"))
    gate = stick_hashing()
    creations = [
        asyncio.ensure_future(auth.passdb(f"blocked{i:02d}@{DOMAIN}", "longenough"))
        for i in range(4)
    ]
    try:
        for _ in range(3):
            assert record((await auth.ask(userdb_line(existing)))[0])["addr"] == existing
        assert not any(c.done() for c in creations)
    finally:
        gate.set()
    assert all(record(r) for r in await asyncio.gather(*creations))


async def test_pipelined_userdb_lookup_sees_the_creation_before_it(auth, config):
    """passdb (creating) and userdb of one address in one write: the userdb reply is found."""
    addr = "pipelined@" + DOMAIN
    created, looked_up = await auth.ask(passdb_line(addr, "longenough") + userdb_line(addr), 2)
    rec = record(looked_up)
    assert rec == record(created)
    assert rec["addr"] == addr and rec["home"] == str(config.mailboxes_dir / addr)
    assert rec["uid"] == rec["gid"] == "vmail"
    assert hashing.verify_password("longenough", rec["password"])
    lookups = auth.service.metrics.lookup
    assert lookups[("userdb", "found")].value == 1
    assert lookups[("userdb", "notfound")].value == 0


async def test_pipelined_iteration_lists_the_account_created_before_it(auth):
    addr = "iterated1@" + DOMAIN
    replies = await auth.ask(passdb_line(addr, "longenough") + b"I0\t0\tshared/userdb/\t\n", 3)
    assert record(replies[0])["addr"] == addr
    assert replies[1:] == [f"Oshared/userdb/{addr}\t", ""]


async def test_pipelined_unrelated_lookups_do_not_wait_for_a_creation(auth, stick_hashing):
    """Behind a stuck creation, a lookup of another address on the same connection is
    evaluated at once; a lookup of the address being created, on another connection, waits."""
    existing = "existing1@" + DOMAIN
    record(await auth.passdb(existing, "longenough"))
    gate = stick_hashing()
    found = auth.service.metrics.lookup[("userdb", "found")]
    blocked = "blocked01@" + DOMAIN
    pipelined = asyncio.ensure_future(
        auth.ask(passdb_line(blocked, "longenough") + userdb_line(existing), 2)
    )
    other = None
    try:
        for _ in range(200):  # the existing user's lookup is evaluated behind the creation
            if found.value:
                break
            await asyncio.sleep(0.01)
        assert found.value == 1 and not pipelined.done()
        other = asyncio.ensure_future(auth.ask(userdb_line(blocked)))
        await asyncio.sleep(0.1)
        assert not other.done()
    finally:
        gate.set()
    created, existing_reply = await pipelined
    assert record(existing_reply)["addr"] == existing
    assert record((await other)[0]) == record(created)


def test_salts_are_sixteen_crypt_characters_and_never_repeat():
    salts = [hashing.make_salt() for _ in range(2000)]
    assert len(set(salts)) == len(salts)
    assert all(len(s) == 16 and set(s) <= set(hashing.SALT_ALPHABET) for s in salts)
    # every character of the alphabet turns up (a mapping that dropped one would show)
    assert set("".join(salts)) == set(hashing.SALT_ALPHABET)
    stored = hashing.hash_password("longenough")
    assert stored.startswith("{SHA512-CRYPT}$6$") and len(stored.split("$")[2]) == 16
    assert hashing.verify_password("longenough", stored)


def test_resource_readings_are_reused_for_a_second():
    """CachedResources reads the machine again only when its reading is MAX_AGE old (or
    for another directory); creations then cost no /proc parsing each."""
    now = [100.0]
    readings = []

    def read(directory):
        readings.append(directory)
        return Resources(float(len(readings)), 1, 1)

    cached = sysres.CachedResources(read, clock=lambda: now[0])
    assert cached("/m").load_1m == 1.0
    now[0] += sysres.MAX_AGE - 0.01
    assert cached("/m").load_1m == 1.0 and readings == ["/m"]
    now[0] += 0.01
    assert cached("/m").load_1m == 2.0
    assert cached("/other").load_1m == 3.0
    assert readings == ["/m", "/m", "/other"]


def test_the_default_resource_reader_is_the_cached_one(config):
    service = DoveauthService(config)
    assert isinstance(service._read_resources, sysres.CachedResources)
    assert isinstance(service._read_resources(config.mailboxes_dir), Resources)


@pytest.mark.parametrize("cpus, workers", [(1, 2), (2, 2), (8, 8)])
def test_one_creation_thread_per_core_at_least_two(cpus, workers):
    assert worker_count(cpus) == workers


async def test_creations_run_in_parallel_threads(auth, monkeypatch):
    """Creations on several connections hash at the same time (the hash releases the
    interpreter lock), on at least as many threads as there are cores."""
    inside = set()
    peak = []
    lock = threading.Lock()
    real_hash = hashing.sha512_crypt

    def counting(password, salt):
        with lock:
            inside.add(threading.get_ident())
            peak.append(len(inside))
        try:
            time.sleep(0.05)
            return real_hash(password, salt)
        finally:
            with lock:
                inside.discard(threading.get_ident())

    monkeypatch.setattr(hashing, "sha512_crypt", counting)
    replies = await asyncio.gather(
        *(auth.passdb(f"parallel{i}@{DOMAIN}", "longenough") for i in range(8))
    )
    assert all(record(r) for r in replies)
    assert max(peak) >= min(8, worker_count())
