"""chatmail-metadata over a real unix socket: every key, token rules and bad input."""

import asyncio
import json
import logging
import os

import pytest
from metadata_helpers import (
    ALICE,
    DOMAIN,
    GUID,
    MESSAGENEW_KEY,
    SERVER,
    TOKEN_KEY,
    DictClient,
    FakeClock,
    build,
    meta_ini,
)

from chatmaild.dictproxy import serve_unix
from chatmaild.dictproxy.server import close_connections
from chatmaild.metadata.tokens import MAX_TOKEN_BYTES

DAY = 86400


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
async def served(tmp_path, clock):
    """The service on a socket (notifier not sending), plus its parts."""
    service, mailboxes, store, notifier = build(meta_ini(tmp_path), clock=clock)
    mailboxes.user(ALICE).dir.mkdir(parents=True)
    notifier.load()
    path = tmp_path / "metadata.socket"
    server = await serve_unix(path, service)
    client = await DictClient.connect(path)
    yield client, mailboxes, notifier
    await client.close()
    server.close()
    close_connections(server)
    await server.wait_closed()


def metadata_file(mailboxes, addr=ALICE):
    return mailboxes.user(addr).metadata_path


def pending_files(mailboxes):
    d = mailboxes.pending_notifications_dir
    return sorted(os.listdir(d)) if d.exists() else []


# -- server entries


async def test_server_entries(served):
    client, _, _ = served
    assert await client.lookup_value(SERVER + "irohrelay") == f"https://{DOMAIN}"
    assert await client.lookup_value(SERVER + "maxsmtprecipients") == "1000"
    appversions = await client.lookup_value(SERVER + "appversions")
    assert "\n" not in appversions
    assert isinstance(json.loads(appversions), dict)


async def test_server_entries_need_no_mailbox(served):
    client, _, _ = served
    other = f"nobody123@{DOMAIN}"
    assert await client.lookup_value(SERVER + "maxsmtprecipients", user=other) == "1000"


async def test_irohrelay_disabled(tmp_path):
    service, *_ = build(meta_ini(tmp_path, iroh_relay=""))
    server = await serve_unix(tmp_path / "s", service)
    client = await DictClient.connect(tmp_path / "s")
    assert await client.lookup(SERVER + "irohrelay") == "N"
    await client.close()
    server.close()
    close_connections(server)


async def test_turn_credentials_from_socket(served, tmp_path):
    client, _, _ = served
    connections = 0

    async def answer(reader, writer):
        nonlocal connections
        connections += 1
        writer.write(b"1700086400:c2VjcmV0\n")
        await writer.drain()
        writer.close()

    turn = await asyncio.start_unix_server(answer, path=str(tmp_path / "turn.socket"))
    try:
        value = await client.lookup_value(SERVER + "turn")
        assert value == f"{DOMAIN}:3478:1700086400:c2VjcmV0"
        assert connections == 1
    finally:
        turn.close()


async def test_turn_unavailable_is_not_found_and_logged_once(served, caplog):
    client, _, _ = served
    caplog.set_level(logging.INFO, logger="chatmaild")
    for _ in range(3):
        assert await client.lookup(SERVER + "turn") == "N"
    lines = [r for r in caplog.records if "TURN" in r.getMessage()]
    assert len(lines) == 1, [r.getMessage() for r in lines]
    assert "turn.socket" in lines[0].getMessage()
    assert await client.lookup_value(SERVER + "maxsmtprecipients") == "1000"


async def test_turn_flapping_logs_one_failure_line_per_interval(tmp_path, caplog):
    """chatmail-turn coming and going: one warning per LOG_INTERVAL, each recovery line only
    after a logged failure."""
    from chatmaild.metadata.turn import LOG_INTERVAL, TurnCredentials

    clock = FakeClock()
    path = tmp_path / "turn.socket"
    turn = TurnCredentials(path, timeout=1.0, clock=clock)

    async def answer(reader, writer):
        writer.write(b"1700086400:c2VjcmV0\n")
        writer.close()

    caplog.set_level(logging.INFO, logger="chatmaild")
    for _ in range(5):  # down, up, down, up ... within one interval
        assert await turn.fetch() is None
        server = await asyncio.start_unix_server(answer, path=str(path))
        assert await turn.fetch() == "1700086400:c2VjcmV0"
        server.close()
        await server.wait_closed()
        path.unlink()
        clock.advance(1)
    messages = [r.getMessage() for r in caplog.records if "TURN" in r.getMessage()]
    assert len(messages) == 2, messages  # one failure, one recovery
    clock.advance(LOG_INTERVAL)
    assert await turn.fetch() is None
    messages = [r.getMessage() for r in caplog.records if "TURN" in r.getMessage()]
    assert len(messages) == 3 and "unavailable" in messages[-1]


