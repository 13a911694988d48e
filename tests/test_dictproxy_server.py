"""The dict server over real unix sockets: ordering, pipelining, transactions, bad input."""

import asyncio
import logging
import os
import stat

import pytest
from dictproxy_helpers import dict_connect as connect
from dictproxy_helpers import dict_served

from chatmaild.dictproxy import DictFailure, serve_unix


class RecordingService:
    """Sync lookups for `shared/sync/*`, slow async ones for `shared/slow/*`."""

    def __init__(self):
        self.commits = []
        self.rows = [
            ("shared/userdb/a@x", "1"),
            ("shared/userdb/b@x", "2"),
            ("shared/userdb/sub/c", "3"),
            ("shared/other/z", "4"),
        ]
        self.commit_gate = None

    def lookup(self, key, user):
        if key.startswith("shared/sync/"):
            return key[len("shared/sync/") :] + "|" + user
        if key.startswith("shared/slow/"):
            return self._slow(key)
        if key == "shared/fail":
            raise DictFailure("nope")
        if key == "shared/crash":
            raise RuntimeError("bug")
        if key == "shared/asyncfail":
            return self._asyncfail()
        return None

    async def _slow(self, key):
        delay = int(key.rsplit("/", 1)[1])
        await asyncio.sleep(delay / 1000)
        return "slow" + str(delay)

    async def _asyncfail(self):
        await asyncio.sleep(0)
        raise DictFailure("late nope")

    def iterate(self, path, user, flags):
        if path == "shared/boom/":
            raise DictFailure("cannot")
        return list(self.rows)

    def commit(self, txn):
        self.commits.append((txn.user, list(txn.ops)))
        if self.commit_gate is not None:
            return self._gated(txn)
        return not any(op[1] == "shared/refuse" for op in txn.ops)

    async def _gated(self, txn):
        await self.commit_gate.wait()
        return True


@pytest.fixture
async def served(tmp_path):
    service = RecordingService()
    path = tmp_path / "dict.socket"
    async with dict_served(path, service):
        yield service, path


async def ask(conn, data: bytes, nlines: int) -> list[bytes]:
    reader, writer = conn
    writer.write(data)
    await writer.drain()
    return [await asyncio.wait_for(reader.readline(), 5) for _ in range(nlines)]


async def test_socket_owner_only_and_stale_replaced(tmp_path):
    path = tmp_path / "dict.socket"
    for _ in range(2):  # the second start finds the first one's socket file
        server = await serve_unix(path, RecordingService())
        mode = stat.S_IMODE(os.stat(path).st_mode)
        assert mode & 0o077 == 0
        server.close()
        await server.wait_closed()
    assert path.exists()


async def test_refuses_to_replace_non_socket(tmp_path):
    path = tmp_path / "dict.socket"
    path.write_text("precious")
    with pytest.raises(FileExistsError):
        await serve_unix(path, RecordingService())
    assert path.read_text() == "precious"


async def test_lookup_found_notfound_failures(served):
    _, path = served
    conn = await connect(path)
    replies = await ask(
        conn,
        b"Lshared/sync/k\x01t1\tu@x\nLshared/none\tu\nLshared/fail\tu\n"
        b"Lshared/crash\tu\nLshared/asyncfail\tu\n",
        5,
    )
    assert replies == [b"Ok\x01t1|u@x\n", b"N\n", b"Fnope\n", b"Finternal error\n", b"Flate nope\n"]


async def test_hello_gets_no_reply(served):
    _, path = served
    conn = await connect(path)
    replies = await ask(conn, b"H3\t2\t0\t\tagain\nLshared/none\t\n", 1)
    assert replies == [b"N\n"]


