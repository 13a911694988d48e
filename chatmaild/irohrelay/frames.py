"""The iroh 0.35 relay wire format: frames in, frames out, no I/O.

A frame on the upgraded HTTP connection is one type byte, a u32 big-endian payload length and
the payload (n0-computer/iroh v0.35.0 `iroh-relay/src/protos/relay.rs`, `RelayCodec`). Over
WebSocket one binary message is the type byte and the payload, without the length. Frames
longer than 1 MiB end the connection; a packet carries at most 64 KiB of data behind its
32-byte key.

`FrameDecoder.feed` returns the complete frames of a chunk as `(type, payload)` pairs; it keeps
at most one partial frame and never reparses it before enough bytes have arrived, so drip-fed
input stays linear.
"""

import struct

# frame types (iroh `FrameType`)
CLIENT_INFO = 2
SEND_PACKET = 4
RECV_PACKET = 5
KEEP_ALIVE = 6
NOTE_PREFERRED = 7
NODE_GONE = 8
PING = 12
PONG = 13
HEALTH = 14
RESTARTING = 15

NAMES = {
    CLIENT_INFO: "ClientInfo",
    SEND_PACKET: "SendPacket",
    RECV_PACKET: "RecvPacket",
    KEEP_ALIVE: "KeepAlive",
    NOTE_PREFERRED: "NotePreferred",
    NODE_GONE: "NodeGone",
    PING: "Ping",
    PONG: "Pong",
    HEALTH: "Health",
    RESTARTING: "Restarting",
}

KEY_LEN = 32
PING_LEN = 8
HEADER_LEN = 5
MAX_FRAME_SIZE = 1024 * 1024
MAX_PACKET_SIZE = 64 * 1024

HEADER = struct.Struct(">BI")
_RESTARTING = struct.Struct(">II")


class FrameError(Exception):
    """The peer broke the framing; the connection must end. `str()` is the log reason."""


def encode(frame_type: int, payload: bytes = b"") -> bytes:
    """One frame for the upgraded HTTP stream."""
    if len(payload) > MAX_FRAME_SIZE:
        raise ValueError(f"frame of {len(payload)} bytes is larger than {MAX_FRAME_SIZE}")
    return HEADER.pack(frame_type, len(payload)) + payload


def encode_ws(frame_type: int, payload: bytes = b"") -> bytes:
    """The content of one binary WebSocket message (iroh `encode_for_ws_msg`)."""
    return bytes((frame_type,)) + payload


def recv_packet_head(src_key: bytes, data_len: int) -> bytes:
    """Header and source key of a RecvPacket frame; the data follows (saves one copy)."""
    return HEADER.pack(RECV_PACKET, KEY_LEN + data_len) + src_key


def send_packet(dst_key: bytes, data: bytes) -> bytes:
    return HEADER.pack(SEND_PACKET, KEY_LEN + len(data)) + dst_key + data


def recv_packet(src_key: bytes, data: bytes) -> bytes:
    return recv_packet_head(src_key, len(data)) + data


def ping(data: bytes) -> bytes:
    return encode(PING, data)


def pong(data: bytes) -> bytes:
    return encode(PONG, data)


def node_gone(key: bytes) -> bytes:
    return encode(NODE_GONE, key)


def health(problem: str) -> bytes:
    return encode(HEALTH, problem.encode("utf-8"))


def restarting(reconnect_in_ms: int, try_for_ms: int) -> bytes:
    return encode(RESTARTING, _RESTARTING.pack(reconnect_in_ms, try_for_ms))


def parse_restarting(payload: bytes) -> tuple[int, int]:
    if len(payload) != _RESTARTING.size:
        raise FrameError(f"Restarting frame of {len(payload)} bytes")
    return _RESTARTING.unpack(payload)


class FrameDecoder:
    """Bytes of the upgraded stream in, `(type, payload)` pairs out."""

    __slots__ = ("_pending", "_need", "max_frame")

    def __init__(self, max_frame: int = MAX_FRAME_SIZE):
        self.max_frame = max_frame
        self._pending = bytearray()
        self._need = 0  # bytes the pending frame needs in all (0: header not known yet)

    def buffered(self) -> int:
        return len(self._pending)

    def feed(self, data: bytes) -> list:
        """The complete frames now available; raises FrameError on an oversized frame."""
        pending = self._pending
        if pending:
            pending += data
            if len(pending) < self._need:
                return []
            data = bytes(pending)
            pending.clear()
            self._need = 0
        frames = []
        unpack = HEADER.unpack_from
        pos = 0
        size = len(data)
        max_frame = self.max_frame
        while size - pos >= HEADER_LEN:
            frame_type, length = unpack(data, pos)
            if length > max_frame:
                raise FrameError(f"frame of {length} bytes (limit {max_frame})")
            end = pos + HEADER_LEN + length
            if end > size:
                self._need = HEADER_LEN + length
                break
            frames.append((frame_type, data[pos + HEADER_LEN : end]))
            pos = end
        if pos < size:
            pending += data[pos:] if pos else data
        return frames


def decode_all(data: bytes) -> list:
    """Every frame in `data`, which must end at a frame boundary (tests and clients)."""
    decoder = FrameDecoder()
    frames = decoder.feed(data)
    if decoder.buffered():
        raise FrameError(f"{decoder.buffered()} bytes of an incomplete frame")
    return frames


class StreamFraming(FrameDecoder):
    """The framing of the upgraded HTTP stream, with the interface `websocket.WsFraming` has:
    `feed`, `encode`, `packet_parts`, and (always empty here) `outgoing` and `closed`."""

    __slots__ = ()
    outgoing = b""
    closed = False

    def encode(self, frame_type: int, payload: bytes = b"") -> bytes:
        return encode(frame_type, payload)

    def packet_parts(self, src_key: bytes, data: bytes) -> tuple:
        return (HEADER.pack(RECV_PACKET, KEY_LEN + len(data)) + src_key, data)
