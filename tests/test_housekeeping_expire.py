"""chatmail-expire over synthetic mailbox trees: every rule, dry run, symlinks, vanishing files."""

import os
import subprocess
import time

import pytest
from housekeeping_tree import DAY, KIB, add_message, make_mailbox, message_name, snapshot

from chatmaild.housekeeping import expire as expire_mod
from chatmaild.housekeeping import scan as scan_mod
from chatmaild.housekeeping.expire import Expirer, main
from chatmaild.housekeeping.expireplan import ExpirePolicy
from chatmaild.housekeeping.scan import open_root

from conftest import daemon_argv, daemon_env, write_ini

NOW = int(time.time()) // DAY * DAY + 12 * 3600  # an integer "now" for exact boundaries
POLICY = ExpirePolicy(
    mails_after_days=20, large_after_days=7, inactive_after_days=90, max_mailbox_size=10_000_000
)


def run_expirer(root, dry=False, now=NOW, policy=POLICY, maxnum=None):
    fd = open_root(root)
    try:
        return Expirer(fd, policy, now, dry=dry).run(maxnum)
    finally:
        os.close(fd)


@pytest.fixture
def root(tmp_path):
    path = tmp_path / "mailboxes"
    path.mkdir()
    return path


@pytest.fixture
def outside(tmp_path):
    """A directory outside mailboxes_dir with old mail-like content that must survive."""
    path = tmp_path / "outside"
    path.mkdir()
    for sub in ("cur", "new"):
        (path / sub).mkdir()
        victim = path / sub / "1.M1P1.host,S=999999:2,S"
        victim.write_text("precious")
        os.utime(victim, (NOW - 400 * DAY, NOW - 400 * DAY))
    (path / "precious.txt").write_text("keep me")
    os.utime(path / "precious.txt", (NOW - 400 * DAY, NOW - 400 * DAY))
    return path


def test_inactive_mailbox_boundary(root):
    kept = make_mailbox(root, "kept@chat.example", last_login=NOW - 90 * DAY)
    gone = make_mailbox(root, "gone@chat.example", last_login=NOW - 90 * DAY - 1)
    add_message(gone, 10, NOW - DAY)
    nopass = make_mailbox(root, "nopass@chat.example", last_login=None)
    stats = run_expirer(root)
    assert kept.exists() and nopass.exists()
    assert not gone.exists()
    assert (stats.mailboxes, stats.mailboxes_removed) == (3, 1)
    assert stats.errors == 0


def test_old_mail_boundary_in_cur_new_and_subfolders(root):
    box = make_mailbox(root, "user@chat.example", last_login=NOW)
    keep = [
        add_message(box, 100, NOW - 20 * DAY),
        add_message(box, 100, NOW - 20 * DAY, folder="new"),
        add_message(box, 100, NOW - 20 * DAY, folder=".DeltaChat/cur"),
    ]
    drop = [
        add_message(box, 100, NOW - 20 * DAY - 1),
        add_message(box, 100, NOW - 20 * DAY - 1, folder="new"),
        add_message(box, 100, NOW - 20 * DAY - 1, folder=".DeltaChat/cur"),
        add_message(box, 100, NOW - 30 * DAY, folder=".Trash/new"),
    ]
    tmpfile = box / "tmp" / "1.M1P1.host,S=5"
    tmpfile.touch()
    os.utime(tmpfile, (NOW - 100 * DAY,) * 2)
    stats = run_expirer(root)
    assert all(p.exists() for p in keep)
    assert not any(p.exists() for p in drop)
    assert tmpfile.exists()  # tmp/ is Dovecot's business
    assert stats.removed_old == 4 and stats.removed == 4
    assert not (box / "maildirsize").exists()
    # the Maildir skeleton of a live account stays, even where it was emptied
    for sub in ("cur", "new", "tmp", ".Trash/new", ".DeltaChat/cur"):
        assert (box / sub).is_dir()


