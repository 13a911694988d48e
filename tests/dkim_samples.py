"""DKIM test material: RSA keys generated here and messages signed with dkimpy the way the
sending relays' OpenDKIM signs (relaxed/simple, rsa-sha256, selector `opendkim`, From and the
other usual fields signed, From oversigned)."""

import base64
import functools
from dataclasses import dataclass

import dkim
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from chatmaild.filtermail.dkimcheck import KeyFound
from chatmaild.relay.opendkim import OVERSIGN_HEADERS, SELECTOR

# What OpenDKIM on a chatmail relay signs, as far as present: RFC 6376's list (dkimpy's
# default, which has From) plus Autocrypt and Content-Type, and the relay's oversigned fields
# once more (chatmaild.relay.opendkim renders the same lists into opendkim.conf).
SIGNED = (*dkim.DKIM.SHOULD, b"autocrypt", b"secure-join")
OVERSIGNED = tuple(name.encode() for name in OVERSIGN_HEADERS)


@dataclass(frozen=True)
class DkimKey:
    private_pem: bytes
    public_der: bytes

    def record(self) -> str:
        """The TXT record text the sending domain publishes."""
        return "v=DKIM1; k=rsa; p=" + base64.b64encode(self.public_der).decode()

    def found(self) -> KeyFound:
        return KeyFound((self.record().encode(),))


@functools.cache
def rsa_key(name: str = "a", bits: int = 2048) -> DkimKey:
    """A fresh RSA key per `name` (cached: generating one takes a while)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    return DkimKey(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        ),
        key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
    )


def _present_headers(message: bytes) -> list[bytes]:
    block = message.split(b"\r\n\r\n", 1)[0]
    names = []
    for line in block.split(b"\r\n"):
        if line[:1] not in (b" ", b"\t") and b":" in line:
            names.append(line.split(b":", 1)[0].strip().lower())
    return names


def sign(
    message: bytes,
    domain: str,
    key: DkimKey | None = None,
    selector: str = SELECTOR,
    *,
    algorithm: bytes = b"rsa-sha256",
    length: bool = False,
) -> bytes:
    """`message` with a DKIM-Signature field of `domain` prepended."""
    key = key or rsa_key()
    present = _present_headers(message)
    include = [h for h in SIGNED if h in present]
    include += [h for h in OVERSIGNED if h in present]
    signature = dkim.sign(
        message,
        selector.encode(),
        domain.encode(),
        key.private_pem,
        canonicalize=(b"relaxed", b"simple"),
        include_headers=include,
        signature_algorithm=algorithm,
        length=length,
    )
    return signature + message


# Bytes that matter to header, tag-list and address parsing, for `damaged`.
DAMAGE_PIECES = (
    b" ",
    b"\t",
    b"\r\n",
    b"\n",
    b"\r\n ",
    b"\r",
    b";",
    b"=",
    b":",
    b"\xff",
    b"\x00",
    b"\x0b",
    b"b=",
    b"d=",
    b"h=",
    b"From ",
    b"From:",
    b"X:",
    b"@",
    b"[",
    b"a=b;",
    b";;",
    b"  =  ",
    b"DKIM-Signature: a=b\r\n",
    b"c=x/y;",
    b"i=sender.example;",
)


def damaged(data: bytes, rng, pieces=DAMAGE_PIECES) -> bytes:
    """`data` with one to four random changes: a byte replaced, a piece inserted, a run
    deleted, or the rest cut off."""
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        pos = rng.randrange(len(out) or 1)
        op = rng.random()
        if op < 0.3:
            out[pos : pos + 1] = bytes([rng.randrange(256)])
        elif op < 0.6:
            out[pos:pos] = rng.choice(pieces)
        elif op < 0.85:
            del out[pos : pos + rng.randint(1, 20)]
        else:
            del out[pos:]
    return bytes(out)
