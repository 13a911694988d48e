"""lastlogin: `shared/last-login/<addr>` sets from Dovecot's last_login plugin.

The login day is the password file's mtime (SPEC 3, 5.2), touched only when the day changed.
A set for an address whose file a stat already found carrying that day does not touch the
disk at all (`recorded.RecordedDays`); every other set costs one stat, plus one utime when the
day changed. So an address costs at most two stats and one utime a day.
"""

import logging

from ..mailbox import PASSWORD, InvalidAddress, Mailboxes, day_timestamp, set_login_day
from ..metrics.lastlogin import LastloginMetrics
from .recorded import RecordedDays

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
        self._home_prefix = str(config.mailboxes_dir) + "/"
        self._recorded = RecordedDays()

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
        timestamp = parse_timestamp(value)
        if timestamp is not None:
            day = day_timestamp(timestamp)
            if self._recorded.known(addr, day):
                self._unchanged.inc()
                return
        try:
            self.mailboxes.check_address(addr)
        except InvalidAddress as exc:
            log.warning("last-login ignored: %s", exc)
            self._failed.inc()
            return
        if timestamp is None:
            log.warning("last-login for %s ignored: bad timestamp %r", addr, value[:40])
            self._failed.inc()
            return
        # a string path on the hot path: no Path objects
        touched = set_login_day(self._home_prefix + addr + "/" + PASSWORD, day)
        if touched is False:
            self._recorded.remember(addr, day)
        else:  # written (confirmed by the next set's stat) or no account (yet)
            self._recorded.forget(addr)
        (self._updated if touched else self._unchanged).inc()
