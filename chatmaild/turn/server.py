"""The unix socket of chatmail-turn: every connection gets one credential line, then EOF.

Nothing is read from the client. The socket is mode 0666: the same credentials go to every
account of the relay over IMAP METADATA, and anyone can make an account, so a local process
learns nothing more from the socket.
"""

import asyncio
import logging
import time
from pathlib import Path

from chatmaild import acceptor
from chatmaild.metrics.exporter import ListenSpec
from chatmaild.turn.credentials import VALIDITY, credential_line

log = logging.getLogger(__name__)


class _Answer(asyncio.Protocol):
    """Writes the line at connect and closes (after the write buffer drains); nothing read."""

    def __init__(self, server):
        self._server = server

    def connection_made(self, transport):
        server = self._server
        transport.write(credential_line(server._secret, server._clock(), server._validity))
        transport.close()
        server.served += 1

    def data_received(self, data):
        pass  # whatever a client sends is ignored


class CredentialServer:
    def __init__(self, socket_path, secret: str, clock=time.time, validity: int = VALIDITY):
        self.socket_path = Path(socket_path)
        self._secret = secret
        self._clock = clock
        self._validity = validity
        self._server = None
        self.served = 0

    async def start(self):
        """Listen (through chatmaild.acceptor, as every listener of ours: a stale socket of an
        earlier run is replaced, running out of descriptors is logged); StartupError (one
        line) when the socket cannot be made."""
        self._server = acceptor.listen(
            ListenSpec(path=self.socket_path),
            lambda: _Answer(self),
            str(self.socket_path),
            mode=0o666,
        )
        log.info("chatmail-turn serving credentials on %s", self.socket_path)

    async def close(self):
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
