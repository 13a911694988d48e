"""lastlogin: `shared/last-login/<addr>` sets from Dovecot's last_login plugin.

The login day is the password file's mtime (SPEC 3, 5.2); `User.set_last_login` only
touches the file when the day changed, so most commits cost one stat.
"""

import logging

from ..mailbox import InvalidAddress, Mailboxes
from ..metrics.lastlogin import LastloginMetrics

log = logging.getLogger("chatmaild.lastlogin")

KEY_PREFIX = "shared/last-login/"


def parse_timestamp(value: str) -> int | None:
    """Unix seconds from the plugin's value (precision s, or longer ms/us/ns digit strings)."""
    value = value.strip()
    if not value.isdigit():
        return None
    # last_login_precision ms/us/ns append 3/6/9 digits to the seconds
    excess = len(value) - 10
    if excess > 0 and excess in (3, 6, 9):
        value = value[:10]
    return int(value)


class LastLoginService:
    def __init__(self, config, metrics=None):
        self.mailboxes = Mailboxes(config.mailboxes_dir, config.address_domain)
        self.metrics = metrics if metrics is not None else LastloginMetrics()
        self._updated = self.metrics.set_result["updated"]
        self._unchanged = self.metrics.set_result["unchanged"]
        self._failed = self.metrics.set_result["failed"]

    def lookup(self, key, user):
        return None

    def iterate(self, path, user, flags):
        return ()

    def commit(self, txn):
        for op in txn.ops:
            if op[0] != "S" or not op[1].startswith(KEY_PREFIX):
                log.info("ignoring %s of %s", op[0], op[1][:80])
                continue
            self.record_login(op[1][len(KEY_PREFIX) :], op[2])
        return True

    def record_login(self, addr, value):
        try:
            user = self.mailboxes.user(addr)
        except InvalidAddress as exc:
            log.warning("last-login ignored: %s", exc)
            self._failed.inc()
            return
        timestamp = parse_timestamp(value)
        if timestamp is None:
            log.warning("last-login for %s ignored: bad timestamp %r", addr, value[:40])
            self._failed.inc()
            return
        (self._updated if user.set_last_login(timestamp) else self._unchanged).inc()
