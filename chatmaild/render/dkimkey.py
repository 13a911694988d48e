"""The relay's DKIM signing key on disk: made once when missing, never replaced.

A new key is an RSA key in PKCS#8 PEM (what opendkim-genkey writes), created with
O_EXCL and mode 0600 so no other process ever sees a partial or readable file, then
given to the opendkim user. An existing key is kept as it is; only its owner and mode are
set so that OpenDKIM (which drops to that user) can read it. The DNS record is written
beside it (`opendkim.txt`) for the operator.
"""

import os
import pwd

from chatmaild.render.opendkim import KEY_BITS, USER, txt_value, zone_line


def new_private_pem(bits=KEY_BITS):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _write_new(path, data, mode):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def ensure_key(dkim, domain, owner=USER):
    """Make the key if missing (never overwrite); returns (created?, TXT record value)."""
    user = pwd.getpwnam(owner)
    dkim.keys_dir.mkdir(parents=True, exist_ok=True)
    os.chown(dkim.keys_dir, user.pw_uid, user.pw_gid)
    os.chmod(dkim.keys_dir, 0o700)
    created = not dkim.key_file.exists()
    if created:
        _write_new(dkim.key_file, new_private_pem(), 0o600)
    os.chown(dkim.key_file, user.pw_uid, user.pw_gid)
    os.chmod(dkim.key_file, 0o600)
    value = txt_value(dkim.key_file.read_bytes())
    dkim.record_file.write_text(zone_line(domain, value) + "\n")
    return created, value
