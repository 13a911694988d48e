"""lastlogin over its socket: day-granular mtime, invalid input ignored, commit answered O."""

import asyncio
import logging
import os

import pytest
from dictproxy_helpers import dict_served

from chatmaild.config import read_config
from chatmaild.lastlogin.recorded import RecordedDays
from chatmaild.lastlogin.service import LastLoginService, parse_timestamp
from chatmaild.mailbox import Mailboxes

from conftest import write_ini

DOMAIN = "chat.example"
DAY = 86400


@pytest.fixture
async def lastlogin(tmp_path):
    config = read_config(write_ini(tmp_path / "chatmail.ini", mailboxes_dir=tmp_path / "mb"))
    path = tmp_path / "lastlogin.socket"
    async with dict_served(path, LastLoginService(config)):
        boxes = Mailboxes(config.mailboxes_dir, config.address_domain)
        yield path, boxes


async def send(path, body: bytes, nlines=1):
    reader, writer = await asyncio.open_unix_connection(str(path))
    writer.write(b"H3\t2\t0\t\tlastlogin\n" + body)
    replies = [await asyncio.wait_for(reader.readline(), 5) for _ in range(nlines)]
    writer.close()
    return replies


def login(addr, ts, txid=1):
    return f"B{txid}\t{addr}\nS{txid}\tshared/last-login/{addr}\t{ts}\nC{txid}\n".encode()


@pytest.mark.parametrize(
    "value, expected",
    [("1700000000", 1700000000), ("1700000000123", 1700000000), ("17", 17), ("x", None)],
)
def test_parse_timestamp(value, expected):
    assert parse_timestamp(value) == expected


async def test_login_sets_day_and_touches_only_on_day_change(lastlogin):
    path, boxes = lastlogin
    user = boxes.user("someone12@" + DOMAIN)
    user.create("{SHA512-CRYPT}$6$x$y")
    day = 20000 * DAY
    assert await send(path, login(user.addr, day + 5000)) == [b"O\n"]
    assert user.get_last_login() == day
    # same day again: the file is not touched (its ctime stays)
    ctime = os.stat(user.password_path).st_ctime_ns
    await asyncio.sleep(0.01)
    assert await send(path, login(user.addr, day + 8000)) == [b"O\n"]
    assert os.stat(user.password_path).st_ctime_ns == ctime
    assert user.get_last_login() == day
    # next day
    assert await send(path, login(user.addr, day + DAY + 1)) == [b"O\n"]
    assert user.get_last_login() == day + DAY


async def test_invalid_addresses_ignored_with_one_log_line(lastlogin, caplog, tmp_path):
    path, boxes = lastlogin
    caplog.set_level(logging.WARNING, "chatmaild.lastlogin")
    before = sorted(tmp_path.rglob("*"))
    body = login("../../evil@" + DOMAIN, 1700000000, 1) + login("x@other.example", 17, 2)
    assert await send(path, body, 2) == [b"O\n", b"O\n"]
    assert caplog.text.count("last-login ignored") == 2
    assert sorted(tmp_path.rglob("*")) == before


async def test_unknown_user_and_two_connections_same_txid(lastlogin):
    path, boxes = lastlogin
    a = boxes.user("aaaaaaaaa@" + DOMAIN)
    b = boxes.user("bbbbbbbbb@" + DOMAIN)
    for u in (a, b):
        u.create("{SHA512-CRYPT}$6$x$y")
    replies = await asyncio.gather(
        send(path, login(a.addr, 10 * DAY + 1)),
        send(path, login(b.addr, 20 * DAY + 1)),
        send(path, login("nobody123@" + DOMAIN, 30 * DAY)),
    )
    assert replies == [[b"O\n"]] * 3
    assert (a.get_last_login(), b.get_last_login()) == (10 * DAY, 20 * DAY)
    assert not boxes.user("nobody123@" + DOMAIN).dir.exists()


def test_recorded_days_keeps_only_the_newest_day():
    rec = RecordedDays(max_size=2)
    assert not rec.known("a@x", DAY)
    rec.remember("a@x", DAY)
    assert rec.known("a@x", DAY) and not rec.known("a@x", 2 * DAY)
    rec.remember("b@x", 2 * DAY)  # a new day starts over
    assert not rec.known("a@x", DAY) and rec.known("b@x", 2 * DAY)
    rec.remember("b@x", DAY)  # found carrying an older day: today's entry is gone
    assert not rec.known("b@x", 2 * DAY) and not rec.known("b@x", DAY)
    for addr in ("c@x", "d@x", "e@x"):  # over max_size: starts over, stays bounded
        rec.remember(addr, 2 * DAY)
    assert len(rec.addrs) <= 2 and rec.known("e@x", 2 * DAY)
    rec.forget("e@x")
    assert not rec.known("e@x", 2 * DAY)


@pytest.fixture
def service(tmp_path):
    config = read_config(write_ini(tmp_path / "chatmail.ini", mailboxes_dir=tmp_path / "mb"))
    return LastLoginService(config)


def test_same_day_set_does_not_touch_the_disk(service, monkeypatch):
    user = service.mailboxes.user("cached123@" + DOMAIN)
    user.create("{SHA512-CRYPT}$6$x$y")
    day = 20000 * DAY
    service.record_login(user.addr, str(day + 10))  # written
    service.record_login(user.addr, str(day + 20))  # found by a stat: remembered
    assert user.get_last_login() == day

    def no_disk(*args):
        raise AssertionError("file system touched")

    monkeypatch.setattr("chatmaild.lastlogin.service.set_login_day", no_disk)
    for ts in (day + 30, day + 30000, day + DAY - 1):
        service.record_login(user.addr, str(ts))
    result = service.metrics.set_result
    assert (result["updated"].value, result["unchanged"].value) == (1, 4)


def test_remembered_days_keep_the_uncached_semantics(service):
    """Late older days, a missing account, our own writes and a new day reach the disk."""
    user = service.mailboxes.user("cached456@" + DOMAIN)
    day = 20000 * DAY
    service.record_login(user.addr, str(day + 10))  # no account yet: nothing written
    user.create("{SHA512-CRYPT}$6$x$y")
    service.record_login(user.addr, str(day + 20))
    assert user.get_last_login() == day
    os.utime(user.password_path, (5, 5))  # set back after our write: the next set sees it
    service.record_login(user.addr, str(day + 25))
    assert user.get_last_login() == day
    service.record_login(user.addr, str(day + 26))  # found: remembered from now on
    service.record_login(user.addr, str(day - DAY + 5))  # late set of yesterday: written
    assert user.get_last_login() == day - DAY
    service.record_login(user.addr, str(day + 30))  # today again: written again
    assert user.get_last_login() == day
    service.record_login(user.addr, str(day + 31))  # found
    os.utime(user.password_path, (5, 5))  # changed after a confirming stat: not seen ...
    service.record_login(user.addr, str(day + 40))
    assert user.get_last_login() == 5
    service.record_login(user.addr, str(day + DAY))  # ... until the next day's login
    assert user.get_last_login() == day + DAY
