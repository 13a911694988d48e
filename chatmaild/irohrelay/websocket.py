"""Relay frames over WebSocket (RFC 6455, server side), the framing iroh offers beside its own.

One binary message carries one relay frame: the type byte and the payload, without the u32
length (iroh v0.35.0 `Frame::decode_from_ws_msg`). Client frames must be masked; text messages
are skipped (as iroh does), a ping is answered with a pong, a close with a close. Messages may
be fragmented; a message or control frame beyond its limit is a FrameError. No I/O.
"""

import struct

from .frames import KEY_LEN, MAX_FRAME_SIZE, RECV_PACKET, FrameError

OP_CONT = 0x0
OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA

_U16 = struct.Struct(">H")
_U64 = struct.Struct(">Q")


def ws_header(opcode: int, length: int, fin: bool = True) -> bytes:
    first = (0x80 if fin else 0) | opcode
    if length < 126:
        return bytes((first, length))
    if length < 1 << 16:
        return bytes((first, 126)) + _U16.pack(length)
    return bytes((first, 127)) + _U64.pack(length)


def unmask(payload: bytes, mask: bytes) -> bytes:
    if not payload:
        return b""
    n = len(payload)
    key = int.from_bytes((mask * (n // 4 + 1))[:n], "big")
    return (int.from_bytes(payload, "big") ^ key).to_bytes(n, "big")


def mask_frame(opcode: int, payload: bytes, mask: bytes) -> bytes:
    """A masked frame, as a client sends it (tests)."""
    head = bytearray(ws_header(opcode, len(payload)))
    head[1] |= 0x80
    return bytes(head) + mask + unmask(payload, mask)


class WsFraming:
    """Relay frames in binary WebSocket messages. `feed` returns `(type, payload)` pairs;
    replies the protocol itself needs (pong, close) collect in `outgoing`."""

    __slots__ = ("_buf", "_parts", "_parts_len", "_opcode", "outgoing", "closed", "max_message")

    def __init__(self, max_message: int = MAX_FRAME_SIZE + 1):
        self._buf = bytearray()
        self._parts = []
        self._parts_len = 0
        self._opcode = None
        self.outgoing = bytearray()
        self.closed = False
        self.max_message = max_message

    def encode(self, frame_type: int, payload: bytes = b"") -> bytes:
        return ws_header(OP_BINARY, 1 + len(payload)) + bytes((frame_type,)) + payload

    def packet_parts(self, src_key: bytes, data: bytes) -> tuple:
        head = ws_header(OP_BINARY, 1 + KEY_LEN + len(data)) + bytes((RECV_PACKET,))
        return (head + src_key, data)

    def feed(self, data: bytes) -> list:
        buf = self._buf
        buf += data
        frames = []
        pos = 0
        while not self.closed:
            if len(buf) - pos < 2:
                break
            b0, b1 = buf[pos], buf[pos + 1]
            if b0 & 0x70:
                raise FrameError("WebSocket frame with reserved bits set")
            if not b1 & 0x80:
                raise FrameError("unmasked WebSocket frame from a client")
            fin, opcode, length = b0 & 0x80, b0 & 0x0F, b1 & 0x7F
            head = 2
            if length == 126:
                if len(buf) - pos < 4:
                    break
                (length,) = _U16.unpack_from(buf, pos + 2)
                head = 4
            elif length == 127:
                if len(buf) - pos < 10:
                    break
                (length,) = _U64.unpack_from(buf, pos + 2)
                head = 10
            limit = 125 if opcode & 0x8 else self.max_message - self._parts_len
            if length > limit:
                raise FrameError(f"WebSocket frame of {length} bytes (limit {limit})")
            end = pos + head + 4 + length
            if len(buf) < end:
                break
            mask = bytes(buf[pos + head : pos + head + 4])
            payload = unmask(bytes(buf[pos + head + 4 : end]), mask)
            pos = end
            self._frame(fin, opcode, payload, frames)
        del buf[:pos]
        return frames

    def _frame(self, fin, opcode, payload, frames):
        if opcode == OP_PING:
            self.outgoing += ws_header(OP_PONG, len(payload)) + payload
        elif opcode == OP_PONG:
            pass
        elif opcode == OP_CLOSE:
            self.outgoing += ws_header(OP_CLOSE, 2) + b"\x03\xe8"
            self.closed = True
        elif opcode in (OP_TEXT, OP_BINARY, OP_CONT):
            if opcode == OP_CONT:
                if self._opcode is None:
                    raise FrameError("WebSocket continuation without a message")
            elif self._opcode is not None:
                raise FrameError("WebSocket message inside a fragmented message")
            else:
                self._opcode = opcode
            self._parts.append(payload)
            self._parts_len += len(payload)
            if fin:
                message = b"".join(self._parts)
                kind = self._opcode
                self._parts, self._parts_len, self._opcode = [], 0, None
                if kind == OP_BINARY:  # text messages are skipped
                    if not message:
                        raise FrameError("empty WebSocket message")
                    frames.append((message[0], message[1:]))
        else:
            raise FrameError(f"WebSocket opcode {opcode}")
