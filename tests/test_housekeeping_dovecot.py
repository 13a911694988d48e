"""Real Dovecot: messages stored by Dovecot's own imap binary (preauth, as vmail) are parsed,
expired and trimmed by us, and Dovecot still serves the mailbox consistently afterwards."""

import os
import pwd
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from chatmaild.housekeeping.expire import main as expire_main
from chatmaild.housekeeping.maildir import parse_message_name
from chatmaild.housekeeping.quota_expire import main as quota_main

from conftest import require, require_tool, write_ini

IMAP = "/usr/lib/dovecot/imap"
ADDR = "user@chat.example"
DAY = 86400


@pytest.fixture
def dovecot_home():
    require_tool(IMAP, "runuser")
    require(os.geteuid() == 0, "root (to run Dovecot's imap as vmail)")
    try:
        vmail = pwd.getpwnam("vmail")
    except KeyError:
        vmail = None
    require(vmail is not None, "system user vmail")
    base = Path(tempfile.mkdtemp(prefix="hk-dovecot-", dir="/tmp"))
    os.chmod(base, 0o755)
    (base / "mail").mkdir()
    (base / "dovecot.conf").write_text(
        f"protocols =\nbase_dir = {base}/run\nstate_dir = {base}/state\n"
        f"log_path = {base}/dovecot.log\nmail_location = maildir:~\nssl = no\n"
    )
    for path in (base, base / "mail"):
        os.chown(path, vmail.pw_uid, vmail.pw_gid)
    try:
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


def imap_session(base, commands):
    """Run Dovecot's imap binary preauthenticated as ADDR (uid vmail); return its output."""
    home = base / "mail" / ADDR
    script = b"".join(commands) + b"z LOGOUT\r\n"
    proc = subprocess.run(
        [
            "runuser",
            "-u",
            "vmail",
            "--",
            "env",
            "-i",
            f"HOME={home}",
            f"USER={ADDR}",
            IMAP,
            "-c",
            str(base / "dovecot.conf"),
        ],
        input=script,
        capture_output=True,
        timeout=30,
    )
    out = proc.stdout.decode(errors="replace")
    assert "z OK" in out, out + proc.stderr.decode(errors="replace")
    return out


MONTHS = "Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split()


def append(tag, message, age_days, seen, folder="INBOX"):
    """APPEND with LITERAL+ and an INTERNALDATE age_days ago (Dovecot makes it the mtime)."""
    t = time.gmtime(time.time() - age_days * DAY)
    internal = (
        f"{t.tm_mday:02d}-{MONTHS[t.tm_mon - 1]}-{t.tm_year} {time.strftime('%H:%M:%S', t)} +0000"
    )
    flags = "(\\Seen) " if seen else ""
    return (
        f'{tag} APPEND {folder} {flags}"{internal}" {{{len(message)}+}}\r\n'.encode()
        + message
        + b"\r\n"
    )


def message(size):
    head = b"From: a@chat.example\r\nTo: user@chat.example\r\nSubject: t\r\n\r\n"
    line = b"x" * 78 + b"\r\n"
    return head + line * max(1, (size - len(head)) // len(line))


def exists(base, folder="INBOX"):
    out = imap_session(base, [f"a SELECT {folder}\r\n".encode()])
    return int(re.search(r"\* (\d+) EXISTS", out).group(1))


def test_expire_on_a_mailbox_written_by_dovecot(dovecot_home, tmp_path, capsys):
    base = dovecot_home
    imap_session(
        base,
        [
            b"c0 CREATE Sub\r\n",
            append("a1", message(2000), 30, True),  # old
            append("a2", message(2000), 1, False),  # recent, kept
            append("a3", message(210 * 1024), 10, True),  # large and seen
            append("a4", message(210 * 1024), 10, False),  # large, unseen: kept
            append("a5", message(3000), 25, False, folder="Sub"),  # old, in a subfolder
        ],
    )
    home = base / "mail" / ADDR
    (home / "password").write_text("{SHA512-CRYPT}$6$x$y")  # logged in now
    files = [p for p in home.rglob("*") if p.parent.name in ("cur", "new") and p.is_file()]
    assert len(files) == 5
    for path in files:  # Dovecot's own names carry S= equal to the file size
        parsed = parse_message_name(path.name)
        assert parsed.size == path.stat().st_size
        assert parsed.seen is ("S" in path.name.partition(":2,")[2])
    assert exists(base) == 4 and exists(base, "Sub") == 1

    ini = write_ini(tmp_path / "chatmail.ini", mailboxes_dir=base / "mail")
    assert expire_main([str(ini), "--remove"]) == 0
    out = capsys.readouterr().out
    assert "and 3 of 5 messages (old 2, large 1, trimmed 0)" in out
    assert exists(base) == 2 and exists(base, "Sub") == 0  # Dovecot agrees

    # quota-expire as Dovecot's quota_warning would call it: trim INBOX to 0 MiB
    assert quota_main(["0", str(home)]) == 0
    assert "quota-expire: removed 2 message(s)" in capsys.readouterr().err
    assert exists(base) == 0