def test_large_seen_mail_boundary(root):
    box = make_mailbox(root, "user@chat.example", last_login=NOW)
    old = NOW - 7 * DAY - 1
    keep = [
        add_message(box, 200 * KIB, old),  # exactly 200 KiB
        add_message(box, 200 * KIB + 1, old, flags=""),  # unseen
        add_message(box, 200 * KIB + 1, old, folder="new"),  # new/ is never seen
        add_message(box, 200 * KIB + 1, NOW - 7 * DAY),  # exactly 7 days
    ]
    drop = [add_message(box, 200 * KIB + 1, old), add_message(box, 5_000_000, old, flags="RS")]
    stats = run_expirer(root)
    assert all(p.exists() for p in keep)
    assert not any(p.exists() for p in drop)
    assert stats.removed_large == 2


def test_unfetched_large_mail_with_flags_in_new_is_not_large_expired(root):
    """A `:2,S` name in new/ is still unfetched: only the general age rule removes it."""
    box = make_mailbox(root, "user@chat.example", last_login=NOW)
    paths = {}
    for age in (8 * DAY, 21 * DAY):
        path = box / "new" / message_name(5_000_000, NOW - age, flags="S")
        path.touch()
        os.utime(path, (NOW - age, NOW - age))
        paths[age] = path
    stats = run_expirer(root)
    assert paths[8 * DAY].exists() and not paths[21 * DAY].exists()
    assert (stats.removed_large, stats.removed_old) == (0, 1)


def test_trim_to_70_percent_boundary(root):
    policy = ExpirePolicy(20, 7, 90, max_mailbox_size=1_000_000)  # target 700,000 bytes
    at = make_mailbox(root, "at@chat.example", last_login=NOW)
    at_files = [add_message(at, 100_000, NOW - (10 - i) * DAY, flags="") for i in range(7)]
    over = make_mailbox(root, "over@chat.example", last_login=NOW)
    over_files = [add_message(over, 100_000, NOW - (10 - i) * DAY, flags="") for i in range(7)]
    over_files.append(add_message(over, 1, NOW - 2 * DAY, flags=""))
    stats = run_expirer(root, policy=policy)
    assert all(p.exists() for p in at_files)
    assert (at / "maildirsize").exists()  # untouched mailbox keeps its quota file
    assert not over_files[0].exists()
    assert all(p.exists() for p in over_files[1:])
    assert not (over / "maildirsize").exists()
    assert stats.removed_trimmed == 1


def test_trim_never_touches_the_last_24_hours(root):
    policy = ExpirePolicy(20, 7, 90, max_mailbox_size=1_000_000)
    box = make_mailbox(root, "full@chat.example", last_login=NOW)
    older = add_message(box, 500_000, NOW - DAY - 1, flags="")
    exactly = add_message(box, 500_000, NOW - DAY, flags="")
    recent = add_message(box, 500_000, NOW - 60, flags="")
    stats = run_expirer(root, policy=policy)
    assert not older.exists()
    assert exactly.exists() and recent.exists()  # still over 70%, but all recent
    assert stats.removed_trimmed == 1


def test_dry_run_changes_nothing(root, outside):
    box = make_mailbox(root, "user@chat.example", last_login=NOW)
    add_message(box, 100, NOW - 30 * DAY)
    add_message(box, 300 * KIB, NOW - 10 * DAY)
    gone = make_mailbox(root, "gone@chat.example", last_login=NOW - 200 * DAY)
    add_message(gone, 100, NOW - 30 * DAY)
    (box / "cur" / "link").symlink_to(outside / "precious.txt")
    before = snapshot(root.parent)
    stats = run_expirer(root, dry=True)
    assert snapshot(root.parent) == before
    assert (stats.mailboxes_removed, stats.removed_old, stats.removed_large) == (1, 1, 1)


