"""DKIM test material: RSA and Ed25519 keys generated here and messages signed with dkimpy
the way the sending relays' OpenDKIM signs (relaxed/simple, rsa-sha256 or ed25519-sha256,
selector `opendkim`, From and the other usual fields signed, From oversigned). dkimpy signs
ed25519-sha256 with PyNaCl (a test dependency), an implementation independent of ours.

`RFC8463_MESSAGE` and `RFC8463_KEYS` are the example of RFC 8463 Appendix A: one message
signed by football.example.com with an Ed25519 key and with an RSA key."""

import base64
import functools
from dataclasses import dataclass

import dkim
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from chatmaild.filtermail.dkimcheck import KeyFound
from chatmaild.render.opendkim import OVERSIGN_HEADERS, SELECTOR

# What OpenDKIM on a chatmail relay signs, as far as present: RFC 6376's list (dkimpy's
# default, which has From) plus Autocrypt and Content-Type, and the relay's oversigned fields
# once more (chatmaild.render.opendkim renders the same lists into opendkim.conf).
SIGNED = (*dkim.DKIM.SHOULD, b"autocrypt", b"secure-join")
OVERSIGNED = tuple(name.encode() for name in OVERSIGN_HEADERS)


@dataclass(frozen=True)
class DkimKey:
    private_pem: bytes  # for Ed25519: the base64 of the 32-byte seed, as dkimpy takes it
    public_der: bytes  # for Ed25519: the 32 raw bytes (RFC 8463 4.2)
    kind: str = "rsa"

    @property
    def algorithm(self) -> bytes:
        return b"rsa-sha256" if self.kind == "rsa" else b"ed25519-sha256"

    def record(self) -> str:
        """The TXT record text the sending domain publishes."""
        return f"v=DKIM1; k={self.kind}; p=" + base64.b64encode(self.public_der).decode()

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


@functools.cache
def ed25519_key(name: str = "a") -> DkimKey:
    """A fresh Ed25519 key per `name`."""
    key = ed25519.Ed25519PrivateKey.generate()
    seed = key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    return DkimKey(base64.b64encode(seed), public, "ed25519")


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
    algorithm: bytes | None = None,
    length: bool = False,
) -> bytes:
    """`message` with a DKIM-Signature field of `domain` prepended (the algorithm: the
    key's, unless given)."""
    key = key or rsa_key()
    algorithm = algorithm or key.algorithm
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


# RFC 8463 Appendix A.3, byte for byte (header continuation lines start with one space).
RFC8463_MESSAGE = b"\r\n".join(
    [
        b"DKIM-Signature: v=1; a=ed25519-sha256; c=relaxed/relaxed;",
        b" d=football.example.com; i=@football.example.com;",
        b" q=dns/txt; s=brisbane; t=1528637909; h=from : to :",
        b" subject : date : message-id : from : subject : date;",
        b" bh=2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8=;",
        b" b=/gCrinpcQOoIfuHNQIbq4pgh9kyIK3AQUdt9OdqQehSwhEIug4D11Bus",
        b" Fa3bT3FY5OsU7ZbnKELq+eXdp1Q1Dw==",
        b"DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed;",
        b" d=football.example.com; i=@football.example.com;",
        b" q=dns/txt; s=test; t=1528637909; h=from : to : subject :",
        b" date : message-id : from : subject : date;",
        b" bh=2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8=;",
        b" b=F45dVWDfMbQDGHJFlXUNB2HKfbCeLRyhDXgFpEL8GwpsRe0IeIixNTe3",
        b" DhCVlUrSjV4BwcVcOF6+FF3Zo9Rpo1tFOeS9mPYQTnGdaSGsgeefOsk2Jz",
        b" dA+L10TeYt9BgDfQNZtKdN1WO//KgIqXP7OdEFE4LjFYNcUxZQ4FADY+8=",
        b"From: Joe SixPack <joe@football.example.com>",
        b"To: Suzie Q <suzie@shopping.example.net>",
        b"Subject: Is dinner ready?",
        b"Date: Fri, 11 Jul 2003 21:00:37 -0700 (PDT)",
        b"Message-ID: <20030712040037.46341.5F8J@football.example.com>",
        b"",
        b"Hi.",
        b"",
        b"We lost the game.  Are you hungry yet?",
        b"",
        b"Joe.",
        b"",
    ]
)
# RFC 8463 Appendix A.2: the published key records.
RFC8463_KEYS = {
    "brisbane._domainkey.football.example.com": (
        b"v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="
    ),
    "test._domainkey.football.example.com": (
        b"v=DKIM1; k=rsa; p=MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQDkHlOQoBTzWR"
        b"iGs5V6NpP3idY6Wk08a5qhdR6wy5bdOKb2jLQiY/J16JYi0Qvx/byYzCNb3W91y3FutAC"
        b"DfzwQ/BC/e/8uBsCR+yz1Lxj+PL6lHvqMKrM3rG4hstT5QjvHO9PzoxZyVYLzBfO2EeC3"
        b"Ip3G+2kryOTIKT+l/K4w3QIDAQAB"
    ),
}
