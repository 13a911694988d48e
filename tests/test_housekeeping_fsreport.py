"""chatmail-fsreport: the human report and the Prometheus textfile."""

import os
import time

import pytest
from housekeeping_tree import DAY, KIB, add_message, make_mailbox, snapshot
from prometheus_client.parser import text_string_to_metric_families

from chatmaild.housekeeping.fsreport import TEXTFILE_NAME, build_report, main, write_textfile
from chatmaild.housekeeping.report import MIB

from conftest import write_ini

NOW = int(time.time())


def samples(text):
    result = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            key = s.name + "".join(f"{{{k}={v}}}" for k, v in sorted(s.labels.items()))
            result[key] = s.value
    return result


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "mailboxes"
    root.mkdir()
    a = make_mailbox(root, "today@chat.example", last_login=NOW - 3600)
    add_message(a, 100 * KIB, NOW - DAY)  # cur, seen
    add_message(a, 300 * KIB, NOW - DAY, flags="")  # cur, unseen
    add_message(a, 2 * KIB, NOW, folder="new")
    add_message(a, 50 * KIB, NOW, folder=".DeltaChat/cur")
    b = make_mailbox(root, "week@chat.example", last_login=NOW - 5 * DAY)
    add_message(b, 20 * MIB, NOW - 2 * DAY)  # over a 10M quota
    make_mailbox(root, "old@chat.example", last_login=NOW - 100 * DAY)
    make_mailbox(root, "never@chat.example", last_login=None)
    (root / "pending_notifications").mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "cur").mkdir()
    (outside / "cur" / "1.M1.host,S=999999999:2,S").touch()
    (a / ".Evil").symlink_to(outside)
    (root / "link@chat.example").symlink_to(outside)
    return root


def test_report_counts(tree):
    report = build_report(tree, NOW, max_mailbox_size=10 * MIB)
    assert report.mailboxes == 4
    assert report.messages == 5 and report.seen_messages == 3
    assert report.message_bytes == (100 + 300 + 2 + 50) * KIB + 20 * MIB
    assert report.logins == {"1d": 1, "7d": 1, "30d": 0, "90d": 0, "older": 1, "never": 1}
    assert report.over_quota == 1
    assert report.extra_bytes > 0


def test_report_mdir_and_maxnum(tree):
    cur = build_report(tree, NOW, 10 * MIB, mdir="cur")
    assert cur.messages == 4 and cur.message_bytes == (100 + 300 + 50) * KIB + 20 * MIB
    new = build_report(tree, NOW, 10 * MIB, mdir="new")
    assert new.messages == 1 and new.message_bytes == 2 * KIB
    assert build_report(tree, NOW, 10 * MIB, maxnum=2).mailboxes == 2


def test_main_prints_report_and_writes_textfile(tmp_path, tree, capsys):
    ini = write_ini(tmp_path / "chatmail.ini", mailboxes_dir=tree, max_mailbox_size="10M")
    textdir = tmp_path / "textfile"
    textdir.mkdir()
    (textdir / TEXTFILE_NAME).write_text("stale")
    before = snapshot(tree)
    assert main([str(ini), "--textfile", str(textdir)]) == 0
    assert snapshot(tree) == before  # read-only
    out = capsys.readouterr().out
    assert "mailboxes     : 4\n" in out
    assert "within 1d     :         1 mailboxes" in out
    assert "never         :         1 mailboxes" in out
    assert "over quota    :         1 mailboxes" in out
    assert os.listdir(textdir) == [TEXTFILE_NAME]  # no temp file left behind
    prom = (textdir / TEXTFILE_NAME).read_text()
    got = samples(prom)
    assert got["chatmail_fsreport_mailboxes"] == 4
    assert got["chatmail_fsreport_messages"] == 5
    assert got["chatmail_fsreport_message_bytes"] == (452 * KIB) + 20 * MIB
    assert got["chatmail_fsreport_mailboxes_by_last_login{last_login=never}"] == 1
    assert got["chatmail_fsreport_mailboxes_by_last_login{last_login=older}"] == 1
    assert got["chatmail_fsreport_mailboxes_over_quota"] == 1
    assert got["chatmail_fsreport_mailbox_size_bytes_count"] == 4
    assert got["chatmail_fsreport_mailbox_size_bytes_bucket{le=+Inf}"] == 4
    assert got["chatmail_fsreport_mailbox_size_bytes_bucket{le=1048576}"] == 3
    assert got["chatmail_fsreport_message_size_bytes_bucket{le=204800}"] == 3
    assert got["chatmail_fsreport_message_size_bytes_count"] == 5
    assert (textdir / TEXTFILE_NAME).stat().st_mode & 0o777 == 0o644


def test_main_mdir_new(tmp_path, tree, capsys):
    ini = write_ini(tmp_path / "chatmail.ini", mailboxes_dir=tree)
    assert main([str(ini), "--mdir", "new", "--maxnum", "10"]) == 0
    out = capsys.readouterr().out
    assert "(messages in new/ only)" in out and "messages      : 1 (0 seen)" in out


def test_textfile_write_is_atomic_on_failure(tmp_path, monkeypatch):
    (tmp_path / TEXTFILE_NAME).write_text("old\n")

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        write_textfile(tmp_path, "new\n")
    assert (tmp_path / TEXTFILE_NAME).read_text() == "old\n"
    assert os.listdir(tmp_path) == [TEXTFILE_NAME]


def test_empty_or_missing_mailboxes_dir(tmp_path):
    report = build_report(tmp_path / "nowhere", NOW, 10 * MIB)
    assert report.mailboxes == 0
    assert samples(report.render_prom(NOW))["chatmail_fsreport_mailboxes"] == 0
    assert "mailboxes     : 0\n" in report.render_text("now")
