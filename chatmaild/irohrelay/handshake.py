"""The ClientInfo frame: who the client is, proven by an ed25519 signature. No I/O.

Payload (iroh v0.35.0 `protos/relay.rs`, `Frame::ClientInfo`): the 9 bytes of "RELAY🔑",
the client's 32-byte ed25519 public key, a 64-byte signature, then the signed message, the
postcard encoding of `ClientInfo { version: usize }` (an unsigned LEB128 varint; trailing
bytes are ignored as by `postcard::from_bytes`). The server accepts protocol version 3 only.
"""

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from .frames import CLIENT_INFO, KEY_LEN, encode

MAGIC = "RELAY🔑".encode()
SIGNATURE_LEN = 64
PROTOCOL_VERSION = 3
MIN_LEN = len(MAGIC) + KEY_LEN + SIGNATURE_LEN
MAX_VARINT_LEN = 10  # a u64


class HandshakeError(Exception):
    """The client is refused; `str()` is the reason (sent in a Health frame and logged)."""


def encode_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def decode_varint(data: bytes) -> int:
    value = 0
    for i, byte in enumerate(data[:MAX_VARINT_LEN]):
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            return value
    raise HandshakeError("bad ClientInfo message (varint)")


def parse_client_info(payload: bytes, version: int = PROTOCOL_VERSION) -> bytes:
    """The client's public key from a ClientInfo payload; HandshakeError when refused."""
    if len(payload) < MIN_LEN:
        raise HandshakeError(f"ClientInfo frame of {len(payload)} bytes")
    if payload[: len(MAGIC)] != MAGIC:
        raise HandshakeError("ClientInfo frame without the relay magic")
    key_end = len(MAGIC) + KEY_LEN
    key = bytes(payload[len(MAGIC) : key_end])
    signature = bytes(payload[key_end : key_end + SIGNATURE_LEN])
    message = bytes(payload[key_end + SIGNATURE_LEN :])
    try:
        Ed25519PublicKey.from_public_bytes(key).verify(signature, message)
    except (InvalidSignature, ValueError):
        raise HandshakeError("invalid signature") from None
    got = decode_varint(message)
    if got != version:
        raise HandshakeError(f"unexpected client version {got}, expected {version}")
    return key


# -- the client side (tests, the benchmark) -------------------------------------------------


def public_key(private: Ed25519PrivateKey) -> bytes:
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    return private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def client_info_payload(private: Ed25519PrivateKey, version: int = PROTOCOL_VERSION) -> bytes:
    message = encode_varint(version)
    return MAGIC + public_key(private) + private.sign(message) + message


def client_info(private: Ed25519PrivateKey, version: int = PROTOCOL_VERSION) -> bytes:
    """The whole ClientInfo frame a client sends first."""
    return encode(CLIENT_INFO, client_info_payload(private, version))
