"""filtermail wiring: the SMTP server core, the pure policy and the reinjection client.

One handler per mode. Outgoing: MAIL FROM syntax and the per-sender rate limit at MAIL,
the outgoing policy at the end of DATA. Incoming: the incoming policy at the end of DATA,
with `enforceE2EEincoming` looked up in the mailbox directory, then (for mail it accepts)
DKIM verification with keys from DNS (`filtermail_dkim_check`). Every decision is logged as
exactly one line with one logging call; accepted mail is re-injected and the client gets
the downstream reply. The incoming filter also answers relay-to-relay deliveries over HTTP
(`build_http_server`, `/mxdeliv`) with the same handler.
"""

import logging
import time

from chatmaild.mailbox import InvalidAddress, Mailboxes
from chatmaild.metrics.filtermail import FiltermailMetrics
from chatmaild.smtp.proto import MailFrom, MessageRefused, Reply, Transaction
from chatmaild.smtp.reinject import Reinjector
from chatmaild.smtp.server import Handler, ServerSettings, SMTPServer

from .dkimcheck import FAIL, DkimResult, screen, verify
from .dkimkeys import KeyFetcher
from .httpserver import MxdelivServer
from .policy import (
    Envelope,
    check_dkim,
    check_incoming,
    check_mail_from,
    check_outgoing,
    check_rate,
)
from .ratelimit import RateLimiter

log = logging.getLogger("filtermail")

MODES = ("outgoing", "incoming")
LISTEN_HOST = "127.0.0.1"
# What filtermail asks Postfix's before-queue proxy to forward (XFORWARD): incoming needs
# the client address for IP-literal senders; outgoing uses none, and announcing it would
# cost every submitted message one more lock-step command.
XFORWARD = {"outgoing": (), "incoming": ("ADDR",)}


def ports(config, mode: str) -> tuple[int, int]:
    """(listen port, reinject port) of a mode."""
    if mode == "outgoing":
        return config.filtermail_smtp_port, config.postfix_reinject_port
    if mode == "incoming":
        return config.filtermail_smtp_port_incoming, config.postfix_reinject_port_incoming
    raise ValueError(f"mode must be one of {MODES}, not {mode!r}")


