"""Which metadata entry a Dovecot dict key names (pure).

Dovecot maps IMAP METADATA entries to dict keys (see protocols.md part C):
``priv/<mailbox-guid>/<entry>`` for private mailbox entries and
``shared/<inbox-guid>/vendor/vendor.dovecot/pvt/server/<entry>`` for server entries.
"""

from enum import Enum

SERVER_PREFIX = "vendor/vendor.dovecot/pvt/server/vendor/deltachat/"
SERVER_NAMES = frozenset({"irohrelay", "turn", "maxsmtprecipients", "appversions"})


class Entry(Enum):
    DEVICETOKEN = "devicetoken"
    MESSAGENEW = "messagenew"
    SERVER = "server"


def parse_key(key: str) -> tuple[Entry, str] | None:
    """(entry, server-name) for a key this service knows, None for any other key."""
    scope, sep, rest = key.partition("/")
    if not sep:
        return None
    guid, sep, name = rest.partition("/")
    if not sep or not guid:
        return None
    if scope == "priv":
        if name == "devicetoken":
            return Entry.DEVICETOKEN, ""
        if name == "messagenew":
            return Entry.MESSAGENEW, ""
        return None
    if scope == "shared" and name.startswith(SERVER_PREFIX):
        server_name = name[len(SERVER_PREFIX) :]
        if server_name in SERVER_NAMES:
            return Entry.SERVER, server_name
    return None
