"""Streaming, symlink-safe walk over the mailboxes directory.

Every directory below the root is opened relative to its parent's file descriptor with
O_NOFOLLOW, and entries are classified with `follow_symlinks=False`, so a symlink planted in
a mailbox (to a file or to a directory) is never followed out of `mailboxes_dir`. Entries
that vanish while we look at them (Dovecot expunges too) are skipped silently. Only one
mailbox is held in memory at a time.
"""

import os
import stat
from dataclasses import dataclass, field

from .maildir import MessageFile, parse_message_name

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
SUBDIR_FLAGS = DIR_FLAGS | os.O_NOFOLLOW
MESSAGE_DIRS = ("cur", "new")
PASSWORD_FILE = "password"  # chatmaild.mailbox User.password_path: its mtime is the last login


def open_root(path):
    """Open the mailboxes directory itself (it may legitimately be a symlink)."""
    return os.open(path, DIR_FLAGS)


def open_subdir(parent_fd, name):
    """Open a real directory below parent_fd; a symlink raises OSError (ELOOP/ENOTDIR)."""
    return os.open(name, SUBDIR_FLAGS, dir_fd=parent_fd)


def iter_mailbox_names(root_fd, maxnum=None):
    """Names of real directories with '@' in root_fd, in directory order, at most maxnum."""
    if maxnum is not None and maxnum <= 0:
        return
    count = 0
    with os.scandir(root_fd) as entries:
        for entry in entries:
            name = entry.name
            if "@" not in name:
                continue
            try:
                if not entry.is_dir(follow_symlinks=False):
                    continue
            except OSError:
                continue
            yield name
            count += 1
            if maxnum is not None and count >= maxnum:
                return


@dataclass(slots=True)
class MailboxScan:
    name: str
    last_login: int | None = None  # password mtime, None without a password file
    messages: list = field(default_factory=list)
    extra_bytes: int = 0  # regular files at the mailbox top level (password, indexes, ...)
    folders: list = field(default_factory=list)  # message dirs seen: "cur", ".Trash/new", ...
    problems: list = field(default_factory=list)  # short texts for the log, never raised

    @property
    def message_bytes(self):
        return sum(m.size for m in self.messages)


def _note(scan, what, exc):
    if len(scan.problems) < 10:
        scan.problems.append(f"{scan.name}/{what}: {exc.strerror or exc}")


def scan_mailbox(mbox_fd, name, with_mtime=True, mdir=None):
    """Collect the facts of one mailbox opened as mbox_fd.

    with_mtime=False skips the per-message lstat when the file name carries S= (fsreport
    needs sizes only). mdir ("cur" or "new") restricts the message dirs that are read.
    """
    scan = MailboxScan(name=name)
    message_dirs = (mdir,) if mdir else MESSAGE_DIRS
    subfolders = []
    with os.scandir(mbox_fd) as entries:
        for entry in entries:
            entry_name = entry.name
            try:
                if entry.is_dir(follow_symlinks=False):
                    if entry_name in message_dirs:
                        _scan_message_dir(scan, mbox_fd, entry_name, entry_name, with_mtime)
                    elif entry_name.startswith("."):
                        subfolders.append(entry_name)
                elif entry.is_file(follow_symlinks=False):
                    st = entry.stat(follow_symlinks=False)
                    scan.extra_bytes += st.st_size
                    if entry_name == PASSWORD_FILE:
                        scan.last_login = int(st.st_mtime)
            except FileNotFoundError:
                continue
            except OSError as exc:
                _note(scan, entry_name, exc)
    for folder in subfolders:
        try:
            folder_fd = open_subdir(mbox_fd, folder)
        except FileNotFoundError:
            continue
        except OSError as exc:
            _note(scan, folder, exc)
            continue
        try:
            for sub in message_dirs:
                _scan_message_dir(scan, folder_fd, sub, f"{folder}/{sub}", with_mtime)
        finally:
            os.close(folder_fd)
    return scan


def _scan_message_dir(scan, parent_fd, name, relfolder, with_mtime):
    try:
        dir_fd = open_subdir(parent_fd, name)
    except FileNotFoundError:
        return
    except OSError as exc:
        _note(scan, relfolder, exc)
        return
    scan.folders.append(relfolder)
    append = scan.messages.append
    try:
        with os.scandir(dir_fd) as entries:
            for entry in entries:
                try:
                    if not entry.is_file(follow_symlinks=False):
                        continue
                    parsed = parse_message_name(entry.name)
                    size = parsed.size
                    mtime = 0.0
                    if with_mtime or size is None:
                        st = entry.stat(follow_symlinks=False)
                        if not stat.S_ISREG(st.st_mode):
                            continue
                        mtime = st.st_mtime
                        if size is None:
                            size = st.st_size
                except FileNotFoundError:
                    continue
                except OSError as exc:
                    _note(scan, f"{relfolder}/{entry.name}", exc)
                    continue
                append(MessageFile(relfolder, entry.name, mtime, size, parsed.seen))
    finally:
        os.close(dir_fd)