async def test_turn_silent_server_times_out(served, tmp_path):
    client, _, _ = served

    async def silent(reader, writer):
        await reader.read()

    turn = await asyncio.start_unix_server(silent, path=str(tmp_path / "turn.socket"))
    try:
        assert await client.lookup(SERVER + "turn") == "N"
    finally:
        turn.close()


@pytest.mark.parametrize(
    "key",
    [
        f"priv/{GUID}/comment",
        f"shared/{GUID}/comment",
        f"shared/{GUID}/vendor/vendor.dovecot/pvt/server/vendor/deltachat/unknown",
        f"priv/{GUID}/vendor/vendor.dovecot/pvt/server/vendor/deltachat/irohrelay",
        f"shared/{GUID}/vendor/deltachat/irohrelay",
        f"shared/{GUID}/devicetoken",
        "shared/devicetoken",
        f"priv/{GUID}/devicetoken/x",
    ],
)
async def test_unknown_keys_not_found(served, key):
    client, _, _ = served
    assert await client.commit([(TOKEN_KEY, "tok")]) == "O"
    assert await client.lookup(key) == "N"


async def test_iterations_answer_terminator(served):
    client, _, _ = served
    assert await client.commit([(TOKEN_KEY, "tok")]) == "O"
    assert await client.iterate(f"priv/{GUID}/") == []
    assert await client.iterate(f"shared/{GUID}/", flags=1) == []
    assert await client.lookup_value(TOKEN_KEY) == "tok"


# -- device tokens


async def test_no_tokens_is_not_found(served):
    client, mailboxes, _ = served
    assert await client.lookup(TOKEN_KEY) == "N"
    assert not metadata_file(mailboxes).exists()


async def test_set_and_lookup_tokens(served, clock):
    client, mailboxes, _ = served
    assert await client.commit([(TOKEN_KEY, "openpgp:AAA")]) == "O"
    clock.advance(10)
    assert await client.commit([(TOKEN_KEY, "openpgp:BBB")]) == "O"
    assert await client.lookup_value(TOKEN_KEY) == "openpgp:AAA openpgp:BBB"
    stored = json.loads(metadata_file(mailboxes).read_text())
    now = int(clock.now)
    assert stored == {"devicetoken": {"openpgp:AAA": now - 10, "openpgp:BBB": now}}


async def test_username_from_lookup_field(served):
    client, mailboxes, _ = served
    bob = f"bob123456@{DOMAIN}"
    assert await client.commit([(TOKEN_KEY, "bobtok")], user=bob) == "O"
    assert await client.lookup(TOKEN_KEY, user=ALICE) == "N"
    assert await client.lookup_value(TOKEN_KEY, user=bob) == "bobtok"
    assert metadata_file(mailboxes, bob).exists()


async def test_unset_removes_all_tokens(served):
    client, _, _ = served
    assert await client.commit([(TOKEN_KEY, "one"), (TOKEN_KEY, "two")]) == "O"
    assert await client.lookup_value(TOKEN_KEY) == "one two"
    assert await client.commit([(TOKEN_KEY,)]) == "O"
    assert await client.lookup(TOKEN_KEY) == "N"


async def test_resetting_a_token_refreshes_its_date(served, clock):
    client, _, _ = served
    assert await client.commit([(TOKEN_KEY, "tok")]) == "O"
    clock.advance(80 * DAY)
    assert await client.commit([(TOKEN_KEY, "tok")]) == "O"
    clock.advance(80 * DAY)
    assert await client.lookup_value(TOKEN_KEY) == "tok"


