"""The unix socket of chatmail-turn: every connection gets one credential line, then EOF.

Nothing is read from the client. The socket is mode 0666: the same credentials go to every
account of the relay over IMAP METADATA, and anyone can make an account, so a local process
learns nothing more from the socket.
"""

import asyncio
import logging
import os
import time
from pathlib import Path

from chatmaild.daemon import listen_error, remove_stale_socket
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
        """Listen; StartupError (one line) when the socket cannot be made."""
        loop = asyncio.get_running_loop()
        try:
            remove_stale_socket(self.socket_path)  # left by an earlier run
            self._server = await loop.create_unix_server(
                lambda: _Answer(self), path=str(self.socket_path)
            )
        except OSError as e:
            raise listen_error(self.socket_path, e) from None
        os.chmod(self.socket_path, 0o666)
        log.info("chatmail-turn serving credentials on %s", self.socket_path)

    async def close(self):
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