def test_symlinks_pointing_outside_are_never_followed(root, outside):
    box = make_mailbox(root, "user@chat.example", last_login=NOW)
    add_message(box, 100, NOW - 30 * DAY)
    # a file symlink inside cur/, dated old (the link's own mtime)
    link = box / "cur" / "2.M2P2.host,S=999999:2,S"
    link.symlink_to(outside / "cur" / "1.M1P1.host,S=999999:2,S")
    os.utime(link, (NOW - 400 * DAY,) * 2, follow_symlinks=False)
    # a subfolder that is a symlink to an outside directory
    (box / ".Evil").symlink_to(outside)
    # a second mailbox whose cur/ and new/ are symlinks
    box2 = root / "user2@chat.example"
    box2.mkdir()
    (box2 / "cur").symlink_to(outside / "cur")
    (box2 / "new").symlink_to(outside / "new")
    # a mailbox that is itself a symlink, with an ancient "password"
    (outside / "password").write_text("x")
    os.utime(outside / "password", (NOW - 400 * DAY,) * 2)
    (root / "evil@chat.example").symlink_to(outside)
    # an inactive mailbox holding a directory symlink: the link goes, the target stays
    gone = make_mailbox(root, "gone@chat.example", last_login=NOW - 400 * DAY)
    (gone / "escape").symlink_to(outside)
    (gone / "cur" / "file-link").symlink_to(outside / "precious.txt")

    outside_before = snapshot(outside)
    stats = run_expirer(root)
    assert snapshot(outside) == outside_before
    assert (outside / "precious.txt").read_text() == "keep me"
    assert link.is_symlink()  # not a regular file: not a message, left alone
    assert (root / "evil@chat.example").is_symlink()
    assert not gone.exists()
    assert stats.mailboxes == 3  # user, user2, gone: the symlinked mailbox is skipped
    assert stats.removed_old == 1
    assert stats.errors == 0


def test_folder_swapped_for_symlink_after_scan(root, outside, monkeypatch):
    box = make_mailbox(root, "user@chat.example", last_login=NOW)
    add_message(box, 100, NOW - 30 * DAY, folder=".Sub/cur")
    real_scan = expire_mod.scan_mailbox

    def scan_then_swap(*args, **kwargs):
        result = real_scan(*args, **kwargs)
        os.rename(box / ".Sub", box.parent.parent / "moved-away")
        (box / ".Sub").symlink_to(outside)
        return result

    monkeypatch.setattr(expire_mod, "scan_mailbox", scan_then_swap)
    outside_before = snapshot(outside)
    stats = run_expirer(root)
    assert snapshot(outside) == outside_before
    assert stats.removed == 0
    assert stats.errors == 1  # refused (ELOOP), reported, and the run went on


def test_files_vanishing_between_scan_and_delete(root, monkeypatch):
    box = make_mailbox(root, "user@chat.example", last_login=NOW)
    doomed = [add_message(box, 100, NOW - 30 * DAY) for _ in range(3)]
    real_scan = expire_mod.scan_mailbox

    def scan_then_vanish(*args, **kwargs):
        result = real_scan(*args, **kwargs)
        doomed[0].unlink()  # Dovecot expunged it meanwhile
        return result

    monkeypatch.setattr(expire_mod, "scan_mailbox", scan_then_vanish)
    stats = run_expirer(root)
    assert stats.vanished == 1 and stats.removed_old == 2 and stats.errors == 0
    assert not any(p.exists() for p in doomed)


def test_files_and_mailboxes_vanishing_during_scan(root, monkeypatch):
    box = make_mailbox(root, "user@chat.example", last_login=NOW)
    doomed = add_message(box, 100, NOW - 30 * DAY)
    survivor = add_message(box, 100, NOW - 30 * DAY)
    real_parse = scan_mod.parse_message_name

    def parse_and_vanish(name):
        if name == doomed.name:
            doomed.unlink()  # gone between readdir and lstat
        return real_parse(name)

    monkeypatch.setattr(scan_mod, "parse_message_name", parse_and_vanish)
    real_names = expire_mod.iter_mailbox_names

    def names_with_a_ghost(fd, maxnum):
        yield "ghost@chat.example"  # listed, then removed before it was opened
        yield from real_names(fd, maxnum)

    monkeypatch.setattr(expire_mod, "iter_mailbox_names", names_with_a_ghost)
    stats = run_expirer(root)
    assert stats.errors == 0
    assert stats.mailboxes == 1 and stats.messages == 1 and stats.removed_old == 1
    assert not survivor.exists()


def test_mailbox_without_password_loses_emptied_dirs(root):
    dead = make_mailbox(root, "dead@chat.example", last_login=None, maildirsize=False)
    (dead / "enforceE2EEincoming").unlink()
    add_message(dead, 100, NOW - 30 * DAY)
    add_message(dead, 100, NOW - 30 * DAY, folder=".Old/cur")
    halfdead = make_mailbox(root, "half@chat.example", last_login=None)
    add_message(halfdead, 100, NOW - 30 * DAY)
    keep = add_message(halfdead, 100, NOW - DAY, folder="new")
    run_expirer(root)
    assert not dead.exists()
    assert keep.exists() and (halfdead / "enforceE2EEincoming").exists()
    assert not (halfdead / "cur").exists()  # emptied, not a live account
    assert (halfdead / "new").is_dir()


