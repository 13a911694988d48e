"""RSA keys for DKIM: a new private key as PEM, and the `p=` value of its DNS record.

PKCS#1 PEM ("BEGIN RSA PRIVATE KEY"), which OpenDKIM and dkimpy both read; the public
key goes into DNS as base64 DER SubjectPublicKeyInfo, as opendkim-genkey writes it.
"""

import base64
import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

KEY_BITS = 2048


def new_private_key_pem(bits=KEY_BITS):
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


def public_key_b64(private_pem):
    key = serialization.load_pem_private_key(private_pem, password=None)
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(der).decode()


def ensure_private_key(path):
    """The PEM private key at `path`, created (mode 0600) when missing."""
    path = Path(path)
    if path.exists():
        return path.read_bytes()
    pem = new_private_key_pem()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    return pem