async def test_reregistration_within_a_day_does_not_rewrite(served, clock):
    """Delta Chat sets its token at every login: the date is refreshed at most once a day."""
    client, mailboxes, _ = served
    assert await client.commit([(TOKEN_KEY, "tok")]) == "O"
    first = metadata_file(mailboxes).stat()
    registered = int(clock.now)
    clock.advance(DAY - 1)
    assert await client.commit([(TOKEN_KEY, "tok")]) == "O"
    again = metadata_file(mailboxes).stat()
    assert (again.st_ino, again.st_mtime_ns) == (first.st_ino, first.st_mtime_ns)
    assert json.loads(metadata_file(mailboxes).read_text())["devicetoken"] == {"tok": registered}
    clock.advance(1)
    assert await client.commit([(TOKEN_KEY, "tok")]) == "O"
    assert metadata_file(mailboxes).stat().st_ino != first.st_ino
    assert json.loads(metadata_file(mailboxes).read_text())["devicetoken"] == {
        "tok": int(clock.now)
    }
    # a different token is always written
    assert await client.commit([(TOKEN_KEY, "other")]) == "O"
    assert await client.lookup_value(TOKEN_KEY) == "tok other"


async def test_tokens_expire_after_90_days(served, clock):
    client, mailboxes, _ = served
    assert await client.commit([(TOKEN_KEY, "old")]) == "O"
    clock.advance(60 * DAY)
    assert await client.commit([(TOKEN_KEY, "new")]) == "O"
    clock.advance(31 * DAY)
    assert await client.lookup_value(TOKEN_KEY) == "new"
    # dropped on access: the file no longer holds the expired token
    assert list(json.loads(metadata_file(mailboxes).read_text())["devicetoken"]) == ["new"]
    clock.advance(60 * DAY)
    assert await client.lookup(TOKEN_KEY) == "N"


async def test_future_dated_tokens_dropped(served, clock):
    client, mailboxes, _ = served
    now = int(clock.now)
    doc = {"devicetoken": {"future": now + DAY, "ok": now - DAY, "ancient": now - 91 * DAY}}
    metadata_file(mailboxes).write_text(json.dumps(doc))
    assert await client.lookup_value(TOKEN_KEY) == "ok"
    assert await client.commit([(MESSAGENEW_KEY, "")]) == "O"
    assert len(pending_files(mailboxes)) == 1


async def test_legacy_token_list(served, clock):
    client, mailboxes, notifier = served
    metadata_file(mailboxes).write_text(json.dumps({"devicetoken": ["leg1", "leg2"]}))
    assert await client.lookup_value(TOKEN_KEY) == "leg1 leg2"
    assert await client.commit([(MESSAGENEW_KEY, "")]) == "O"
    assert len(pending_files(mailboxes)) == 2
    assert await client.commit([(TOKEN_KEY, "new")]) == "O"
    stored = json.loads(metadata_file(mailboxes).read_text())["devicetoken"]
    assert isinstance(stored, dict)
    assert sorted(stored) == ["leg1", "leg2", "new"]
    assert await client.lookup_value(TOKEN_KEY) == "leg1 leg2 new"


# -- messagenew


async def test_messagenew_queues_one_notification_per_token(served):
    client, mailboxes, notifier = served
    assert await client.commit([(TOKEN_KEY, "t1"), (TOKEN_KEY, "t2")]) == "O"
    assert await client.commit([(MESSAGENEW_KEY, "")]) == "O"
    files = pending_files(mailboxes)
    assert len(files) == 2
    items = [json.loads((mailboxes.pending_notifications_dir / f).read_text()) for f in files]
    assert sorted(i["token"] for i in items) == ["t1", "t2"]
    assert {i["addr"] for i in items} == {ALICE}
    assert all(i["attempts"] == 0 for i in items)
    # a second message while the first notification is pending needs no second push
    assert await client.commit([(MESSAGENEW_KEY, "")]) == "O"
    assert pending_files(mailboxes) == files
    assert notifier.depth == 2


async def test_messagenew_without_tokens(served):
    client, mailboxes, _ = served
    assert await client.commit([(MESSAGENEW_KEY, "")]) == "O"
    assert pending_files(mailboxes) == []


# -- bad input


async def test_token_with_tabs_and_newlines_round_trips(served, mailboxes_json=None):
    client, mailboxes, _ = served
    token = "a\tb\nc\rd\x01e\\f\"g'"
    assert await client.commit([(TOKEN_KEY, token)]) == "O"
    assert json.loads(metadata_file(mailboxes).read_text())["devicetoken"] == {
        token: pytest.approx(0, abs=2e9)
    }
    raw = await client.lookup(TOKEN_KEY)
    assert "\t" not in raw and "\n" not in raw
    assert await client.lookup_value(TOKEN_KEY) == token


