"""TURN credentials client: one line read from the TURN server's unix socket.

Any failure (no socket, refused, timeout, empty line) gives None, so the METADATA lookup answers
"not found". The failure is logged once when the state changes (and recovery likewise), never
once per request: Delta Chat asks at every login. A service that keeps coming and going still
gets at most one failure line per `LOG_INTERVAL` (the recovery line only follows a logged one).
"""

import asyncio
import logging
import time

log = logging.getLogger(__name__)

MAX_LINE = 4096
LOG_INTERVAL = 300.0  # seconds between two failure lines at most


class TurnCredentials:
    def __init__(self, socket_path, timeout: float = 2.0, clock=time.monotonic):
        self.socket_path = str(socket_path)
        self.timeout = timeout
        self._clock = clock
        self._failing: str | None = None  # the current failure kind, None while healthy
        self._logged = False  # whether the current failure was logged
        self._last_log = float("-inf")

    async def fetch(self) -> str | None:
        try:
            line = await asyncio.wait_for(self._read_line(), self.timeout)
        except TimeoutError:
            return self._failed(f"no answer within {self.timeout:g} s")
        except (OSError, ValueError, asyncio.LimitOverrunError) as e:
            return self._failed(f"{type(e).__name__}: {e}")
        credentials = line.decode("utf-8", "replace").strip()
        if not credentials:
            return self._failed("empty answer")
        if self._failing is not None:
            if self._logged:
                log.info("TURN credentials available again from %s", self.socket_path)
            self._failing = None
            self._logged = False
        return credentials

    async def _read_line(self) -> bytes:
        reader, writer = await asyncio.open_unix_connection(self.socket_path, limit=MAX_LINE)
        try:
            return await reader.readline()
        finally:
            writer.close()

    def _failed(self, why: str) -> None:
        kind = why.split(":", 1)[0]
        if self._failing != kind:
            self._failing = kind
            now = self._clock()
            if now - self._last_log >= LOG_INTERVAL:
                log.warning("TURN credentials unavailable from %s: %s", self.socket_path, why)
                self._last_log = now
                self._logged = True
        return None
