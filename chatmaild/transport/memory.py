"""Which MX hosts take mail only over SMTP for now (pure; the clock is injected).

After HTTPS failed and SMTP delivered, a host is marked SMTP-only for `interval` seconds, so
a relay without `/mxdeliv` costs one failed HTTPS request per interval, not one per message.
An SMTP connection or TLS failure clears the mark: HTTPS is tried again. Bounded: when
`max_hosts` marks exist, expired ones are dropped, then the oldest.
"""

import time

DEFAULT_INTERVAL = 30 * 60.0
MAX_HOSTS = 100_000


class SmtpOnlyMemory:
    def __init__(self, interval=DEFAULT_INTERVAL, clock=time.monotonic, max_hosts=MAX_HOSTS):
        self.interval = interval
        self.clock = clock
        self.max_hosts = max_hosts
        self._until: dict[str, float] = {}

    def smtp_only(self, host: str) -> bool:
        until = self._until.get(host)
        if until is None:
            return False
        if self.clock() >= until:
            del self._until[host]
            return False
        return True

    def remember(self, host: str) -> None:
        now = self.clock()
        if host not in self._until and len(self._until) >= self.max_hosts:
            self._until = {h: t for h, t in self._until.items() if t > now}
            while len(self._until) >= self.max_hosts:
                del self._until[next(iter(self._until))]
        self._until.pop(host, None)  # re-inserted last: dicts keep insertion order
        self._until[host] = now + self.interval

    def forget(self, host: str) -> None:
        self._until.pop(host, None)

    def __len__(self) -> int:
        return len(self._until)
