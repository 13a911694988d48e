"""Facts about one Maildir message file, parsed from its Dovecot file name (no I/O).

Dovecot names a delivered message `<time>.<unique>.<host>,S=<size>,W=<vsize>:2,<flags>`:
the base name may carry `,KEY=value` fields (`S=` is the file size in bytes), and after the
info separator `:2,` come the flag letters (`S` = seen, `T` = deleted, ...).
"""

from dataclasses import dataclass

INFO_SEPARATOR = ":2,"


@dataclass(frozen=True, slots=True)
class MessageName:
    size: int | None  # from S=, None when the name carries no (valid) S= field
    flags: str  # flag letters after ':2,' ('' for messages in new/ or without info)

    @property
    def seen(self):
        return "S" in self.flags


def parse_message_name(name):
    """Parse a Maildir file name into a MessageName; unknown shapes give size None, no flags."""
    base, sep, flags = name.partition(INFO_SEPARATOR)
    if not sep:
        flags = ""
    size = None
    # fields follow the first comma of the base name: ",S=123,W=456"
    for field in base.split(",")[1:]:
        if field.startswith("S="):
            digits = field[2:]
            if digits.isdigit() and digits.isascii():
                size = int(digits)
            break
    return MessageName(size=size, flags=flags)


@dataclass(frozen=True, slots=True)
class MessageFile:
    """One message file of a mailbox, as the scanner found it."""

    folder: str  # directory relative to the mailbox: "cur", "new", ".Trash/cur", ...
    name: str
    mtime: float
    size: int
    seen: bool

    @property
    def relpath(self):
        return f"{self.folder}/{self.name}"

    @property
    def unfetched(self):
        """In a `new/` directory: no client has fetched it yet, whatever flags its name has."""
        folder = self.folder
        return folder == "new" or folder.endswith("/new")
