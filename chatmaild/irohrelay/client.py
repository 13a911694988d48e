"""A small asyncio client of the iroh 0.35 relay protocol, for tests, benchmarks and probes.

`RelayClient.connect(host, port)` does what iroh's `connect_relay` does: `GET /relay` with
`Upgrade: iroh derp http`, expects 101, then sends the ClientInfo frame signed by its key.
"""

import asyncio

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from . import frames as fr
from .handshake import PROTOCOL_VERSION, client_info, public_key


class RelayClient:
    def __init__(self, reader, writer, private_key):
        self.reader = reader
        self.writer = writer
        self.private_key = private_key
        self.key = public_key(private_key)
        self.decoder = fr.FrameDecoder()
        self._frames = []

    @classmethod
    async def connect(
        cls,
        host,
        port,
        private_key=None,
        version=PROTOCOL_VERSION,
        path="/relay",
        host_header="localhost",
        handshake=True,
    ):
        private_key = private_key or Ed25519PrivateKey.generate()
        reader, writer = await asyncio.open_connection(host, port)
        request = f"GET {path} HTTP/1.1\r\nHost: {host_header}\r\nUpgrade: iroh derp http\r\n\r\n"
        writer.write(request.encode())
        head = await reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 101 "):
            writer.close()
            status = head.split(b"\r\n", 1)[0].decode("latin-1")
            raise ConnectionError(f"no upgrade: {status}")
        client = cls(reader, writer, private_key)
        if handshake:
            writer.write(client_info(private_key, version))
            await writer.drain()
        return client

    def send_raw(self, data: bytes):
        self.writer.write(data)

    def send_packet(self, dst_key: bytes, data: bytes):
        self.writer.write(fr.send_packet(dst_key, data))

    def ping(self, data: bytes):
        self.writer.write(fr.ping(data))

    async def drain(self):
        await self.writer.drain()

    async def recv_frame(self, timeout=5.0):
        """The next frame `(type, payload)`; EOFError when the relay closed the connection."""
        while not self._frames:
            data = await asyncio.wait_for(self.reader.read(65536), timeout)
            if not data:
                raise EOFError("relay closed the connection")
            self._frames.extend(self.decoder.feed(data))
        return self._frames.pop(0)

    async def recv_packet(self, timeout=5.0):
        """The next RecvPacket as `(src_key, data)`, skipping other frames (pings answered)."""
        while True:
            frame_type, payload = await self.recv_frame(timeout)
            if frame_type == fr.RECV_PACKET:
                return payload[: fr.KEY_LEN], payload[fr.KEY_LEN :]
            if frame_type == fr.PING:
                self.writer.write(fr.pong(payload))

    async def closed(self, timeout=5.0):
        """Frames received until the relay closes the connection."""
        got = []
        try:
            while True:
                got.append(await self.recv_frame(timeout))
        except (EOFError, ConnectionError):
            return got

    def close(self):
        self.writer.close()
