"""One message, all its recipients: group by domain, choose hosts, HTTPS first, SMTP after.

The decisions are the pure modules' (mx.py, memory.py, replies.py, limits.py); this module
only sequences the I/O and writes one log line per delivery (message and domain):

    transport: to=<domain> rcpts=N from=<sender> size=S via=https host=mx: 250 ... [trail]

For each MX host in preference order: HTTPS unless the host is remembered as SMTP-only, then
SMTP port 25 when HTTPS did not deliver. A host remembered as SMTP-only whose port 25
cannot be reached is forgotten and tried over HTTPS at once.
"""

import asyncio
import logging
import time

from chatmaild.smtp.proto import Reply

from . import replies as R
from .limits import Admission
from .memory import SmtpOnlyMemory
from .mx import domain_of, hosts_or_reply, ip_literal
from .smtpclient import Unreachable
from .wire import stuff_body

log = logging.getLogger("filtermail-transport")

# Postfix gives up on an LMTP reply after lmtp_data_done_timeout (600 s) and retries the
# message later; a delivery that could outlast it is cut short with a 4xx first.
DELIVERY_DEADLINE = 540.0


class _Message:
    """The message of one LMTP transaction, with its DATA form built once on demand."""

    __slots__ = ("tx", "_stuffed")

    def __init__(self, tx):
        self.tx = tx
        self._stuffed = None

    @property
    def stuffed(self) -> bytes:
        if self._stuffed is None:
            self._stuffed = stuff_body(self.tx.data)
        return self._stuffed

    def mail_options(self) -> list[str]:
        options = [f"SIZE={len(self.tx.data)}"]
        if self.tx.body_type == "8BITMIME":
            options.append("BODY=8BITMIME")
        if self.tx.smtputf8:
            options.append("SMTPUTF8")
        return options


