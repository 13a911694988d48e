"""doveauth and lastlogin behind a real Dovecot 2.3 (private instance, see dovecot_instance.py)."""

import concurrent.futures
import imaplib
import os
import pwd
import time

import pytest
from dovecot_instance import MAIL_DOMAIN, DovecotInstance

from chatmaild.doveauth import hashing
from chatmaild.mailbox import day_timestamp

from conftest import require, require_tool


def _vmail_exists():
    try:
        pwd.getpwnam("vmail")
        return True
    except KeyError:
        return False


@pytest.fixture(scope="module")
def dovecot():
    require_tool("dovecot", "doveadm", "openssl")
    require(os.getuid() == 0, "root (Dovecot instance with vmail-owned daemons)")
    require(_vmail_exists(), "system user vmail")
    with DovecotInstance() as instance:
        instance.start()
        yield instance


def addr(local):
    return f"{local}@{MAIL_DOMAIN}"


def stored_hash(dovecot, address):
    path = dovecot.mailboxes_dir / address / "password"
    return path.read_text() if path.exists() else None


def test_auth_test_creates_then_checks_password(dovecot):
    user = addr("firstlog1")
    assert stored_hash(dovecot, user) is None
    assert dovecot.auth_test(user, "correct-horse")
    assert stored_hash(dovecot, user).startswith("{SHA512-CRYPT}$6$")
    assert dovecot.auth_test(user, "correct-horse")
    assert not dovecot.auth_test(user, "wrong-horse1")
    assert f"Created address: {user}" in dovecot.daemon_log("chatmaild.doveauth")


@pytest.mark.parametrize(
    "local, password",
    [
        ("quotepass", 'pass"word"1'),
        ("aposspass", "pass'word'1"),
        ("bslshpass", "pass\\word\\1"),
        ("slashpass", "pass/word/1"),
        ("unicodepw", "pässwörd✓ünï"),
        ("mixedpass", "\\\"'/✓-mixed"),
    ],
)
def test_special_passwords(dovecot, local, password):
    user = addr(local)
    assert dovecot.auth_test(user, password)
    assert hashing.verify_password(password, stored_hash(dovecot, user))
    assert dovecot.auth_test(user, password)
    assert not dovecot.auth_test(user, password[:-1] + "X")


def test_tab_in_password_is_refused_by_dovecot_itself(dovecot):
    """Dovecot 2.3 drops a password with a tab before any passdb lookup ("illegal chars").

    doveauth itself handles tabs (\x01-escaped on the wire): see test_doveauth_service.py.
    """
    user = addr("tabbypass")
    assert not dovecot.auth_test(user, "pass\tword\t1")
    assert stored_hash(dovecot, user) is None
    assert "password having illegal chars" in dovecot.log()


def test_doveadm_user_lists_accounts(dovecot):
    users = [addr(f"listed{i:03d}") for i in range(3)]
    for user in users:
        assert dovecot.auth_test(user, "listing-pass")
    result = dovecot.doveadm("user", "*")
    assert result.returncode == 0, result.stderr
    listed = set(result.stdout.split())
    assert set(users) <= listed
    assert listed <= set(os.listdir(dovecot.mailboxes_dir))


def test_imap_login_creates_then_reuses_and_records_last_login(dovecot):
    user = addr("imapuser1")
    imap = dovecot.imap_login(user, "imap-password")
    assert imap.select("INBOX")[0] == "OK"
    imap.logout()
    first = stored_hash(dovecot, user)
    assert first is not None

    # pretend the last login was long ago; a new IMAP login moves it to today
    password_path = dovecot.mailboxes_dir / user / "password"
    os.utime(password_path, (86400 * 100, 86400 * 100))
    imap = dovecot.imap_login(user, "imap-password")
    imap.logout()
    today = day_timestamp(time.time())
    deadline = time.monotonic() + 10
    while int(os.stat(password_path).st_mtime) != today and time.monotonic() < deadline:
        time.sleep(0.05)
    assert int(os.stat(password_path).st_mtime) in (today, day_timestamp(time.time()))
    assert stored_hash(dovecot, user) == first

    with pytest.raises(imaplib.IMAP4.error):
        dovecot.imap_login(user, "not-the-password")


@pytest.mark.parametrize(
    "user, password",
    [
        (addr("short123"), "long-enough-pw"),  # local part 8 < 9
        (addr("toolong123"), "long-enough-pw"),  # 10 > 9
        (addr("bad+chars"), "long-enough-pw"),
        (addr("unterm_ok"), "short"),  # password too short
        ("someone12@other.example", "long-enough-pw"),  # not our domain
        (addr("../escape"), "long-enough-pw"),
    ],
)
def test_creation_rules_refuse(dovecot, user, password):
    assert not dovecot.auth_test(user, password)
    assert not os.path.exists(dovecot.mailboxes_dir / user)
    assert not (dovecot.dir / "escape@chat.example").exists()


def test_nocreate_marker_refuses(dovecot):
    user = addr("nocreate1")
    dovecot.nocreate_file.touch()
    try:
        assert not dovecot.auth_test(user, "long-enough-pw")
    finally:
        dovecot.nocreate_file.unlink()
    assert stored_hash(dovecot, user) is None
    assert dovecot.auth_test(user, "long-enough-pw")


@pytest.mark.parametrize(
    "limit",
    [
        {"max_load_1m": -1},
        {"min_available_memory": "100000G"},
        {"min_free_disk_space": "100000G"},
    ],
    ids=["load", "memory", "disk"],
)
def test_resource_limits_refuse(dovecot, limit):
    existing = addr("existing1")
    assert dovecot.auth_test(existing, "long-enough-pw")
    dovecot.write_ini(**limit)
    dovecot.start_daemon("chatmaild.doveauth", dovecot.doveauth_socket)
    try:
        user = addr("limited" + list(limit)[0][:2])
        assert not dovecot.auth_test(user, "long-enough-pw")
        assert stored_hash(dovecot, user) is None
        assert "registration rejected: " in dovecot.daemon_log("chatmaild.doveauth")
        assert dovecot.auth_test(existing, "long-enough-pw")  # existing accounts still work
    finally:
        dovecot.write_ini()
        dovecot.start_daemon("chatmaild.doveauth", dovecot.doveauth_socket)


def test_concurrent_first_logins_through_dovecot(dovecot):
    user = addr("parallel1")
    passwords = [f"parallel-pass-{i:02d}" for i in range(20)]
    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        accepted = list(pool.map(lambda pw: dovecot.auth_test(user, pw), passwords))
    stored = stored_hash(dovecot, user)
    winners = [pw for pw in passwords if hashing.verify_password(pw, stored)]
    assert len(winners) == 1
    assert accepted.count(True) == 1 and accepted[passwords.index(winners[0])]
    loser = next(pw for pw in passwords if pw != winners[0])
    assert dovecot.auth_test(user, winners[0]) and not dovecot.auth_test(user, loser)
