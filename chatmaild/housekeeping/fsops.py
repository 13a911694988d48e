"""Deletions below the mailboxes directory, relative to directory file descriptors.

Each folder is re-opened with O_NOFOLLOW right before its files are unlinked, so a folder
replaced by a symlink after the scan is refused instead of followed. A file that is already
gone counts as `vanished`, which is normal (Dovecot expunges too), never as an error.
"""

import os
import shutil
from dataclasses import dataclass, field

from .scan import open_subdir


@dataclass(slots=True)
class Outcome:
    removed: list = field(default_factory=list)  # MessageFile objects actually unlinked
    vanished: int = 0
    errors: list = field(default_factory=list)  # one short text per failure

    def error(self, what, exc):
        self.errors.append(f"{what}: {exc.strerror or exc}")


def open_folder(mbox_fd, folder):
    """Open 'cur' or '.Trash/cur' below mbox_fd, refusing symlinks at every step."""
    fd = mbox_fd
    opened = []
    try:
        for part in folder.split("/"):
            fd = open_subdir(fd, part)
            opened.append(fd)
    except BaseException:
        for o in opened:
            os.close(o)
        raise
    for o in opened[:-1]:
        os.close(o)
    return fd


def unlink_messages(mbox_fd, messages, label=""):
    """Unlink MessageFiles of one mailbox, grouped by folder; returns an Outcome."""
    outcome = Outcome()
    by_folder = {}
    for message in messages:
        by_folder.setdefault(message.folder, []).append(message)
    for folder, group in by_folder.items():
        try:
            folder_fd = open_folder(mbox_fd, folder)
        except FileNotFoundError:
            outcome.vanished += len(group)
            continue
        except OSError as exc:
            outcome.error(f"{label}/{folder}", exc)
            continue
        try:
            for message in group:
                try:
                    os.unlink(message.name, dir_fd=folder_fd)
                except FileNotFoundError:
                    outcome.vanished += 1
                except OSError as exc:
                    outcome.error(f"{label}/{message.relpath}", exc)
                else:
                    outcome.removed.append(message)
        finally:
            os.close(folder_fd)
    return outcome


def unlink_if_present(dir_fd, name):
    """Unlink a regular file (or symlink, never its target); False if it was not there."""
    try:
        os.unlink(name, dir_fd=dir_fd)
    except FileNotFoundError:
        return False
    return True


def remove_tree(root_fd, name, outcome):
    """Remove directory `name` below root_fd recursively without following symlinks.

    shutil.rmtree with dir_fd uses the fd-based walk that refuses to follow symlinks (and
    refuses a top-level symlink). Entries vanishing meanwhile are ignored.
    """
    failures = []

    def onerror(func, path, exc_info):
        exc = exc_info[1]
        if isinstance(exc, FileNotFoundError):
            return
        failures.append((path, exc))

    shutil.rmtree(name, dir_fd=root_fd, onerror=onerror)
    for path, exc in failures[:10]:
        outcome.error(f"{name}: {path}", exc)
    return not failures


def remove_empty_dirs(root_fd, mbox_name, mbox_fd, folders):
    """rmdir emptied Maildir dirs of a mailbox that is no live account, bottom-up.

    rmdir only succeeds on an empty directory, so nothing with content is ever lost.
    Returns the number of directories removed.
    """
    removed = 0
    candidates = set()
    for folder in folders:
        parts = folder.split("/")
        if len(parts) == 2:
            candidates.add(parts[0])
            candidates.add(f"{parts[0]}/tmp")
        else:
            candidates.add("tmp")
        candidates.add(folder)
    # deepest paths first
    for path in sorted(candidates, key=lambda p: (-p.count("/"), p)):
        head, _, last = path.rpartition("/")
        try:
            parent = open_folder(mbox_fd, head) if head else mbox_fd
        except OSError:
            continue
        try:
            os.rmdir(last, dir_fd=parent)
            removed += 1
        except OSError:
            pass
        finally:
            if head:
                os.close(parent)
    try:
        os.rmdir(mbox_name, dir_fd=root_fd)
        removed += 1
    except OSError:
        pass
    return removed
