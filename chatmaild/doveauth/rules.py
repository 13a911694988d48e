"""Account creation rules (SPEC 5.1) and the passdb key format. Pure: no I/O, no clock."""

import re
from typing import NamedTuple

PASSDB_PREFIX = "shared/passdb/"
USERDB_PREFIX = "shared/userdb/"

_LOCAL_PART = re.compile(r"[a-z0-9._-]+")
_BACKSLASHED = re.compile(r"\\(.)", re.DOTALL)


def split_passdb_key(rest: str) -> tuple[str, str] | None:
    """`<password>"<user>` (both backslash-escaped by Dovecot's %E) to (password, user).

    The separator is the first `"` that is not escaped; a password may contain `/`, `"` (as
    `\\"`), tabs and any other character. None if there is no separator.
    """
    i = 0
    n = len(rest)
    while i < n:
        c = rest[i]
        if c == "\\":
            i += 2
            continue
        if c == '"':
            return _unbackslash(rest[:i]), _unbackslash(rest[i + 1 :])
        i += 1
    return None


def unescape_user(rest: str) -> str:
    """The user of a `passdb/<user>` key (escaped by Dovecot's %E), the key without password."""
    return _unbackslash(rest)


def _unbackslash(text: str) -> str:
    if "\\" not in text:
        return text
    return _BACKSLASHED.sub(r"\1", text)


class Resources(NamedTuple):
    """A reading of the machine's load; None where it could not be read."""

    load_1m: float | None
    available_memory: int | None
    free_disk: int | None


def creation_problem(addr: str, password: str, config) -> str | None:
    """Why an account `addr` with `password` may not be created, or None. Resources aside."""
    if len(password) < config.password_min_length:
        return f"password shorter than {config.password_min_length} characters"
    local, sep, domain = addr.rpartition("@")
    if not sep:
        return "not an address"
    if domain != config.address_domain:
        return "domain is not the mail domain"
    if not config.username_min_length <= len(local) <= config.username_max_length:
        return (
            f"local part length {len(local)} not within "
            f"{config.username_min_length}..{config.username_max_length}"
        )
    if _LOCAL_PART.fullmatch(local) is None:
        return "local part has characters outside [a-z0-9._-]"
    return None


def resource_problem(resources: Resources, config) -> str | None:
    """Why the machine is too busy for new accounts, or None. Unknown readings refuse."""
    if resources.load_1m is None:
        return "load average unknown"
    if resources.load_1m > config.max_load_1m:
        return f"load average {resources.load_1m:.2f} above max_load_1m {config.max_load_1m}"
    if resources.available_memory is None:
        return "available memory unknown"
    if resources.available_memory < config.min_available_memory:
        return (
            f"available memory {resources.available_memory} below "
            f"min_available_memory {config.min_available_memory}"
        )
    if resources.free_disk is None:
        return "free disk space unknown"
    if resources.free_disk < config.min_free_disk_space:
        return (
            f"free disk space {resources.free_disk} below "
            f"min_free_disk_space {config.min_free_disk_space}"
        )
    return None
