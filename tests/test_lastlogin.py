"""lastlogin over its socket: day-granular mtime, invalid input ignored, commit answered O."""

import asyncio
import logging
import os

import pytest

from chatmaild.config import read_config
from chatmaild.dictproxy import serve_unix
from chatmaild.dictproxy.server import close_connections
from chatmaild.lastlogin.service import LastLoginService, parse_timestamp
from chatmaild.mailbox import Mailboxes

from conftest import write_ini

DOMAIN = "chat.example"
DAY = 86400


@pytest.fixture
async def lastlogin(tmp_path):
    config = read_config(write_ini(tmp_path / "chatmail.ini", mailboxes_dir=tmp_path / "mb"))
    path = tmp_path / "lastlogin.socket"
    server = await serve_unix(path, LastLoginService(config))
    boxes = Mailboxes(config.mailboxes_dir, config.address_domain)
    yield path, boxes
    server.close()
    close_connections(server)
    await server.wait_closed()


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
