"""chatmail-quota-expire: Dovecot's quota_warning script.

    chatmail-quota-expire TARGET_MB MAILBOX_PATH

Deletes the mailbox's messages (cur/ and new/ of every folder) oldest-first until they sum to
at most TARGET_MB MiB, removes `maildirsize` when anything went (Dovecot recounts), and logs
one line `quota-expire: removed N message(s) from <mailbox> (<bytes> bytes)` on stderr, which
Dovecot copies into its log. Unlike chatmail-expire it may delete recent mail: the user is
at the quota now and new mail would bounce otherwise.
"""

import argparse
import os
import sys

from .expireplan import plan_trim
from .fsops import unlink_if_present, unlink_messages
from .scan import open_root, scan_mailbox

MIB = 1024 * 1024


def trim_mailbox(path, target_bytes):
    """Trim the mailbox at path to target_bytes; returns (removed MessageFiles, errors)."""
    mbox_fd = open_root(path)
    try:
        name = os.path.basename(os.path.normpath(path))
        scan = scan_mailbox(mbox_fd, name, with_mtime=True)
        plan = plan_trim(scan.messages, target_bytes)
        if not plan:
            return [], scan.problems
        outcome = unlink_messages(mbox_fd, plan, label=name)
        unlink_if_present(mbox_fd, "maildirsize")
        return outcome.removed, scan.problems + outcome.errors
    finally:
        os.close(mbox_fd)


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="chatmail-quota-expire",
        description="Remove a mailbox's oldest messages until it fits TARGET_MB.",
    )
    parser.add_argument("target_mb", type=int, help="target size in MiB")
    parser.add_argument("mailbox_path", help="the user's mailbox directory")
    args = parser.parse_args(argv)
    if args.target_mb < 0:
        parser.error("TARGET_MB must not be negative")
    name = os.path.basename(os.path.normpath(args.mailbox_path))
    try:
        removed, errors = trim_mailbox(args.mailbox_path, args.target_mb * MIB)
    except OSError as exc:
        print(
            f"quota-expire: cannot open {args.mailbox_path}: {exc.strerror or exc}", file=sys.stderr
        )
        return 1
    for error in errors:
        print(f"quota-expire: {error}", file=sys.stderr)
    freed = sum(m.size for m in removed)
    print(
        f"quota-expire: removed {len(removed)} message(s) from {name} ({freed} bytes)",
        file=sys.stderr,
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
