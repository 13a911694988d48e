"""Builders of synthetic Dovecot mailbox trees for the housekeeping tests."""

import itertools
import os
from pathlib import Path

DAY = 86400
KIB = 1024
_counter = itertools.count(1)


def message_name(size, mtime, flags=None):
    """A Dovecot-style Maildir file name carrying S=size; flags None = no ':2,' info."""
    n = next(_counter)
    name = f"{int(mtime)}.M{n}P{4000 + n}.relay,S={size},W={size + size // 50}"
    if flags is not None:
        name += f":2,{flags}"
    return name


def add_message(mailbox, size, mtime, folder="cur", flags="S", content=b""):
    """Create an (empty by default) message file; size lives in the name, mtime via utime."""
    folder_path = Path(mailbox) / folder
    folder_path.mkdir(parents=True, exist_ok=True)
    if folder.endswith("new"):
        flags = None
    path = folder_path / message_name(size, mtime, flags)
    path.write_bytes(content)
    os.utime(path, (mtime, mtime))
    return path


def make_mailbox(root, addr, last_login=None, maildirsize=True):
    """A mailbox dir with the Maildir skeleton; last_login None = no password file."""
    mailbox = Path(root) / addr
    for sub in ("cur", "new", "tmp"):
        (mailbox / sub).mkdir(parents=True, exist_ok=True)
    (mailbox / "enforceE2EEincoming").touch()
    if last_login is not None:
        password = mailbox / "password"
        password.write_text("{SHA512-CRYPT}$6$salt$hash")
        os.utime(password, (last_login, last_login))
    if maildirsize:
        (mailbox / "maildirsize").write_text("524288000S\n0 0\n")
    return mailbox


def snapshot(root):
    """Every path below root (symlinks not followed) with its lstat mtime and size."""
    result = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            result[os.path.relpath(path, root)] = (st.st_mtime, st.st_size, st.st_mode)
    return result
