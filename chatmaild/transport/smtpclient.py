"""SMTP to an MX host's port 25 with STARTTLS required and verified (thin I/O, aiosmtplib).

`send` returns `Unreachable` when no SMTP transaction could start (connection refused,
timeout, STARTTLS not offered, certificate not verified, lost connection): nothing was
decided, try elsewhere or later. Otherwise the remote's reply per recipient: the MAIL reply
for all when it refused, the RCPT reply for a refused recipient, the DATA reply for the
accepted ones. One connection per delivery; this is the fallback path.
"""

import asyncio
import ssl
from dataclasses import dataclass

import aiosmtplib

from .https import tls_context
from .mx import verifies_certificate

TIMEOUT = 60.0
DATA_TIMEOUT = 300.0


@dataclass(frozen=True, slots=True)
class Unreachable:
    why: str
    tls: bool = False  # the failure was in STARTTLS or the certificate check


def _unverified_context() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


class SmtpSender:
    def __init__(self, helo_name: str, port=25, timeout=TIMEOUT, ssl_context=None):
        self.helo_name = helo_name
        self.port = port
        self.timeout = timeout
        self._verified = ssl_context or tls_context()
        self._unverified = _unverified_context()

    async def send(self, host, mail_from, rcpt_tos, data, mail_options=()):
        """-> Unreachable, or a tuple of (code, text) per recipient of `rcpt_tos`."""
        verify = verifies_certificate(host)
        client = aiosmtplib.SMTP(
            hostname=host,
            port=self.port,
            local_hostname=self.helo_name,
            timeout=self.timeout,
            start_tls=False,
            validate_certs=verify,
            tls_context=self._verified if verify else self._unverified,
        )
        try:
            try:
                await client.connect()
                await client.ehlo()
            except (TimeoutError, aiosmtplib.SMTPException, OSError) as e:
                return Unreachable(_why(e))
            if not client.supports_extension("starttls"):
                return Unreachable("STARTTLS not offered", tls=True)
            try:
                await client.starttls(server_hostname=host)
                await client.ehlo()
            except (TimeoutError, aiosmtplib.SMTPException, OSError, ssl.SSLError) as e:
                return Unreachable(f"TLS failed: {_why(e)}", tls=True)
            return await self._transaction(client, mail_from, rcpt_tos, data, mail_options)
        except (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPTimeoutError, OSError) as e:
            return Unreachable(f"lost connection: {_why(e)}")
        finally:
            client.close()

    async def _transaction(self, client, mail_from, rcpt_tos, data, mail_options):
        options = [o for o in mail_options if _supported(client, o)]
        try:
            await client.mail(mail_from, options=options, encoding="utf-8")
        except aiosmtplib.SMTPResponseException as e:
            return tuple((e.code, e.message) for _ in rcpt_tos)
        replies: list = [None] * len(rcpt_tos)
        accepted = []
        for i, rcpt in enumerate(rcpt_tos):
            try:
                await client.rcpt(rcpt, encoding="utf-8")
                accepted.append(i)
            except aiosmtplib.SMTPResponseException as e:
                replies[i] = (e.code, e.message)
        if not accepted:
            return tuple(replies)
        try:
            response = await client.data(data, timeout=DATA_TIMEOUT)
            reply = (response.code, response.message)
        except aiosmtplib.SMTPResponseException as e:
            reply = (e.code, e.message)
        for i in accepted:
            replies[i] = reply
        try:
            await client.quit()
        except (TimeoutError, aiosmtplib.SMTPException, OSError):
            pass
        return tuple(replies)


def _supported(client, option: str) -> bool:
    name = option.split("=", 1)[0].upper()
    if name == "BODY":
        return client.supports_extension("8bitmime")
    return client.supports_extension(name.lower())


def _why(exc: BaseException) -> str:
    if isinstance(exc, asyncio.TimeoutError):
        return "timeout"
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        return f"{exc.code} {exc.message}"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__
