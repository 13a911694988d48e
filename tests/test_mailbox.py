import json
import multiprocessing
import os
import threading
import time

import pytest

from chatmaild.mailbox import (
    InvalidAddress,
    Mailboxes,
    address_problem,
    day_timestamp,
    write_bytes_atomic,
)

DOMAIN = "chat.example"


@pytest.fixture
def boxes(tmp_path):
    return Mailboxes(tmp_path / "mailboxes", DOMAIN)


@pytest.mark.parametrize(
    "addr",
    [
        "../x@chat.example",
        "a/b@chat.example",
        "x@other.example",
        "x@chat.example.evil",
        "x@sub.chat.example",
        "a@b@chat.example",
        "nodomain",
        "x\0@chat.example",
        "x@chat.example\0",
        "",
        "@chat.example",
        ".@chat.example",
        "..@chat.example",
        ".hidden@chat.example",
        "x@../chat.example",
        "x@",
        "a\\b@chat.example",
        "x\n@chat.example",
        "x\t@chat.example",
        "a" * 300 + "@chat.example",
        None,
    ],
)
def test_refused_addresses(boxes, addr, tmp_path):
    with pytest.raises(InvalidAddress):
        boxes.check_address(addr)
    with pytest.raises(InvalidAddress):
        boxes.user(addr)
    assert not (tmp_path / "mailboxes").exists()


@pytest.mark.parametrize(
    "addr", ["abc123def@chat.example", "a.b-c_d@chat.example", "x@CHAT.example"]
)
def test_accepted_addresses(boxes, addr):
    assert boxes.check_address(addr) == addr
    assert address_problem(addr, DOMAIN) is None


def test_ipv4_domain():
    boxes = Mailboxes("/nonexistent", "[1.2.3.4]")
    assert boxes.check_address("u@[1.2.3.4]")
    with pytest.raises(InvalidAddress):
        boxes.check_address("u@1.2.3.4")


def test_create_and_read_password(boxes):
    user = boxes.user("alice1234@chat.example")
    assert user.read_password() is None
    assert user.create("{SHA512-CRYPT}$6$abc") == "{SHA512-CRYPT}$6$abc"
    assert user.read_password() == "{SHA512-CRYPT}$6$abc"
    # byte-compatible with the existing relay: the hash alone, no newline
    assert user.password_path.read_bytes() == b"{SHA512-CRYPT}$6$abc"
    assert user.enforces_e2ee()
    assert user.enforce_path.read_bytes() == b""
    # a second creation keeps the first hash
    assert user.create("{SHA512-CRYPT}$6$other") == "{SHA512-CRYPT}$6$abc"
    assert sorted(p.name for p in user.dir.iterdir()) == ["enforceE2EEincoming", "password"]


def test_empty_password_file_is_no_account(boxes):
    user = boxes.user("empty1234@chat.example")
    user.dir.mkdir(parents=True)
    user.password_path.write_bytes(b"")
    assert user.read_password() is None
    assert user.create("{SHA512-CRYPT}$6$new") == "{SHA512-CRYPT}$6$new"
    assert user.read_password() == "{SHA512-CRYPT}$6$new"


def _create_in_process(args):
    mailboxes_dir, addr, password_hash, start = args
    while time.time() < start:
        pass
    return Mailboxes(mailboxes_dir, DOMAIN).user(addr).create(password_hash)


def test_concurrent_creation_exactly_once(boxes):
    addr = "race12345@chat.example"
    start = time.time() + 0.5
    jobs = [(boxes.dir, addr, f"{{SHA512-CRYPT}}$6$hash{i}", start) for i in range(12)]
    with multiprocessing.get_context("fork").Pool(6) as pool:
        results = pool.map(_create_in_process, jobs)
    stored = boxes.user(addr).read_password()
    assert set(results) == {stored}
    assert [p.name for p in boxes.user(addr).dir.iterdir() if p.name.endswith(".tmp")] == []


def test_atomic_password_write_never_partial(boxes):
    user = boxes.user("atomic123@chat.example")
    values = [("{SHA512-CRYPT}$6$" + c * 5000) for c in "abcdef"]
    user.write_password(values[0])
    stop = threading.Event()
    seen = set()

    def reader():
        while not stop.is_set():
            seen.add(user.password_path.read_text())

    t = threading.Thread(target=reader)
    t.start()
    try:
        for i in range(300):
            user.write_password(values[i % len(values)])
    finally:
        stop.set()
        t.join()
    assert seen <= set(values)
    assert [p.name for p in user.dir.iterdir()] == ["password"]


def test_write_bytes_atomic_cleans_up_on_error(tmp_path):
    target = tmp_path / "f"
    with pytest.raises(TypeError):
        write_bytes_atomic(target, "not bytes")
    assert list(tmp_path.iterdir()) == []


