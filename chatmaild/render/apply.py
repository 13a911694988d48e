"""Put a rendering ({absolute path: text}) onto a live file system under `root`.

Only files whose content differs are written, each atomically (a temp file in the same
directory, then rename), keeping an existing file's owner and mode (new files: root, 0644;
directories are made 0755). So a second run with the same input writes nothing, and the
list of changed paths tells a deployment which services to reload.
"""

import os
from pathlib import Path

NEW_FILE_MODE = 0o644
NEW_DIR_MODE = 0o755


def target_path(root, path):
    return Path(root) / Path(path).relative_to("/")


def differs(target, text):
    """True when `target` is missing or holds other bytes than `text`."""
    try:
        return target.read_bytes() != text.encode()
    except FileNotFoundError:
        return True


def _write_atomic(target, data):
    try:
        st = target.stat()
        mode, uid, gid = st.st_mode & 0o7777, st.st_uid, st.st_gid
    except FileNotFoundError:
        mode, uid, gid = NEW_FILE_MODE, None, None
    target.parent.mkdir(parents=True, exist_ok=True, mode=NEW_DIR_MODE)
    tmp = target.with_name(f".{target.name}.chatmaild-new")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        if uid is not None:
            os.chown(tmp, uid, gid)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def apply_files(files, root="/", dry_run=False):
    """Write every differing file; returns (changed, unchanged) lists of absolute paths
    (as strings, sorted). `dry_run`: write nothing, report what would change."""
    changed, unchanged = [], []
    for path in sorted(files, key=str):
        text = files[path]
        target = target_path(root, path)
        if differs(target, text):
            changed.append(str(path))
            if not dry_run:
                _write_atomic(target, text.encode())
        else:
            unchanged.append(str(path))
    return changed, unchanged
