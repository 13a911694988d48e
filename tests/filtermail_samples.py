"""Builders for filtermail test messages: real OpenPGP data made with PGPy, wrapped as mail.

Shared by the filtermail tests and benchmarks (import with the tests folder on sys.path).
Keys and messages are cached per process, so each is generated once per test session.
"""

import base64
import binascii
import functools
import warnings

from pgpy import PGPUID, PGPKey, PGPMessage
from pgpy.constants import (
    CompressionAlgorithm,
    EllipticCurveOID,
    HashAlgorithm,
    KeyFlags,
    PubKeyAlgorithm,
    SymmetricKeyAlgorithm,
)

warnings.filterwarnings("ignore", module="pgpy")

SENDER = "alice@chat.example"
RECIPIENT = "bob@other.example"
BOUNDARY = "EncRypT3d_b0undary"
PASSWORD = "correct horse battery staple"

_PREFS = dict(
    hashes=[HashAlgorithm.SHA256],
    ciphers=[SymmetricKeyAlgorithm.AES128],
    compression=[CompressionAlgorithm.Uncompressed],
)
_ENCRYPT = {KeyFlags.EncryptCommunications, KeyFlags.EncryptStorage}


@functools.cache
def key(kind: str) -> PGPKey:
    """A secret key: "rsa" (RSA 2048), "p256" (ECDSA + ECDH NIST P-256), "x25519"."""
    if kind == "rsa":
        primary = PGPKey.new(PubKeyAlgorithm.RSAEncryptOrSign, 2048)
        usage = _ENCRYPT | {KeyFlags.Sign}
        primary.add_uid(PGPUID.new(kind, email=f"{kind}@chat.example"), usage=usage, **_PREFS)
        return primary
    if kind == "p256":
        primary = PGPKey.new(PubKeyAlgorithm.ECDSA, EllipticCurveOID.NIST_P256)
        sub = PGPKey.new(PubKeyAlgorithm.ECDH, EllipticCurveOID.NIST_P256)
    elif kind == "x25519":
        primary = PGPKey.new(PubKeyAlgorithm.EdDSA, EllipticCurveOID.Ed25519)
        sub = PGPKey.new(PubKeyAlgorithm.ECDH, EllipticCurveOID.Curve25519)
    else:
        raise ValueError(kind)
    uid = PGPUID.new(kind, email=f"{kind}@chat.example")
    primary.add_uid(uid, usage={KeyFlags.Sign}, **_PREFS)
    primary.add_subkey(sub, usage=_ENCRYPT)
    return primary


