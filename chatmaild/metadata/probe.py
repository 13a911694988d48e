"""Is a local HTTP service answering? A cached, single-flight GET probe for METADATA answers.

The iroh relay is advertised only while `GET /ping` at <iroh_relay_listen> answers
200. A lookup never waits for more than one probe (at most `timeout`), and within `ttl` of the
last probe it is answered from the cache without I/O. Concurrent lookups share one probe.
Changes between up and down are logged once each, never per lookup.
"""

import asyncio
import logging
import time

log = logging.getLogger(__name__)

MAX_STATUS_LINE = 1024


def status_ok(status_line: bytes) -> bool:
    """True for an `HTTP/1.x 200 ...` status line (pure)."""
    parts = status_line.split(None, 2)
    return len(parts) >= 2 and parts[0].startswith(b"HTTP/1.") and parts[1] == b"200"


class HttpProbe:
    """`host` and `port`, or `unix` (a socket path) with host None."""

    def __init__(self, what, host, port, path="/ping", ttl=5.0, timeout=1.0, clock=None, unix=None):
        self.what = what
        self.host = host
        self.port = port
        self.unix = unix
        self.path = path
        self.ttl = ttl
        self.timeout = timeout
        self._clock = clock or time.monotonic
        self._up: bool | None = None  # None: never probed
        self._checked_at = float("-inf")
        self._task: asyncio.Task | None = None

    @classmethod
    def for_listen(cls, what, spec, **kwargs):
        """A probe of a daemon's listen spec (`HOST:PORT` or `unix:/path`, config.py)."""
        if spec.startswith("unix:"):
            return cls(what, None, None, unix=spec[len("unix:") :], **kwargs)
        host, _, port = spec.rpartition(":")
        return cls(what, host.strip("[]"), int(port), **kwargs)

    @property
    def where(self):
        base = f"unix:{self.unix}" if self.unix else f"{self.host}:{self.port}"
        return base + self.path

    def cached(self) -> bool | None:
        """The last result while it is fresh, None when a probe is due."""
        if self._up is None or self._clock() - self._checked_at >= self.ttl:
            return None
        return self._up

    async def check(self) -> bool:
        """Probe now (or join the probe in flight); returns up?"""
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._probe())
        return await asyncio.shield(self._task)

    async def _probe(self) -> bool:
        try:
            up = await asyncio.wait_for(self._get(), self.timeout)
            why = "" if up else "no 200 answer"
        except TimeoutError:
            up, why = False, f"no answer within {self.timeout:g} s"
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as e:
            up, why = False, f"{type(e).__name__}: {e}"
        self._checked_at = self._clock()
        if up != self._up:
            if up:
                log.info("%s answers at %s: advertised", self.what, self.where)
            else:
                log.warning(
                    "%s not answering at %s (%s): not advertised", self.what, self.where, why
                )
        self._up = up
        return up

    async def _get(self) -> bool:
        if self.unix:
            reader, writer = await asyncio.open_unix_connection(self.unix, limit=MAX_STATUS_LINE)
        else:
            reader, writer = await asyncio.open_connection(
                self.host, self.port, limit=MAX_STATUS_LINE
            )
        try:
            host = self.host or "localhost"
            request = f"GET {self.path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
            writer.write(request.encode())
            await writer.drain()
            return status_ok(await reader.readline())
        finally:
            writer.close()
