"""chatmail-expire: delete inactive accounts, old and large mail, trim full mailboxes.

    chatmail-expire [CONFIG] [--days N] [--maxnum N] [-v] [--remove]

Dry run unless --remove. --days N evaluates every rule as if it were N days ago (the
reference time moves back, so fewer things expire; as on existing relays). --maxnum N stops
after the first N mailboxes in directory order. The rules are in `expireplan`.
"""

import argparse
import os
import sys
import time
from dataclasses import dataclass

from .expireplan import DAY, ExpirePolicy, is_inactive, plan_mailbox
from .fsops import Outcome, remove_empty_dirs, remove_tree, unlink_if_present, unlink_messages
from .scan import PASSWORD_FILE, iter_mailbox_names, open_root, open_subdir, scan_mailbox

DEFAULT_INI = "/usr/local/lib/chatmaild/chatmail.ini"
MAILDIRSIZE = "maildirsize"


@dataclass(slots=True)
class ExpireStats:
    mailboxes: int = 0
    mailboxes_removed: int = 0
    messages: int = 0
    removed_old: int = 0
    removed_large: int = 0
    removed_trimmed: int = 0
    bytes_removed: int = 0
    dirs_removed: int = 0
    vanished: int = 0
    errors: int = 0

    @property
    def removed(self):
        return self.removed_old + self.removed_large + self.removed_trimmed

    def summary(self, dry, seconds):
        verb = "would remove" if dry else "removed"
        text = (
            f"chatmail-expire: {verb} {self.mailboxes_removed} of {self.mailboxes} mailboxes"
            f" and {self.removed} of {self.messages} messages (old {self.removed_old},"
            f" large {self.removed_large}, trimmed {self.removed_trimmed}),"
            f" {self.bytes_removed / 1e6:.1f} MB; {self.vanished} vanished,"
            f" {self.errors} errors, {seconds:.2f}s"
        )
        if dry:
            text += " (dry run: nothing removed, use --remove)"
        return text


class Expirer:
    """Applies ExpirePlans to the mailboxes below root_fd, one mailbox at a time."""

    def __init__(self, root_fd, policy, now, dry=True, log=None):
        self.root_fd = root_fd
        self.policy = policy
        self.now = now
        self.dry = dry
        self.log = log  # callable(str) for -v lines, or None
        self.stats = ExpireStats()

    def warn(self, text):
        self.stats.errors += 1
        print(f"chatmail-expire: {text}", file=sys.stderr)

    def run(self, maxnum=None):
        for name in iter_mailbox_names(self.root_fd, maxnum):
            self.process(name)
        return self.stats

    def process(self, name):
        try:
            mbox_fd = open_subdir(self.root_fd, name)
        except FileNotFoundError:
            return
        except OSError as exc:
            self.warn(f"{name}: {exc.strerror or exc}")
            return
        try:
            self._process_open(name, mbox_fd)
        finally:
            os.close(mbox_fd)

    def _process_open(self, name, mbox_fd):
        stats = self.stats
        scan = scan_mailbox(mbox_fd, name, with_mtime=True)
        for problem in scan.problems:
            self.warn(problem)
        stats.mailboxes += 1
        stats.messages += len(scan.messages)
        plan = plan_mailbox(scan.last_login, scan.messages, self.policy, self.now)
        if plan.remove_mailbox:
            self._remove_mailbox(name, mbox_fd, scan)
            return
        if not plan.changes_messages:
            return
        if self.log:
            for kind, group in (("old", plan.old), ("large", plan.large), ("trim", plan.trimmed)):
                for message in group:
                    self.log(f"{self._verb()} {kind} {name}/{message.relpath}")
        if self.dry:
            removed = set(map(id, plan.delete))
            outcome = Outcome(removed=plan.delete)
        else:
            outcome = unlink_messages(mbox_fd, plan.delete, label=name)
            removed = set(map(id, outcome.removed))
            unlink_if_present(mbox_fd, MAILDIRSIZE)
            if scan.last_login is None and outcome.removed:
                stats.dirs_removed += remove_empty_dirs(self.root_fd, name, mbox_fd, scan.folders)
        stats.removed_old += sum(1 for m in plan.old if id(m) in removed)
        stats.removed_large += sum(1 for m in plan.large if id(m) in removed)
        stats.removed_trimmed += sum(1 for m in plan.trimmed if id(m) in removed)
        stats.bytes_removed += sum(m.size for m in outcome.removed)
        stats.vanished += outcome.vanished
        for error in outcome.errors:
            self.warn(error)

    def _remove_mailbox(self, name, mbox_fd, scan):
        stats = self.stats
        if self.log:
            self.log(f"{self._verb()} mailbox {name} (last login {scan.last_login})")
        if not self.dry:
            # a login may have happened since the scan: look again right before deleting
            try:
                last_login = int(
                    os.stat(PASSWORD_FILE, dir_fd=mbox_fd, follow_symlinks=False).st_mtime
                )
            except FileNotFoundError:
                last_login = None
            if not is_inactive(last_login, self.now, self.policy):
                return
            outcome = Outcome()
            remove_tree(self.root_fd, name, outcome)
            for error in outcome.errors:
                self.warn(error)
            if outcome.errors:
                return
        stats.mailboxes_removed += 1
        stats.bytes_removed += scan.message_bytes + scan.extra_bytes

    def _verb(self):
        return "would remove" if self.dry else "removing"


def build_parser():
    parser = argparse.ArgumentParser(
        prog="chatmail-expire",
        description="Expire mailboxes and messages per chatmail.ini (dry run unless --remove).",
    )
    parser.add_argument(
        "config", nargs="?", default=DEFAULT_INI, help=f"chatmail.ini (default {DEFAULT_INI})"
    )
    parser.add_argument(
        "mailboxes_dir",
        nargs="?",
        default=None,
        help="overrides mailboxes_dir of the config (accepted for older unit files)",
    )
    parser.add_argument(
        "--days", type=int, default=0, help="evaluate the rules as of N days ago (default 0)"
    )
    parser.add_argument(
        "--maxnum", type=int, default=None, help="process at most N mailboxes (directory order)"
    )
    parser.add_argument("-v", dest="verbose", action="store_true", help="print every removal")
    parser.add_argument("--remove", action="store_true", help="actually remove (default: dry run)")
    return parser


def main(argv=None):
    from chatmaild.config import load_config_or_exit

    args = build_parser().parse_args(argv)
    config = load_config_or_exit(args.config)
    mailboxes_dir = args.mailboxes_dir or config.mailboxes_dir
    start = time.monotonic()
    now = time.time() - args.days * DAY
    try:
        root_fd = open_root(mailboxes_dir)
    except FileNotFoundError:
        print(f"chatmail-expire: no mailboxes at {mailboxes_dir}", file=sys.stderr)
        print(ExpireStats().summary(not args.remove, time.monotonic() - start))
        return 0
    log = (lambda line: print(line, file=sys.stderr)) if args.verbose else None
    try:
        expirer = Expirer(root_fd, ExpirePolicy.from_config(config), now, not args.remove, log)
        stats = expirer.run(args.maxnum)
    finally:
        os.close(root_fd)
    print(stats.summary(not args.remove, time.monotonic() - start), flush=True)
    return 1 if stats.errors else 0


if __name__ == "__main__":
    sys.exit(main())