def test_last_login_day_granularity(boxes):
    user = boxes.user("login1234@chat.example")
    assert user.set_last_login(time.time()) is False  # no account yet
    assert user.get_last_login() is None
    user.create("{SHA512-CRYPT}$6$x")
    ts = 1_700_000_123
    assert user.set_last_login(ts) is True
    assert user.get_last_login() == day_timestamp(ts) == 1_699_920_000
    assert user.set_last_login(ts + 3600) is False  # same day: untouched
    assert user.set_last_login(ts + 86400) is True
    assert user.get_last_login() == 1_699_920_000 + 86400


def test_enforce_marker(boxes):
    user = boxes.user("mark12345@chat.example")
    assert not user.enforces_e2ee()
    user.create("{SHA512-CRYPT}$6$x")
    assert user.enforces_e2ee()
    user.allow_incoming_cleartext()
    assert not user.enforces_e2ee()
    user.allow_incoming_cleartext()


def test_metadata_existing_relay_format(boxes):
    user = boxes.user("meta12345@chat.example")
    user.dir.mkdir(parents=True)
    user.metadata_path.write_text('{"devicetoken": {"tok1": 1700000000, "tok2": 1700000100}}')
    assert user.read_metadata() == {"devicetoken": {"tok1": 1700000000, "tok2": 1700000100}}
    with user.modify_metadata() as data:
        data["devicetoken"]["tok3"] = 1700000200
    assert json.loads(user.metadata_path.read_text()) == {
        "devicetoken": {"tok1": 1700000000, "tok2": 1700000100, "tok3": 1700000200}
    }
    # written as the existing relay writes it: json.dumps with default separators
    assert user.metadata_path.read_text() == json.dumps(
        {"devicetoken": {"tok1": 1700000000, "tok2": 1700000100, "tok3": 1700000200}}
    )


def test_metadata_legacy_list_converted_on_write(boxes):
    user = boxes.user("legacy123@chat.example")
    user.dir.mkdir(parents=True)
    user.metadata_path.write_text('{"devicetoken": ["a", "b"]}')
    assert user.read_metadata(now=1234) == {"devicetoken": {"a": 1234, "b": 1234}}
    with user.modify_metadata(now=5678):
        pass
    assert json.loads(user.metadata_path.read_text()) == {"devicetoken": {"a": 5678, "b": 5678}}


@pytest.mark.parametrize("content", [b"{not json", b"[1, 2]", b"\xff\xfe", b'"str"'])
def test_metadata_corrupt_reads_empty(boxes, content, caplog):
    user = boxes.user("corrupt12@chat.example")
    user.dir.mkdir(parents=True)
    user.metadata_path.write_bytes(content)
    assert user.read_metadata() == {}
    assert "corrupt metadata.json" in caplog.text


def test_metadata_failed_modify_writes_nothing(boxes):
    user = boxes.user("nowrite12@chat.example")
    with pytest.raises(RuntimeError):
        with user.modify_metadata() as data:
            data["devicetoken"] = {"x": 1}
            raise RuntimeError
    assert not user.metadata_path.exists()


def _add_tokens(args):
    mailboxes_dir, addr, prefix, count = args
    user = Mailboxes(mailboxes_dir, DOMAIN).user(addr)
    for i in range(count):
        with user.modify_metadata() as data:
            data.setdefault("devicetoken", {})[f"{prefix}-{i}"] = i


def test_concurrent_metadata_updates_from_processes_lose_nothing(boxes):
    addr = "multi1234@chat.example"
    jobs = [(boxes.dir, addr, f"p{n}", 40) for n in range(4)]
    with multiprocessing.get_context("fork").Pool(4) as pool:
        pool.map(_add_tokens, jobs)
    tokens = boxes.user(addr).read_metadata()["devicetoken"]
    assert len(tokens) == 160


def test_iter_addresses(boxes, tmp_path):
    for addr in ["a1@chat.example", "b2@chat.example"]:
        boxes.user(addr).create("{SHA512-CRYPT}$6$x")
    boxes.pending_notifications_dir.mkdir()
    (boxes.dir / "stray-file@chat.example").write_text("")
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(outside, boxes.dir / "link@chat.example")
    assert sorted(boxes.iter_addresses()) == ["a1@chat.example", "b2@chat.example"]


def test_iter_addresses_missing_dir(tmp_path):
    assert list(Mailboxes(tmp_path / "none", DOMAIN).iter_addresses()) == []


def test_create_makes_the_mailboxes_directory_if_missing(tmp_path):
    boxes = Mailboxes(tmp_path / "not" / "yet", DOMAIN)
    user = boxes.user("first1234@chat.example")
    assert user.create("{SHA512-CRYPT}$6$abc") == "{SHA512-CRYPT}$6$abc"
    assert user.read_password() == "{SHA512-CRYPT}$6$abc" and user.enforces_e2ee()
    assert oct(user.password_path.stat().st_mode & 0o777) == "0o600"
