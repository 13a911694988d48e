"""`POST https://<mx>/mxdeliv` with one pooled aiohttp session (thin I/O).

One ClientSession for the whole process: its connector keeps TLS connections open per host,
so a busy destination costs one handshake, not one per message. Certificates are verified
against the system roots (or `SSL_CERT_FILE`), except for IP literals and names starting
with `_`. Any answer and any error become an `HttpsResult`; nothing raises.
"""

import ssl
from dataclasses import dataclass

import aiohttp

from .mx import verifies_certificate
from .wire import is_delivered, request_headers, url

TIMEOUT = 60.0
MAX_REPLY_BODY = 4096
KEEPALIVE = 60.0


@dataclass(frozen=True, slots=True)
class HttpsResult:
    status: int | None  # None: no HTTP answer (connection, TLS or timeout error)
    body: str = ""
    error: str | None = None

    @property
    def delivered(self) -> bool:
        return self.status is not None and is_delivered(self.status)


def tls_context() -> ssl.SSLContext:
    """Verified TLS 1.2+ against the default roots (OpenSSL honours SSL_CERT_FILE)."""
    ctx = ssl.create_default_context()
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


class HttpsSender:
    def __init__(self, port=443, timeout=TIMEOUT, limit=500, limit_per_host=0, ssl_context=None):
        self.port = port
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self.limit = limit
        self.limit_per_host = limit_per_host
        self._ctx = ssl_context or tls_context()
        self._session = None
        self.handshakes = 0  # new connections made (for metrics and the benchmark)

    def _get_session(self):
        if self._session is None:
            trace = aiohttp.TraceConfig()
            trace.on_connection_create_end.append(self._on_new_connection)
            connector = aiohttp.TCPConnector(
                limit=self.limit,
                limit_per_host=self.limit_per_host,
                ssl=self._ctx,
                keepalive_timeout=KEEPALIVE,
                ttl_dns_cache=60,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=self.timeout,
                trace_configs=[trace],
                auto_decompress=False,
                skip_auto_headers=("User-Agent", "Content-Type"),
            )
        return self._session

    async def _on_new_connection(self, session, ctx, params):
        self.handshakes += 1

    async def post(self, host: str, mail_from: str, rcpt_tos, body: bytes) -> HttpsResult:
        """Deliver `body` (dot-stuffed DATA form) for `rcpt_tos` of one domain to `host`."""
        session = self._get_session()
        headers = request_headers(mail_from, rcpt_tos)  # repeated X-MAIL-TO kept
        ssl_arg = self._ctx if verifies_certificate(host) else False
        try:
            async with session.post(
                url(host, self.port),
                data=body,
                headers=headers,
                ssl=ssl_arg,
                allow_redirects=False,
            ) as resp:
                text = await resp.content.read(MAX_REPLY_BODY)
                return HttpsResult(resp.status, text.decode("utf-8", "replace").strip())
        except TimeoutError:
            return HttpsResult(None, error=f"no answer within {self.timeout.total:.0f} s")
        except aiohttp.ClientConnectorCertificateError as e:
            why = f"certificate verification failed: {e.certificate_error}"
            return HttpsResult(None, error=why)
        except aiohttp.ClientSSLError as e:
            return HttpsResult(None, error=f"TLS failed: {e}")
        except aiohttp.ClientConnectorError as e:
            return HttpsResult(None, error=f"cannot connect: {e.os_error.strerror or e}")
        except (aiohttp.ClientError, OSError, ValueError) as e:
            return HttpsResult(None, error=f"{type(e).__name__}: {e}")

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
