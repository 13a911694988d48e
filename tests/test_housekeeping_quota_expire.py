"""chatmail-quota-expire: trim one mailbox oldest-first to TARGET_MB."""

import os
import subprocess
import time

from housekeeping_tree import DAY, add_message, make_mailbox

from chatmaild.housekeeping.quota_expire import MIB, main, trim_mailbox

from conftest import daemon_argv, daemon_env

NOW = int(time.time())


def test_trims_oldest_first_to_target(tmp_path, capsys):
    box = make_mailbox(tmp_path, "user@chat.example", last_login=NOW)
    files = [add_message(box, MIB, NOW - (5 - i) * 3600, flags="") for i in range(5)]
    sub = add_message(box, MIB, NOW - 10 * DAY, folder=".DeltaChat/cur")  # the oldest of all
    assert main(["2", str(box)]) == 0
    err = capsys.readouterr().err
    assert err == f"quota-expire: removed 4 message(s) from user@chat.example ({4 * MIB} bytes)\n"
    assert not sub.exists()
    assert [p.exists() for p in files] == [False, False, False, True, True]  # recent mail too
    assert not (box / "maildirsize").exists()


def test_exactly_at_target_removes_nothing(tmp_path, capsys):
    box = make_mailbox(tmp_path, "user@chat.example", last_login=NOW)
    files = [add_message(box, MIB // 2, NOW - i * DAY) for i in range(4)]  # 2 MiB exactly
    assert main(["2", str(box)]) == 0
    assert "removed 0 message(s)" in capsys.readouterr().err
    assert all(p.exists() for p in files)
    assert (box / "maildirsize").exists()  # unchanged mailbox: quota file kept


def test_one_byte_over_target_removes_the_oldest(tmp_path):
    box = make_mailbox(tmp_path, "user@chat.example", last_login=NOW)
    newer = add_message(box, MIB, NOW - DAY)
    oldest = add_message(box, 1, NOW - 3 * DAY)
    older = add_message(box, MIB, NOW - 2 * DAY)
    removed, errors = trim_mailbox(box, 2 * MIB)
    assert [m.name for m in removed] == [oldest.name] and errors == []
    assert newer.exists() and older.exists()


def test_symlinks_in_mailbox_are_not_followed(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "cur").mkdir()
    target = outside / "cur" / "1.M1P1.host,S=99999999:2,S"
    target.write_text("x")
    box = make_mailbox(tmp_path, "user@chat.example", last_login=NOW)
    (box / ".Evil").symlink_to(outside)
    (box / "cur" / "2.M2P2.host,S=99999999:2,S").symlink_to(target)
    keep = add_message(box, MIB, NOW)
    removed, _ = trim_mailbox(box, 0)
    assert [m.name for m in removed] == [keep.name]
    assert target.exists()


def test_missing_mailbox_is_an_error_line(tmp_path, capsys):
    assert main(["10", str(tmp_path / "nobody@chat.example")]) == 1
    assert capsys.readouterr().err.startswith("quota-expire: cannot open")


def test_command_line_as_subprocess(tmp_path):
    box = make_mailbox(tmp_path, "user@chat.example", last_login=NOW)
    add_message(box, 3 * MIB, NOW - DAY)
    add_message(box, MIB, NOW)
    proc = subprocess.run(
        daemon_argv("chatmaild.housekeeping.quota_expire", "1", box),
        env=daemon_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0
    assert proc.stderr.startswith("quota-expire: removed 1 message(s) from user@chat.example")
    assert len(os.listdir(box / "cur")) == 1