async def test_pipelined_in_one_write_and_order_with_async(served):
    _, path = served
    conn = await connect(path)
    data = (
        b"Lshared/slow/30\tu\n"
        b"Lshared/sync/a\tu\n"
        b"Lshared/slow/1\tu\n"
        b"Lshared/sync/b\tu\n"
        b"I0\t0\tshared/userdb/\tu\n"
        b"Lshared/slow/10\tu\n"
        b"Lshared/none\tu\n"
    )
    replies = await ask(conn, data, 9)
    assert replies == [
        b"Oslow30\n",
        b"Oa|u\n",
        b"Oslow1\n",
        b"Ob|u\n",
        b"Oshared/userdb/a@x\t1\n",
        b"Oshared/userdb/b@x\t2\n",
        b"\n",
        b"Oslow10\n",
        b"N\n",
    ]
    assert await ask(conn, b"Lshared/sync/end\tu\n", 1) == [b"Oend|u\n"]


async def test_many_pipelined_lookups(served):
    _, path = served
    conn = await connect(path)
    data = b"".join(b"Lshared/sync/%d\tu\n" % i for i in range(5000))
    replies = await ask(conn, data, 5000)
    assert replies == [b"O%d|u\n" % i for i in range(5000)]


@pytest.mark.parametrize(
    "flags, path, expected",
    [
        (0, "shared/userdb/", [b"Oshared/userdb/a@x\t1\n", b"Oshared/userdb/b@x\t2\n"]),
        (
            1,
            "shared/userdb/",
            [
                b"Oshared/userdb/a@x\t1\n",
                b"Oshared/userdb/b@x\t2\n",
                b"Oshared/userdb/sub/c\t3\n",
            ],
        ),
        (
            9,
            "shared/userdb/",
            [b"Oshared/userdb/a@x\t\n", b"Oshared/userdb/b@x\t\n"] + [b"Oshared/userdb/sub/c\t\n"],
        ),
        (0, "shared/unknown/", []),
        (0x10, "shared/other/z", [b"Oshared/other/z\t4\n"]),
    ],
)
async def test_iterate_rows_under_path_then_terminator(served, flags, path, expected):
    _, p = served
    conn = await connect(p)
    line = b"I%d\t0\t%s\tu\n" % (flags, path.encode())
    replies = await ask(conn, line + b"Lshared/none\tu\n", len(expected) + 2)
    assert replies == expected + [b"\n", b"N\n"]


async def test_iterate_max_rows_and_failure(served):
    _, p = served
    conn = await connect(p)
    replies = await ask(conn, b"I1\t1\tshared/\tu\nI0\t0\tshared/boom/\tu\n", 3)
    assert replies == [b"Oshared/userdb/a@x\t1\n", b"\n", b"Fcannot\n"]


async def test_transactions(served):
    service, path = served
    conn = await connect(path)
    replies = await ask(
        conn,
        b"B1\tu@x\nS1\tshared/k\tv\x01t\nU1\tshared/gone\nA1\tshared/n\t3\nT1\t5\t6\nC1\n"
        b"B2\tu@x\nS2\tshared/refuse\t\nC2\n"
        b"B3\tu@x\nS3\tshared/k\tv\nR3\nC3\n"
        b"C99\n",
        4,
    )
    assert replies == [b"O\n", b"F\tcommit failed\n", b"F\tunknown transaction\n"] + [
        b"F\tunknown transaction\n"
    ]
    assert service.commits == [
        ("u@x", [("S", "shared/k", "v\t"), ("U", "shared/gone"), ("A", "shared/n", 3)]),
        ("u@x", [("S", "shared/refuse", "")]),
    ]


async def test_transaction_ids_are_per_connection(served):
    service, path = served
    one = await connect(path)
    two = await connect(path)
    one[1].write(b"B1\tone@x\nS1\tshared/k\tfrom-one\n")
    two[1].write(b"B1\ttwo@x\nS1\tshared/k\tfrom-two\n")
    await one[1].drain()
    await two[1].drain()
    assert await ask(two, b"C1\n", 1) == [b"O\n"]
    assert await ask(one, b"S1\tshared/k2\tmore\nC1\n", 1) == [b"O\n"]
    assert service.commits == [
        ("two@x", [("S", "shared/k", "from-two")]),
        ("one@x", [("S", "shared/k", "from-one"), ("S", "shared/k2", "more")]),
    ]