class Deliverer:
    def __init__(
        self,
        resolver,
        https,
        smtp,
        memory: SmtpOnlyMemory | None = None,
        admission: Admission | None = None,
        metrics=None,
        clock=time.monotonic,
        deadline=DELIVERY_DEADLINE,
    ):
        self.resolver = resolver
        self.https = https
        self.smtp = smtp
        self.memory = memory if memory is not None else SmtpOnlyMemory()
        self.admission = admission if admission is not None else Admission()
        self.metrics = metrics
        self.clock = clock
        self.deadline = deadline
        self._slots: dict[str, asyncio.Semaphore] = {}  # per destination, while in use

    async def deliver(self, tx) -> list[Reply]:
        """One reply per recipient of `tx`, in order."""
        by_domain: dict[str, list[int]] = {}
        for i, rcpt in enumerate(tx.rcpt_tos):
            by_domain.setdefault(domain_of(rcpt), []).append(i)
        message = _Message(tx)
        out: list = [None] * len(tx.rcpt_tos)
        jobs = [self._domain(message, domain, idx) for domain, idx in by_domain.items()]
        results = await asyncio.gather(*jobs) if len(jobs) > 1 else [await jobs[0]]
        for idx, domain_replies in zip(by_domain.values(), results, strict=True):
            for i, reply in zip(idx, domain_replies, strict=True):
                out[i] = reply
        return out

    async def _domain(self, message, domain, idx) -> list[Reply]:
        rcpts = [message.tx.rcpt_tos[i] for i in idx]
        if not domain:
            return self._done(message, domain, rcpts, [R.BAD_RECIPIENT] * len(idx), None, "", [])
        if not self.admission.enter(domain):
            if self.metrics is not None:
                self.metrics.busy.inc(len(idx))
            return self._done(message, domain, rcpts, [R.BUSY] * len(idx), None, "", ["busy"])
        slot = self._slots.get(domain)
        if slot is None:
            slot = self._slots[domain] = asyncio.Semaphore(self.admission.per_destination)
        start = self.clock()
        try:
            async with slot:  # at most per_destination running, the rest wait their turn
                if self.metrics is not None:
                    self.metrics.in_flight.inc()
                try:
                    async with asyncio.timeout(self.deadline):
                        replies, via, host, trail = await self._hosts(message, domain, rcpts)
                except TimeoutError:
                    late = R.too_slow(self.deadline)
                    replies, via, host, trail = [late] * len(rcpts), None, "", ["deadline"]
                finally:
                    if self.metrics is not None:
                        self.metrics.in_flight.dec()
        finally:
            self.admission.leave(domain)
            if not self.admission.taken(domain):
                del self._slots[domain]
            if self.metrics is not None:
                self.metrics.delivery_seconds.observe(self.clock() - start)
        return self._done(message, domain, rcpts, replies, via, host, trail)

    async def _hosts(self, message, domain, rcpts):
        """(replies, via, host, trail) for the recipients of one domain."""
        literal = ip_literal(domain)
        if literal is not None:
            hosts = (literal,)
        else:
            hosts = hosts_or_reply(domain, await self.resolver.lookup(domain))
        if isinstance(hosts, Reply):
            return [hosts] * len(rcpts), None, "", ["dns"]
        trail = []
        last = None
        refusal = None
        for host in hosts:
            result, via, failure, host_refusal = await self._host(message, host, rcpts, trail)
            if result is not None:
                return result, via, host, trail
            last = failure
            refusal = refusal or host_refusal
        return [R.final_reply(last, refusal)] * len(rcpts), None, "", trail

    async def _host(self, message, host, rcpts, trail):
        """Try one host: (replies or None, via, temporary failure reply, HTTPS refusal)."""
        if self.memory.smtp_only(host):
            trail.append(f"{host}: smtp-only")
            result = await self._smtp(message, host, rcpts, trail)
            if not isinstance(result, Reply):
                return result, "smtp", None, None
            self.memory.forget(host)
            https = await self._https(message, host, rcpts, trail)
            if https is None:
                return [R.delivered_https(host)] * len(rcpts), "https", None, None
            return None, None, result, R.https_reported(https.body) if https.status else None
        https = await self._https(message, host, rcpts, trail)
        if https is None:
            return [R.delivered_https(host)] * len(rcpts), "https", None, None
        refusal = R.https_reported(https.body) if https.status is not None else None
        if self.metrics is not None:
            self.metrics.fallbacks.inc()
        result = await self._smtp(message, host, rcpts, trail)
        if isinstance(result, Reply):
            self.memory.forget(host)
            return None, None, result, refusal
        if any(200 <= r.code < 300 for r in result):
            self.memory.remember(host)
            trail.append(f"{host}: smtp-only for {self.memory.interval:.0f} s")
        return result, "smtp", None, None

    async def _https(self, message, host, rcpts, trail):
        """None when delivered, else the HttpsResult."""
        tx = message.tx
        result = await self.https.post(host, tx.mail_from, rcpts, message.stuffed)
        if result.delivered:
            return None
        why = R.https_failure_text(result.status, result.body, result.error)
        trail.append(f"{host}: https {why}")
        return result

    async def _smtp(self, message, host, rcpts, trail):
        """Per-recipient replies of the remote, or the temporary Reply when unreachable."""
        tx = message.tx
        result = await self.smtp.send(host, tx.mail_from, rcpts, tx.data, message.mail_options())
        if isinstance(result, Unreachable):
            trail.append(f"{host}: smtp {result.why}")
            return R.unreachable(host, self.smtp.port, result.why)
        return [R.smtp_reply(host, code, text) for code, text in result]

    def _done(self, message, domain, rcpts, replies, via, host, trail):
        if self.metrics is not None:
            self.metrics.count_replies(replies, via)
        codes = sorted({r.code for r in replies})
        first = replies[0]
        tx = message.tx
        log.info(
            "transport: to=<%s> rcpts=%d from=<%s> size=%d via=%s host=%s: %s%s%s",
            domain,
            len(rcpts),
            tx.mail_from,
            len(tx.data),
            via or "none",
            host or "-",
            f"{first.code} {first.text}",
            "" if len(codes) == 1 else f" (codes {','.join(map(str, codes))})",
            f" [{'; '.join(trail)}]" if trail else "",
        )
        return replies
