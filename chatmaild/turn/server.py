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

from chatmaild.turn.credentials import VALIDITY, credential_line

log = logging.getLogger(__name__)

WRITE_TIMEOUT = 2.0


class CredentialServer:
    def __init__(self, socket_path, secret: str, clock=time.time, validity: int = VALIDITY):
        self.socket_path = Path(socket_path)
        self._secret = secret
        self._clock = clock
        self._validity = validity
        self._server = None
        self.served = 0

    async def _answer(self, reader, writer):
        try:
            writer.write(credential_line(self._secret, self._clock(), self._validity))
            await asyncio.wait_for(writer.drain(), WRITE_TIMEOUT)
            self.served += 1
        except (OSError, TimeoutError):
            pass  # the client left: nothing to tell anyone
        finally:
            writer.close()

    async def start(self):
        self.socket_path.parent.mkdir(parents=True, exist_ok=True)
        if self.socket_path.is_socket():
            self.socket_path.unlink()  # left by an earlier run
        self._server = await asyncio.start_unix_server(self._answer, path=str(self.socket_path))
        os.chmod(self.socket_path, 0o666)
        log.info("chatmail-turn serving credentials on %s", self.socket_path)

    async def close(self):
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