async def test_huge_token_refused(served, caplog):
    client, mailboxes, _ = served
    caplog.set_level(logging.INFO, logger="chatmaild")
    huge = "x" * (MAX_TOKEN_BYTES + 1)
    reply = await client.commit([(TOKEN_KEY, "fine"), (TOKEN_KEY, huge)])
    assert reply.startswith("F")
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "4097 bytes" in lines[0] and huge not in lines[0]
    # the transaction changed nothing, and the daemon keeps serving
    assert await client.lookup(TOKEN_KEY) == "N"
    assert await client.commit([(TOKEN_KEY, "x" * MAX_TOKEN_BYTES)]) == "O"
    assert await client.lookup_value(TOKEN_KEY) == "x" * MAX_TOKEN_BYTES


async def test_empty_token_refused(served):
    client, _, _ = served
    assert (await client.commit([(TOKEN_KEY, "")])).startswith("F")
    assert await client.lookup(TOKEN_KEY) == "N"


@pytest.mark.parametrize(
    "user",
    [
        "",
        f"../../etc@{DOMAIN}",
        f"a/b@{DOMAIN}",
        f"..@{DOMAIN}/x",
        f".hidden@{DOMAIN}",
        "alice@other.example",
        f"two@at@{DOMAIN}",
        f"nul\x00@{DOMAIN}",
    ],
)
async def test_bad_usernames_refused(served, user, tmp_path):
    client, mailboxes, _ = served
    assert (await client.commit([(TOKEN_KEY, "tok")], user=user)).startswith("F")
    assert (await client.commit([(MESSAGENEW_KEY, "")], user=user)).startswith("F")
    assert (await client.lookup(TOKEN_KEY, user=user)).startswith("F")
    assert not (tmp_path / "etc").exists()
    assert sorted(os.listdir(mailboxes.dir)) == [ALICE, "pending_notifications"]


async def test_failing_write_fails_commit(served, caplog):
    client, mailboxes, _ = served
    carol = f"carol1234@{DOMAIN}"
    (mailboxes.dir / carol).write_text("not a directory")
    assert (await client.commit([(TOKEN_KEY, "tok")], user=carol)).startswith("F")
    assert any(carol in r.getMessage() for r in caplog.records)
    assert await client.commit([(TOKEN_KEY, "tok")]) == "O"


async def test_server_entries_are_read_only(served):
    client, _, _ = served
    assert (await client.commit([(SERVER + "irohrelay", "https://evil")])).startswith("F")
    assert await client.lookup_value(SERVER + "irohrelay") == f"https://{DOMAIN}"


async def test_unknown_key_sets_are_ignored(served):
    client, _, _ = served
    assert await client.commit([(f"priv/{GUID}/comment", "hello")]) == "O"
    assert await client.commit([(f"priv/{GUID}/comment",)]) == "O"
    assert await client.lookup(f"priv/{GUID}/comment") == "N"


@pytest.mark.parametrize("content", [b"{not json", b"[1, 2", b"\xff\xfe", b"42", b""])
async def test_corrupt_metadata_json(served, caplog, content):
    client, mailboxes, _ = served
    metadata_file(mailboxes).write_bytes(content)
    assert await client.lookup(TOKEN_KEY) == "N"
    assert await client.commit([(MESSAGENEW_KEY, "")]) == "O"
    assert any("corrupt" in r.getMessage() for r in caplog.records)
    assert not any(r.exc_info for r in caplog.records)
    # a new token replaces the corrupt file
    assert await client.commit([(TOKEN_KEY, "fresh")]) == "O"
    assert await client.lookup_value(TOKEN_KEY) == "fresh"


@pytest.mark.parametrize(
    "stored, now, recent",
    [
        ({"t": 1000}, 1000, True),
        ({"t": 1000}, 1000 + DAY - 1, True),
        ({"t": 1000}, 1000 + DAY, False),
        ({}, 1000, False),
        ({"other": 1000}, 1000, False),
        ({"t": 0}, 1000, False),  # legacy entry: written with a real date
        ({"t": 5000}, 1000, False),  # dated in the future: replaced
        ({"t": "x"}, 1000, False),
    ],
)
def test_is_recent_registration(stored, now, recent):
    from chatmaild.metadata.tokens import is_recent_registration

    assert is_recent_registration(stored, "t", now) is recent