def test_login_between_scan_and_removal_saves_the_mailbox(root, monkeypatch):
    box = make_mailbox(root, "late@chat.example", last_login=NOW - 200 * DAY)
    real_scan = expire_mod.scan_mailbox

    def scan_then_login(*args, **kwargs):
        result = real_scan(*args, **kwargs)
        os.utime(box / "password", (NOW, NOW))
        return result

    monkeypatch.setattr(expire_mod, "scan_mailbox", scan_then_login)
    stats = run_expirer(root)
    assert box.exists() and stats.mailboxes_removed == 0


def test_maxnum_limits_mailboxes(root):
    for i in range(5):
        box = make_mailbox(root, f"u{i}@chat.example", last_login=NOW)
        add_message(box, 100, NOW - 30 * DAY)
    (root / "pending_notifications").mkdir()
    stats = run_expirer(root, maxnum=2)
    assert stats.mailboxes == 2 and stats.removed_old == 2


def make_config(tmp_path, root):
    return write_ini(tmp_path / "chatmail.ini", mailboxes_dir=root, max_mailbox_size="1M")


def test_main_dry_run_then_remove(tmp_path, root, capsys):
    ini = make_config(tmp_path, root)
    now = time.time()
    box = make_mailbox(root, "user@chat.example", last_login=now)
    old = add_message(box, 100, now - 25 * DAY)
    gone = make_mailbox(root, "gone@chat.example", last_login=now - 95 * DAY)

    assert main([str(ini), "-v"]) == 0
    out, err = capsys.readouterr()
    assert out.count("\n") == 1 and "would remove 1 of 2 mailboxes" in out
    assert "1 of 1 messages" in out and "dry run" in out
    assert "would remove mailbox gone@chat.example" in err and old.name in err
    assert old.exists() and gone.exists()

    # --days 10: evaluated as of 10 days ago the message is 15 days old, the login 85
    assert main([str(ini), "--days", "10", "--remove"]) == 0
    out, _ = capsys.readouterr()
    assert "removed 0 of 2 mailboxes and 0 of 1 messages" in out
    assert old.exists() and gone.exists()

    assert main([str(ini), "--remove"]) == 0
    out, _ = capsys.readouterr()
    assert "removed 1 of 2 mailboxes and 1 of 1 messages" in out and "dry run" not in out
    assert not old.exists() and not gone.exists()


def test_main_missing_mailboxes_dir(tmp_path, capsys):
    ini = make_config(tmp_path, tmp_path / "nowhere")
    assert main([str(ini), "--remove"]) == 0
    out, err = capsys.readouterr()
    assert "removed 0 of 0 mailboxes" in out and "no mailboxes" in err


def test_main_legacy_mailboxes_dir_argument(tmp_path, root, capsys):
    ini = make_config(tmp_path, tmp_path / "elsewhere")
    box = make_mailbox(root, "user@chat.example", last_login=time.time())
    old = add_message(box, 100, time.time() - 25 * DAY)
    assert main([str(ini), str(root), "-v", "--remove"]) == 0
    assert "and 1 of 1 messages" in capsys.readouterr().out
    assert not old.exists()


def test_main_bad_config_exits_2(tmp_path):
    ini = write_ini(tmp_path / "bad.ini", max_mailbox_size="huge")
    with pytest.raises(SystemExit) as exc:
        main([str(ini)])
    assert exc.value.code == 2


def test_command_line_as_subprocess(tmp_path, root):
    ini = make_config(tmp_path, root)
    box = make_mailbox(root, "user@chat.example", last_login=time.time())
    old = add_message(box, 100, time.time() - 25 * DAY)
    proc = subprocess.run(
        daemon_argv("chatmaild.housekeeping.expire", ini, "--remove"),
        env=daemon_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "removed 0 of 1 mailboxes and 1 of 1 messages" in proc.stdout
    assert not old.exists()
