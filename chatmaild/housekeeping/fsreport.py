"""chatmail-fsreport: storage and login-age report over all mailboxes.

    chatmail-fsreport [CONFIG] [--mdir cur|new] [--maxnum N] [--days N] [--textfile DIR]

Prints the report for humans on stdout; with --textfile DIR also writes
DIR/chatmail_fsreport.prom atomically (temp file in DIR + rename) for the node-exporter
textfile collector. Read-only: it never changes a mailbox.
"""

import argparse
import os
import sys
import tempfile
import time
from datetime import UTC, datetime

from .report import DAY, FsReport
from .scan import iter_mailbox_names, open_root, open_subdir, scan_mailbox

DEFAULT_INI = "/usr/local/lib/chatmaild/chatmail.ini"
TEXTFILE_NAME = "chatmail_fsreport.prom"


def build_report(mailboxes_dir, now, max_mailbox_size, mdir=None, maxnum=None):
    report = FsReport(now, max_mailbox_size, mdir)
    start = time.monotonic()
    try:
        root_fd = open_root(mailboxes_dir)
    except FileNotFoundError:
        return report
    try:
        for name in iter_mailbox_names(root_fd, maxnum):
            try:
                mbox_fd = open_subdir(root_fd, name)
            except OSError:
                continue  # vanished or replaced by a symlink since the listing
            try:
                report.add(scan_mailbox(mbox_fd, name, with_mtime=False, mdir=mdir))
            finally:
                os.close(mbox_fd)
    finally:
        os.close(root_fd)
    report.seconds = time.monotonic() - start
    return report


def write_textfile(directory, text, name=TEXTFILE_NAME):
    """Write directory/name atomically: a reader sees the old or the new file, never half."""
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", dir=directory)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, os.path.join(directory, name))
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return os.path.join(directory, name)


def main(argv=None):
    from chatmaild.config import load_config_or_exit

    parser = argparse.ArgumentParser(
        prog="chatmail-fsreport", description="Report mailbox storage use and login ages."
    )
    parser.add_argument(
        "config", nargs="?", default=DEFAULT_INI, help=f"chatmail.ini (default {DEFAULT_INI})"
    )
    parser.add_argument(
        "--mdir", choices=("cur", "new"), help="count only messages in cur/ or new/"
    )
    parser.add_argument("--maxnum", type=int, default=None, help="scan at most N mailboxes")
    parser.add_argument("--days", type=int, default=0, help="report as of N days ago")
    parser.add_argument("--textfile", metavar="DIR", help="also write DIR/" + TEXTFILE_NAME)
    args = parser.parse_args(argv)
    config = load_config_or_exit(args.config)
    now = time.time() - args.days * DAY
    report = build_report(
        config.mailboxes_dir, now, config.max_mailbox_size, args.mdir, args.maxnum
    )
    reference = datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%d %H:%M UTC")
    sys.stdout.write(report.render_text(reference))
    if args.textfile:
        try:
            write_textfile(args.textfile, report.render_prom(time.time()))
        except OSError as exc:
            print(
                f"chatmail-fsreport: cannot write textfile in {args.textfile}: {exc}",
                file=sys.stderr,
            )
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
