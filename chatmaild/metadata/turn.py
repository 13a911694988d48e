"""TURN credentials client: one line read from the TURN server's unix socket.

Any failure (no socket, refused, timeout, empty line) gives None, so the METADATA lookup answers
"not found". The failure is logged once when the state changes (and recovery likewise), never
once per request: Delta Chat asks at every login.
"""

import asyncio
import logging

log = logging.getLogger(__name__)

MAX_LINE = 4096


class TurnCredentials:
    def __init__(self, socket_path, timeout: float = 2.0):
        self.socket_path = str(socket_path)
        self.timeout = timeout
        self._failing: str | None = None  # the last logged failure, None while healthy

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
            log.info("TURN credentials available again from %s", self.socket_path)
            self._failing = None
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
            log.warning("TURN credentials unavailable from %s: %s", self.socket_path, why)
            self._failing = kind
        return None