class FilterHandler(Handler):
    def __init__(
        self,
        mode: str,
        config,
        reinjector: Reinjector,
        limiter=None,
        boxes=None,
        metrics=None,
        key_fetcher: KeyFetcher | None = None,
    ):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
        self.mode = mode
        self.metrics = metrics if metrics is not None else FiltermailMetrics(mode)
        self.label = mode.capitalize()
        self.config = config
        self.reinjector = reinjector
        self.limiter = limiter
        if mode == "outgoing" and limiter is None:
            self.limiter = RateLimiter(
                config.max_user_send_per_minute, config.max_user_send_burst_size
            )
        self.boxes = boxes or Mailboxes(config.mailboxes_dir, config.address_domain)
        self.key_fetcher = None
        if mode == "incoming" and config.filtermail_dkim_check:
            self.key_fetcher = key_fetcher or KeyFetcher(config.filtermail_dkim_nameserver or None)

    def enforces_e2ee(self, addr: str) -> bool:
        try:
            return self.boxes.user(addr).enforces_e2ee()
        except InvalidAddress:
            return False

    def on_mail(self, event: MailFrom) -> Reply | None:
        if self.mode != "outgoing":
            return None
        verdict = check_mail_from(event.address) or check_rate(self.limiter, event.address)
        if verdict is None:
            return None
        if verdict.code == 450:
            self.metrics.ratelimited.inc()
        else:
            self.metrics.invalid.inc()
        log.info("%s: Rejected at MAIL FROM: %d %s", self.label, verdict.code, verdict.text)
        return Reply(verdict.code, verdict.text)

    def on_refused(self, event: MessageRefused) -> None:
        reply = event.reply
        log.info(
            "%s: Rejected mail from <%s>: %d %s",
            self.label,
            _printable(event.transaction.mail_from),
            reply.code,
            reply.text,
        )

    async def on_message(self, tx: Transaction, via: str = "") -> Reply:
        """Decide on one message, reinject it when accepted; the reply for the client.

        The SMTP server and the /mxdeliv HTTP listener both end here; `via` is appended to
        the log lines (" (HTTP)" for the listener).
        """
        metrics = self.metrics
        env = Envelope(mail_from=tx.mail_from, rcpt_tos=list(tx.rcpt_tos))
        started = time.perf_counter()
        if self.mode == "outgoing":
            verdict, line = check_outgoing(env, tx.data, self.config)
        else:
            verdict, line = check_incoming(env, tx.data, self.config, self.enforces_e2ee)
            if verdict is None and self.key_fetcher is not None:
                result = await self.verify_dkim(tx.data, tx.client_addr)
                verdict, line = check_dkim(result, env, line)
        decided = time.perf_counter()
        metrics.decision_seconds.observe(decided - started)
        metrics.received_bytes.inc(len(tx.data))
        metrics.count_decision(None if verdict is None else verdict.code, line)
        log.info("%s%s", line, via)
        if verdict is not None:
            return Reply(verdict.code, verdict.text)
        reply = await self.reinjector.send(tx)
        metrics.reinject_seconds.observe(time.perf_counter() - decided)
        if reply.code != 250:
            metrics.reinject_failed.inc()
            log.warning(
                "%s: reinjection of mail from <%s> failed: %d %s%s",
                self.label,
                _printable(tx.mail_from),
                reply.code,
                reply.text.replace("\n", " "),
                via,
            )
        return reply

    async def verify_dkim(self, data: bytes, client_addr: str | None = None) -> DkimResult:
        """Screen without DNS (alignment, fields, body hash; at most `MAX_TRIED` signatures
        kept), fetch the keys of those, verify.

        `client_addr` (XFORWARD ADDR) decides an IP-literal From (dkimcheck.check_ip_literal).
        """
        screening = screen(data, client_addr)
        if screening.result is not None:
            return screening.result
        fetcher = self.key_fetcher
        keys = await fetcher.lookup_many(screening.key_names)
        result = verify(data, screening, keys)
        if result.outcome == FAIL:
            # a key rotated (or newly published) within the TTL of our cached answer
            fresh = await fetcher.refresh_many(screening.key_names)
            if any(fresh[name] != keys.get(name) for name in fresh):
                result = verify(data, screening, {**keys, **fresh})
        return result


def _printable(text: str) -> str:
    return text if text.isprintable() else "".join(c if c.isprintable() else "?" for c in text)


def build_server(
    config,
    mode: str,
    *,
    backlog: int = 1024,
    listen_port: int | None = None,
    metrics=None,
    key_fetcher: KeyFetcher | None = None,
    deadlines: dict | None = None,
) -> tuple[SMTPServer, Reinjector]:
    """The (not yet started) server of a mode and its reinjector. `deadlines`: ServerSettings
    keyword arguments (command_timeout, session_timeout, min_data_rate) other than default."""
    port, reinject_port = ports(config, mode)
    reinjector = Reinjector(LISTEN_HOST, reinject_port, local_hostname="localhost")
    handler = FilterHandler(mode, config, reinjector, metrics=metrics, key_fetcher=key_fetcher)
    settings = ServerSettings(
        hostname=config.mail_domain,
        max_message_size=config.max_message_size,
        xforward=XFORWARD[mode],
        **(deadlines or {}),
    )
    server = SMTPServer(
        handler,
        LISTEN_HOST,
        port if listen_port is None else listen_port,
        settings=settings,
        backlog=backlog,
    )
    handler.metrics.track_sessions(server.sessions)
    return server, reinjector


def build_http_server(
    config, server: SMTPServer, *, listen_port: int | None = None, backlog: int = 1024
) -> MxdelivServer:
    """The (not yet started) /mxdeliv listener of the incoming filter `server`: the same
    handler (checks, metrics, reinjector) behind an HTTP front."""
    handler = server.handler
    if handler.mode != "incoming":
        raise ValueError("the /mxdeliv listener belongs to the incoming filter")
    port = config.filtermail_http_port_incoming if listen_port is None else listen_port
    return MxdelivServer(
        handler,
        LISTEN_HOST,
        port,
        max_message_size=config.max_message_size,
        backlog=backlog,
    )
