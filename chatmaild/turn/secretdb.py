"""The TURN secret: made once per install in coturn's SQLite database, never replaced.

coturn reads `use-auth-secret` secrets from the `turn_secret` table of its `userdb` when the
configuration names none (`static-auth-secret`), so the rendered turnserver.conf carries no
secret and the secret never appears on a command line. chatmail-turn reads the same row.
The database belongs to coturn's user (mode 0600, directory 0700); chatmail-turn runs as that
user too, so nobody else can read the secret.
"""

import contextlib
import os
import pwd
import secrets
import sqlite3
from pathlib import Path

OWNER = "turnserver"  # Debian's coturn runs as this user
# coturn's own definition of the table (it creates the other tables itself at start)
SCHEMA = (
    "CREATE TABLE IF NOT EXISTS turn_secret (realm varchar(127) default '',"
    " value varchar(256), primary key (realm,value))"
)
SECRET_BYTES = 32


class SecretMissing(Exception):
    """No secret for the realm (the install step did not run) or no readable database."""


def new_secret() -> str:
    return secrets.token_urlsafe(SECRET_BYTES)


def ensure_secret(db_path, realm: str, owner: str | None = OWNER) -> bool:
    """Add a random secret for `realm` unless it has one; True when one was made.

    Owner and modes are set every time (directory 0700, database 0600), so a run after a
    restore from backup repairs them. `owner` None keeps the caller's user (tests).
    """
    db_path = Path(db_path)
    db_path.parent.mkdir(parents=True, exist_ok=True)
    old_umask = os.umask(0o077)
    try:
        with contextlib.closing(sqlite3.connect(db_path)) as db, db:
            db.execute(SCHEMA)
            found = db.execute(
                "SELECT 1 FROM turn_secret WHERE realm = ? LIMIT 1", (realm,)
            ).fetchone()
            if found is None:
                db.execute(
                    "INSERT INTO turn_secret (realm, value) VALUES (?, ?)", (realm, new_secret())
                )
    finally:
        os.umask(old_umask)
    if owner is not None:
        user = pwd.getpwnam(owner)
        for path in (db_path.parent, db_path):
            os.chown(path, user.pw_uid, user.pw_gid)
    os.chmod(db_path.parent, 0o700)
    os.chmod(db_path, 0o600)
    return found is None


def read_secret(db_path, realm: str) -> str:
    """The realm's secret (the first one, as coturn tries them all); SecretMissing if none."""
    uri = f"file:{Path(db_path)}?mode=ro"
    try:
        with contextlib.closing(sqlite3.connect(uri, uri=True)) as db:
            row = db.execute(
                "SELECT value FROM turn_secret WHERE realm = ? ORDER BY rowid LIMIT 1", (realm,)
            ).fetchone()
    except sqlite3.Error as e:
        raise SecretMissing(f"{db_path}: {e}") from None
    if row is None or not row[0]:
        raise SecretMissing(f"{db_path}: no secret for realm {realm}")
    return row[0]
