"""The mailbox directory shared with Dovecot and the old chatmaild (SPEC section 3).

`<mailboxes_dir>/<addr>/` holds `password` (the Dovecot hash; its mtime is the last-login
day), the `enforceE2EEincoming` marker, `metadata.json` and Dovecot's Maildir. The files are
byte-compatible with what an existing relay has on disk. No policy lives here: callers decide,
this module only knows paths, markers and how to write them safely.
"""

import contextlib
import fcntl
import json
import logging
import os
import secrets
import time
from pathlib import Path

log = logging.getLogger("chatmaild.mailbox")

PASSWORD = "password"
ENFORCE_MARKER = "enforceE2EEincoming"
METADATA = "metadata.json"
PENDING_NOTIFICATIONS = "pending_notifications"
TOKENS_KEY = "devicetoken"
MAX_ADDRESS_LENGTH = 255  # one path component


class InvalidAddress(ValueError):
    """An address that must not be used as a path (or is not of this relay)."""


def day_timestamp(timestamp):
    """Midnight UTC of the day of `timestamp`: last-login is tracked per day on purpose."""
    return int(timestamp) // 86400 * 86400


def set_login_day(password_path, day):
    """Set a password file's mtime to `day` (a `day_timestamp`).

    True if the file was touched, False if it carried that day already, None if there is
    no such file (no account).
    """
    try:
        if int(os.stat(password_path).st_mtime) == day:
            return False
        os.utime(password_path, (day, day))
    except (FileNotFoundError, NotADirectoryError):
        return None
    return True


def address_problem(addr, domain):
    """Why `addr` may not name a mailbox of `domain`, or None. Pure: no file system call."""
    if not isinstance(addr, str) or not addr:
        return "empty address"
    if len(addr) > MAX_ADDRESS_LENGTH:
        return "address too long"
    if addr.count("@") != 1:
        return "address must contain exactly one '@'"
    if "/" in addr or "\\" in addr:
        return "address contains a slash"
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in addr):
        return "address contains a control character"
    local, _, addr_domain = addr.partition("@")
    if not local:
        return "empty local part"
    if local.startswith("."):
        return "local part starts with '.'"
    if addr_domain.lower() != domain.lower():
        return "address is not in the mail domain"
    return None


def write_bytes_atomic(path, data, mode=0o600):
    """Write `data` to a temp file beside `path`, then rename it over `path`.

    A concurrent reader sees the old content or the new one, never a partial file.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


class Mailboxes:
    """All mailboxes of one relay."""

    def __init__(self, mailboxes_dir, domain):
        self.dir = Path(mailboxes_dir)
        self.domain = domain
        self.pending_notifications_dir = self.dir / PENDING_NOTIFICATIONS

    def check_address(self, addr):
        problem = address_problem(addr, self.domain)
        if problem:
            raise InvalidAddress(f"{problem}: {addr!r}")
        return addr

    def user(self, addr):
        return User(self.dir, self.check_address(addr))

    def iter_addresses(self):
        """Every mailbox directory name containing '@' (streamed, not collected)."""
        try:
            it = os.scandir(self.dir)
        except FileNotFoundError:
            return
        with it:
            for entry in it:
                if "@" in entry.name and entry.is_dir(follow_symlinks=False):
                    yield entry.name


class User:
    """One account's files. Construct through `Mailboxes.user`, which validates."""

    __slots__ = ("addr", "dir", "password_path", "enforce_path", "metadata_path")

    def __init__(self, mailboxes_dir, addr):
        self.addr = addr
        self.dir = Path(mailboxes_dir) / addr
        self.password_path = self.dir / PASSWORD
        self.enforce_path = self.dir / ENFORCE_MARKER
        self.metadata_path = self.dir / METADATA

    def __repr__(self):
        return f"User({self.addr!r})"

    # -- password and account creation

    def read_password(self):
        """The stored hash, or None when the account does not exist (missing or empty file)."""
        try:
            data = self.password_path.read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            return None
        text = data.decode("ascii", "replace").strip()
        return text or None

    def write_password(self, password_hash):
        self.dir.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(self.password_path, password_hash.encode("ascii"))

    def create(self, password_hash):
        """Create the account exactly once; return the hash that is stored afterwards.

        The hash goes to a temp file which is hard-linked to `password`: link() fails when
        the name exists, so of several concurrent creators (threads or processes) exactly one
        wins and every loser reads the winner's hash. The enforce marker is made first, so a
        crash in between never leaves an account that accepts cleartext by accident.
        """
        # os calls on string paths: this runs for every new account (a thousand a second
        # under load), and Path objects, touch()'s utime and a buffered file cost more than
        # the calls themselves
        home = str(self.dir)
        try:
            os.mkdir(home)
        except FileExistsError:
            pass
        except FileNotFoundError:  # no mailboxes directory yet
            self.dir.mkdir(parents=True, exist_ok=True)
        os.close(os.open(f"{home}/{ENFORCE_MARKER}", os.O_WRONLY | os.O_CREAT, 0o666))
        tmp = f"{home}/.{PASSWORD}.{secrets.token_hex(8)}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            try:
                data = password_hash.encode("ascii")
                if os.write(fd, data) != len(data):
                    raise OSError(f"short write of {tmp}")
            finally:
                os.close(fd)
            os.link(tmp, self.password_path)
            return password_hash
        except FileExistsError:
            stored = self.read_password()
            if stored is not None:
                return stored
            # an empty password file is no account: replace it
            os.replace(tmp, self.password_path)
            return password_hash
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)

    # -- last login

    def get_last_login(self):
        try:
            return int(os.stat(self.password_path).st_mtime)
        except (FileNotFoundError, NotADirectoryError):
            return None

    def set_last_login(self, timestamp):
        """Set the password file's mtime to the login day; True if the file was touched."""
        return bool(set_login_day(self.password_path, day_timestamp(timestamp)))

    # -- incoming cleartext

    def enforces_e2ee(self):
        return self.enforce_path.exists()

    def allow_incoming_cleartext(self):
        with contextlib.suppress(FileNotFoundError):
            self.enforce_path.unlink()

    # -- metadata.json

    def read_metadata(self, now=None):
        """The metadata dict ({} if missing or corrupt).

        Legacy files hold a list of tokens; they are returned as a dict dated `now` (so they
        stay valid and are notified), which the next write stores in the current form.
        """
        try:
            data = json.loads(self.metadata_path.read_bytes())
        except (FileNotFoundError, NotADirectoryError):
            return {}
        except ValueError as e:
            log.warning("%s: corrupt %s ignored: %s", self.addr, METADATA, e)
            return {}
        if not isinstance(data, dict):
            log.warning("%s: corrupt %s ignored: not an object", self.addr, METADATA)
            return {}
        tokens = data.get(TOKENS_KEY)
        if isinstance(tokens, list):
            stamp = int(time.time() if now is None else now)
            data[TOKENS_KEY] = {str(t): stamp for t in tokens}
        elif tokens is not None and not isinstance(tokens, dict):
            data[TOKENS_KEY] = {}
        return data

    @contextlib.contextmanager
    def modify_metadata(self, now=None):
        """Locked read-modify-write of metadata.json: yields the dict, then stores it.

        The lock is an flock on `metadata.json.lock`, held across processes; the write is
        atomic. If the body raises, nothing is written.
        """
        lock_path = self.dir / (METADATA + ".lock")
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        except FileNotFoundError:  # first write for this address: make its directory
            self.dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            data = self.read_metadata(now=now)
            yield data
            write_bytes_atomic(self.metadata_path, json.dumps(data).encode("utf-8"))
        finally:
            os.close(fd)