async def test_async_commit_keeps_order(served):
    service, path = served
    service.commit_gate = asyncio.Event()
    conn = await connect(path)
    conn[1].write(b"B1\tu\nS1\tshared/k\tv\nC1\nLshared/sync/after\tu\n")
    await conn[1].drain()
    await asyncio.sleep(0.05)
    assert not conn[0]._buffer  # nothing may overtake the pending commit
    service.commit_gate.set()
    assert [await conn[0].readline() for _ in range(2)] == [b"O\n", b"Oafter|u\n"]


async def test_bad_input_is_answered_and_connection_keeps_serving(served, caplog):
    _, path = served
    conn = await connect(path)
    other = await connect(path)
    caplog.set_level(logging.WARNING, "chatmaild.dictproxy")
    data = (
        b"L\n"  # bare L
        b"Zunknown\n"  # unknown: no reply owed
        b"\n"  # empty line: no reply owed
        b"Ix\ty\tz\n"
        b"S5\tno-transaction\tv\n"
        b"C\n"
        b"L" + b"p" * 100_000 + b"\tsecret\n"  # 100 KB line
        b"Lshared/sync/still\tu\n"
    )
    replies = await ask(conn, data, 5)
    assert replies[0].startswith(b"F")
    assert replies[1].startswith(b"F")
    assert replies[2].startswith(b"F\t")
    assert replies[3] == b"Fline too long\n"
    assert replies[4] == b"Ostill|u\n"
    assert await ask(other, b"Lshared/sync/other\tu\n", 1) == [b"Oother|u\n"]
    assert "secret" not in caplog.text and "ppp" not in caplog.text
    assert caplog.text.count("malformed") == 6


async def test_long_line_split_in_many_writes(served):
    _, path = served
    reader, writer = await connect(path)
    writer.write(b"Lshared/")
    for _ in range(40):
        writer.write(b"x" * 4096)
        await writer.drain()
    writer.write(b"\tu\nLshared/sync/ok\tu\n")
    assert await ask((reader, writer), b"", 2) == [b"Fline too long\n", b"Ook|u\n"]


async def test_client_disconnect_mid_request_harms_nobody(served):
    service, path = served
    conn = await connect(path)
    conn[1].write(b"Lshared/slow/50\tu\nB1\tu\nS1\tshared/k\t")
    await conn[1].drain()
    conn[1].close()
    other = await connect(path)
    assert await ask(other, b"Lshared/slow/1\tu\nLshared/sync/x\tu\n", 2) == [
        b"Oslow1\n",
        b"Ox|u\n",
    ]
    await asyncio.sleep(0.1)
    assert service.commits == []


async def test_backpressure_client_not_reading(served):
    """A client that writes a lot before reading gets every reply, in order."""
    _, path = served
    reader, writer = await connect(path)
    count = 100_000
    writer.write(b"".join(b"Lshared/sync/%d\tu\n" % i for i in range(count)))
    await asyncio.sleep(0.2)  # the server's write buffer fills up meanwhile
    drain = asyncio.ensure_future(writer.drain())
    for i in range(count):
        assert await asyncio.wait_for(reader.readline(), 5) == b"O%d|u\n" % i
    await drain


async def test_many_awaited_replies_in_order(served):
    _, path = served
    conn = await connect(path)
    count = 3000  # more than MAX_PENDING_REPLIES: reading pauses, then resumes
    data = b"".join(
        (b"Lshared/slow/%d\tu\n" % (i % 3)) if i % 2 else (b"Lshared/sync/%d\tu\n" % i)
        for i in range(count)
    )
    replies = await ask(conn, data, count)
    expected = [(b"Oslow%d\n" % (i % 3)) if i % 2 else (b"O%d|u\n" % i) for i in range(count)]
    assert replies == expected