def payload(size: int) -> bytes:
    """Deterministic, incompressible-looking plaintext of `size` bytes."""
    block = bytes(range(256)) * 4
    return (block * (size // len(block) + 1))[:size]


@functools.cache
def encrypt(recipients: tuple[str, ...], size: int = 100, password: str | None = None) -> bytes:
    """Binary OpenPGP message: one PKESK per key kind in `recipients`, optional SKESK."""
    message = PGPMessage.new(
        payload(size), format="b", compression=CompressionAlgorithm.Uncompressed
    )
    cipher = SymmetricKeyAlgorithm.AES128
    session_key = cipher.gen_key()
    for kind in recipients:
        message = key(kind).pubkey.encrypt(message, cipher=cipher, sessionkey=session_key)
    if password is not None:
        message = message.encrypt(password, cipher=cipher, sessionkey=session_key)
    return bytes(message)


def decrypts(binary: bytes, size: int, kinds=(), password=None) -> bool:
    """PGPy as the oracle: every key (and the password) recovers the plaintext."""
    results = []
    if kinds:
        # PGPy 0.6 trips over an SKESK when decrypting with a key: hand it the PKESKs only.
        if password is not None:
            binary_for_keys = join_packets([p for p in packets(binary) if p[0] != 3])
        else:
            binary_for_keys = binary
        by_key = PGPMessage.from_blob(binary_for_keys)
        results += [key(kind).decrypt(by_key).message for kind in kinds]
    if password is not None:
        results.append(PGPMessage.from_blob(binary).decrypt(password).message)
    expected = payload(size)
    return bool(results) and all(
        (r.encode("latin-1") if isinstance(r, str) else bytes(r)) == expected for r in results
    )


# --- packet framing helpers (independent of the code under test) ---


def new_header(tag: int, length: int) -> bytes:
    if length < 192:
        lenbytes = bytes([length])
    elif length < 8384:
        length -= 192
        lenbytes = bytes([(length >> 8) + 192, length & 0xFF])
    else:
        lenbytes = b"\xff" + length.to_bytes(4, "big")
    return bytes([0xC0 | tag]) + lenbytes


def old_header(tag: int, length: int) -> bytes:
    if length < 256:
        return bytes([0x80 | (tag << 2) | 0, length])
    if length < 65536:
        return bytes([0x80 | (tag << 2) | 1]) + length.to_bytes(2, "big")
    return bytes([0x80 | (tag << 2) | 2]) + length.to_bytes(4, "big")


def packets(binary: bytes) -> list[tuple[int, bytes]]:
    """Split definite-length new-format packets into (tag, body)."""
    result = []
    pos = 0
    while pos < len(binary):
        header = binary[pos]
        assert header & 0xC0 == 0xC0, "sample is expected in new format"
        tag = header & 0x3F
        octet = binary[pos + 1]
        if octet < 192:
            length, pos = octet, pos + 2
        elif octet < 224:
            length, pos = ((octet - 192) << 8) + binary[pos + 2] + 192, pos + 3
        else:
            assert octet == 255
            length, pos = int.from_bytes(binary[pos + 2 : pos + 6], "big"), pos + 6
        result.append((tag, binary[pos : pos + length]))
        pos += length
    return result


def join_packets(pkts, old_format_tags=()) -> bytes:
    return b"".join(
        (old_header if tag in old_format_tags else new_header)(tag, len(body)) + body
        for tag, body in pkts
    )


def partial_frame(tag: int, body: bytes, chunk_exponent: int = 10, first_exponent=None) -> bytes:
    """A packet with partial body lengths: chunks of 2**n, then a definite-length tail."""
    out = bytearray([0xC0 | tag])
    pos = 0
    exponent = chunk_exponent if first_exponent is None else first_exponent
    while len(body) - pos > (1 << exponent):
        out.append(224 + exponent)
        out += body[pos : pos + (1 << exponent)]
        pos += 1 << exponent
        exponent = chunk_exponent
    tail = body[pos:]
    out += new_header(tag, len(tail))[1:] + tail
    return bytes(out)


def reframe_seipd_partial(binary: bytes, chunk_exponent: int = 10, first_exponent=None) -> bytes:
    """Re-encode the SEIPD packet of `binary` with partial body lengths."""
    out = b""
    for tag, body in packets(binary):
        if tag == 18:
            out += partial_frame(tag, body, chunk_exponent, first_exponent)
        else:
            out += new_header(tag, len(body)) + body
    return out


# --- armor and MIME ---


def _crc24_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte << 16
        for _ in range(8):
            crc <<= 1
            if crc & 0x1000000:
                crc ^= 0x1864CFB
        table.append(crc & 0xFFFFFF)
    return table


_CRC24_TABLE = _crc24_table()


def crc24(data: bytes) -> int:
    """The OpenPGP armor checksum (RFC 4880 6.1)."""
    crc = 0xB704CE
    table = _CRC24_TABLE
    for byte in data:
        crc = ((crc << 8) & 0xFFFFFF) ^ table[(crc >> 16) ^ byte]
    return crc


@functools.lru_cache(maxsize=64)
def armor(binary: bytes, headers=(), checksum=True, line_length=64) -> bytes:
    """ASCII armor with LF line ends (convert with `crlf()` where wanted)."""
    encoded = base64.b64encode(binary)
    lines = [b"-----BEGIN PGP MESSAGE-----"]
    lines += [h.encode() for h in headers]
    lines.append(b"")
    lines += [encoded[i : i + line_length] for i in range(0, len(encoded), line_length)]
    if checksum:
        lines.append(b"=" + base64.b64encode(crc24(binary).to_bytes(3, "big")))
    lines.append(b"-----END PGP MESSAGE-----")
    return b"\n".join(lines) + b"\n"


def crlf(data: bytes) -> bytes:
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def encode_body(body: bytes, cte: str) -> bytes:
    if cte == "base64":
        return base64.encodebytes(body)
    if cte == "quoted-printable":
        return binascii.b2a_qp(body)
    return body


def mime_part(content_type: str, body: bytes, cte: str | None = "7bit", extra=()) -> bytes:
    headers = [f"Content-Type: {content_type}"]
    if cte:
        headers.append(f"Content-Transfer-Encoding: {cte}")
    headers += list(extra)
    return "\n".join(headers).encode() + b"\n\n" + encode_body(body, cte or "7bit")


def multipart(parts, boundary=BOUNDARY, close=True, preamble=b"", epilogue=b"") -> bytes:
    out = preamble
    for part in parts:
        out += b"\n--" + boundary.encode() + b"\n" + part
    if close:
        out += b"\n--" + boundary.encode() + b"--\n" + epilogue
    return out


def mail(headers: dict | list, body: bytes, line_ends="crlf") -> bytes:
    items = headers.items() if isinstance(headers, dict) else headers
    head = "".join(f"{name}: {value}\n" for name, value in items).encode()
    raw = head + b"\n" + body
    return crlf(raw) if line_ends == "crlf" else raw


def top_headers(sender=SENDER, to=RECIPIENT, content_type=None, **extra) -> dict:
    headers = {
        "From": f"Alice <{sender}>",
        "To": f"<{to}>",
        "Subject": "[...]",
        "Date": "Thu, 01 Jan 2026 00:00:00 +0000",
        "Message-ID": "<sample@chat.example>",
        "MIME-Version": "1.0",
    }
    if content_type:
        headers["Content-Type"] = content_type
    for name, value in extra.items():
        headers[name.replace("_", "-")] = value
    return headers


ENCRYPTED_CT = (
    f'multipart/encrypted; protocol="application/pgp-encrypted";\n\tboundary="{BOUNDARY}"'
)


def encrypted_mail(
    armored: bytes,
    *,
    sender=SENDER,
    to=RECIPIENT,
    cte="7bit",
    line_ends="crlf",
    version_body=b"Version: 1\n",
    control_type="application/pgp-encrypted",
    payload_type='application/octet-stream; name="encrypted.asc"',
    content_type=ENCRYPTED_CT,
    extra_parts=(),
    headers=None,
) -> bytes:
    """An RFC 3156 multipart/encrypted mail around `armored` (line_ends: "crlf" or "lf")."""
    parts = [
        mime_part(control_type, version_body, "7bit"),
        mime_part(
            payload_type,
            armored,
            cte,
            extra=['Content-Disposition: inline; filename="encrypted.asc"'],
        ),
        *extra_parts,
    ]
    hdrs = headers if headers is not None else top_headers(sender, to, content_type)
    return mail(hdrs, multipart(parts), line_ends)


def plain_mail(sender=SENDER, to=RECIPIENT, body=b"hello\n", line_ends="crlf", **extra) -> bytes:
    headers = top_headers(sender, to, "text/plain; charset=utf-8", **extra)
    return mail(headers, body, line_ends)


def securejoin_mail(step="vc-request", body=None, header=None, parts=None, ct=None) -> bytes:
    body = body if body is not None else f"Secure-Join: {step}\n".encode()
    parts = parts if parts is not None else [mime_part("text/plain; charset=utf-8", body)]
    headers = top_headers(
        content_type=ct or f'multipart/mixed; boundary="{BOUNDARY}"',
        Secure_Join=header if header is not None else step,
    )
    return mail(headers, multipart(parts))
