"""The push notifier against a local aiohttp server on 127.0.0.1, and its pure rules."""

import asyncio
import json
import logging
import os

import pytest
from aiohttp import web
from metadata_helpers import ALICE, FakeClock

from chatmaild.metadata.backoff import RetrySchedule
from chatmaild.metadata.notifier import Notifier
from chatmaild.metadata.queue import QueueDir, item_key


class PushServer:
    """Answers POST /notify with the next status of `statuses` (the last one repeats)."""

    def __init__(self, statuses=(200,)):
        self.statuses = list(statuses)
        self.bodies = []
        self.active = 0
        self.max_active = 0
        self.gate = None  # an asyncio.Event holding requests until set
        self.got = asyncio.Condition()

    async def handle(self, request):
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            body = await request.read()
            if self.gate is not None:
                await self.gate.wait()
            status = self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]
            async with self.got:
                self.bodies.append(body.decode())
                self.got.notify_all()
            return web.Response(status=status)
        finally:
            self.active -= 1

    async def wait_for(self, count, timeout=10):
        async with self.got:
            await asyncio.wait_for(self.got.wait_for(lambda: len(self.bodies) >= count), timeout)


@pytest.fixture
async def push_server():
    server = PushServer()
    app = web.Application()
    app.router.add_post("/notify", server.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    server.url = f"http://127.0.0.1:{port}/notify"
    yield server
    await runner.cleanup()


class GoneTokens:
    def __init__(self):
        self.removed = []

    def __call__(self, addr, token):
        self.removed.append((addr, token))


def make_notifier(tmp_path, url, **kw):
    gone = GoneTokens()
    kw.setdefault("schedule", RetrySchedule(first_delay=0.05, factor=2, give_up_after=30))
    notifier = Notifier(tmp_path / "pending", url, on_token_gone=gone, **kw)
    notifier.load()
    return notifier, gone


async def until(predicate, timeout=10):
    for _ in range(int(timeout / 0.01)):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached")


def queue_files(tmp_path):
    return sorted(os.listdir(tmp_path / "pending"))


async def stop(task):
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


# -- pure rules


def test_default_schedule():
    s = RetrySchedule()
    t0 = 1000.0
    times = []
    failed = 1
    while (due := s.next_attempt(t0, failed)) is not None:
        times.append(due - t0)
        failed += 1
    assert times == [8, 64, 512, 4096, 5 * 3600]
    assert s.expired(t0, t0 + 5 * 3600 + 61) and not s.expired(t0, t0 + 5 * 3600 + 59)


def test_schedule_survives_absurd_attempt_counts():
    assert RetrySchedule().next_attempt(0, 64) is None


def test_item_key_separates_addr_and_token():
    assert item_key("a@x", "b") != item_key("a@x\0b", "")
    assert len(item_key("a@x", "t")) == 32


# -- delivery


async def test_200_delivers_once(tmp_path, push_server, caplog):
    caplog.set_level(logging.INFO, logger="chatmaild")
    notifier, gone = make_notifier(tmp_path, push_server.url)
    task = asyncio.create_task(notifier.run())
    notifier.enqueue(ALICE, "openpgp:tok1")
    await push_server.wait_for(1)
    await until(lambda: not queue_files(tmp_path) and notifier.depth == 0)
    await asyncio.sleep(0.1)
    assert push_server.bodies == ["openpgp:tok1"]
    assert gone.removed == []
    await stop(task)
    # delivered at the first attempt: no per-notification line, one summary at shutdown
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "1 delivered" in lines[0], lines


async def test_an_empty_notification_url_turns_pushes_off(tmp_path):
    """The demo relay's ini: nothing is queued, nothing is posted anywhere."""
    notifier, _ = make_notifier(tmp_path, "")
    notifier.enqueue(ALICE, "openpgp:tok1")
    assert notifier.depth == 0 and not queue_files(tmp_path)
    assert notifier.stats["off"] == 1


async def test_410_removes_the_token(tmp_path, push_server):
    push_server.statuses = [410]
    notifier, gone = make_notifier(tmp_path, push_server.url)
    task = asyncio.create_task(notifier.run())
    notifier.enqueue(ALICE, "dead-token")
    await until(lambda: gone.removed)
    assert gone.removed == [(ALICE, "dead-token")]
    await until(lambda: not queue_files(tmp_path))
    await asyncio.sleep(0.1)
    assert push_server.bodies == ["dead-token"]
    await stop(task)


async def test_500_is_retried_then_delivered(tmp_path, push_server, caplog):
    caplog.set_level(logging.INFO, logger="chatmaild")
    push_server.statuses = [500, 502, 200]
    notifier, _ = make_notifier(tmp_path, push_server.url, summary_interval=3600)
    task = asyncio.create_task(notifier.run())
    notifier.enqueue(ALICE, "tok")
    await push_server.wait_for(3)
    await until(lambda: not queue_files(tmp_path))
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "delivered after 3 attempts" in lines[0], lines
    await stop(task)
    assert push_server.bodies == ["tok"] * 3


async def test_gives_up_at_the_deadline_with_one_line(tmp_path, push_server, caplog):
    caplog.set_level(logging.INFO, logger="chatmaild")
    push_server.statuses = [500]
    schedule = RetrySchedule(first_delay=0.02, factor=2, give_up_after=0.2)
    notifier, _ = make_notifier(tmp_path, push_server.url, schedule=schedule)
    task = asyncio.create_task(notifier.run())
    notifier.enqueue(ALICE, "tok")
    await until(lambda: notifier.stats["dropped"] == 1)
    assert not queue_files(tmp_path)
    # attempts at 0, 0.02, 0.04, 0.08, 0.16 and the deadline 0.2
    assert len(push_server.bodies) == 6
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "dropped after 6 attempt(s)" in lines[0], lines
    await stop(task)


async def test_network_errors_are_aggregated(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="chatmaild")
    schedule = RetrySchedule(first_delay=0.01, factor=1.5, give_up_after=3600)
    notifier, _ = make_notifier(
        tmp_path, "http://127.0.0.1:9/notify", schedule=schedule, summary_interval=3600
    )
    task = asyncio.create_task(notifier.run())
    for i in range(20):
        notifier.enqueue(ALICE, f"tok{i}")
    await until(lambda: notifier.stats["failed_attempts"] >= 60)
    assert caplog.records == []
    await stop(task)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "failed_attempts" in lines[0] and "20 pending" in lines[0], lines
    assert len(queue_files(tmp_path)) == 20


async def test_concurrency_is_bounded(tmp_path, push_server):
    push_server.gate = asyncio.Event()
    notifier, _ = make_notifier(tmp_path, push_server.url, concurrency=3)
    task = asyncio.create_task(notifier.run())
    for i in range(10):
        notifier.enqueue(ALICE, f"tok{i}")
    await until(lambda: push_server.active == 3)
    await asyncio.sleep(0.1)
    assert push_server.active == 3
    push_server.gate.set()
    await push_server.wait_for(10)
    assert push_server.max_active == 3
    await until(lambda: not queue_files(tmp_path))
    await stop(task)


async def test_message_during_flight_is_notified_again(tmp_path, push_server):
    push_server.gate = asyncio.Event()
    notifier, _ = make_notifier(tmp_path, push_server.url)
    task = asyncio.create_task(notifier.run())
    notifier.enqueue(ALICE, "tok")
    await until(lambda: push_server.active == 1)
    notifier.enqueue(ALICE, "tok")
    push_server.gate.set()
    await push_server.wait_for(2)
    await until(lambda: not queue_files(tmp_path))
    await stop(task)
    assert push_server.bodies == ["tok", "tok"]


# -- persistence


async def test_restart_keeps_the_schedule(tmp_path, push_server):
    """An item that failed once is not re-sent at restart before its due time."""
    clock = FakeClock(1000)
    push_server.statuses = [500, 200]
    schedule = RetrySchedule()  # 8 s, 64 s, ...
    first, _ = make_notifier(tmp_path, push_server.url, clock=clock, schedule=schedule)
    task = asyncio.create_task(first.run())
    first.enqueue(ALICE, "tok")
    await push_server.wait_for(1)
    await until(lambda: first.stats["failed_attempts"] == 1)
    await stop(task)
    (name,) = queue_files(tmp_path)
    item = json.loads((tmp_path / "pending" / name).read_text())
    assert item["attempts"] == 1 and item["due"] == 1008 and item["first_attempt"] == 1000

    clock.advance(5)  # restart 5 s later: 3 s before the retry is due
    second, _ = make_notifier(tmp_path, push_server.url, clock=clock, schedule=schedule)
    assert second.depth == 1
    task = asyncio.create_task(second.run())
    await asyncio.sleep(0.2)
    assert len(push_server.bodies) == 1
    clock.advance(3)
    second.poke()
    await push_server.wait_for(2)
    await until(lambda: not queue_files(tmp_path))
    await stop(task)


async def test_stop_with_items_in_flight_keeps_them(tmp_path, push_server):
    push_server.gate = asyncio.Event()
    notifier, _ = make_notifier(tmp_path, push_server.url)
    task = asyncio.create_task(notifier.run())
    notifier.enqueue(ALICE, "tok")
    await until(lambda: push_server.active == 1)
    await stop(task)
    assert len(queue_files(tmp_path)) == 1
    push_server.gate.set()
    again, _ = make_notifier(tmp_path, push_server.url)
    task = asyncio.create_task(again.run())
    await until(lambda: not queue_files(tmp_path))
    await stop(task)
    assert push_server.bodies[-1] == "tok"


@pytest.mark.parametrize(
    "content",
    [b"{garbage", b'{"key": "x"}', b"\xff\xff", b"[]", b'{"attempts": -1}', b"one line only"],
)
def test_corrupt_queue_files_removed(tmp_path, caplog, content):
    qdir = tmp_path / "pending"
    qdir.mkdir()
    bad = "0" * 32
    (qdir / bad).write_bytes(content)
    (qdir / ("1" * 32 + ".tmp")).write_bytes(b"half written")
    notifier, _ = make_notifier(tmp_path, "http://127.0.0.1:9/")
    notifier.enqueue(ALICE, "good")
    assert queue_files(tmp_path) == [item_key(ALICE, "good")]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and bad in warnings[0]
    # the good item survives another load
    again, _ = make_notifier(tmp_path, "http://127.0.0.1:9/")
    assert again.depth == 1


def test_previous_chatmaild_queue_files_are_converted(tmp_path):
    qdir = tmp_path / "pending"
    qdir.mkdir()
    (qdir / ("a" * 32)).write_text(f"{ALICE}\n1699999000\nold:token")
    (qdir / ("b" * 32)).write_text(f"{ALICE}\nolder-token")
    items = {i.token: i for i in QueueDir(qdir).load(now=1700000000.0)}
    assert sorted(items) == ["old:token", "older-token"]
    assert items["old:token"].first_attempt == 1699999000
    assert items["older-token"].first_attempt == 1700000000
    assert sorted(os.listdir(qdir)) == sorted(item_key(ALICE, t) for t in items)
