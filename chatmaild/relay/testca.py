"""A private certificate authority for test relays (trustme), kept in one directory.

Relays whose certificates come from the same CA trust each other, so Postfix can use
`smtp_tls_security_level = verify` between them, and clients given `ca.pem` (or with it in
their trust store) connect without "accept invalid certificates". The CA is created once
and reused: a second relay, or a restart, issues from the same root.

trustme is the `relay` extra (`pip install 'chatmaild[relay]'`), not a runtime dependency of
a production relay: it is imported on first use, so `render`, `dkim-record` and `dns` run
without it.
"""

import os
from pathlib import Path

CA_CERT = "ca.pem"
CA_KEY = "ca.key"


def _trustme():
    try:
        import trustme
    except ImportError as e:
        raise RuntimeError(
            "the local relay's test CA needs trustme: pip install 'chatmaild[relay]'"
        ) from e
    return trustme


def load_or_create(ca_dir):
    """The CA stored in `ca_dir`, created there on first use."""
    trustme = _trustme()
    ca_dir = Path(ca_dir)
    cert, key = ca_dir / CA_CERT, ca_dir / CA_KEY
    if cert.exists() and key.exists():
        return trustme.CA.from_pem(cert.read_bytes(), key.read_bytes())
    ca_dir.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA(organization_name="chatmaild test CA")
    ca.cert_pem.write_to_path(str(cert))
    fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(ca.private_key_pem.bytes())
    return ca


def ca_cert_path(ca_dir):
    return Path(ca_dir) / CA_CERT


def issue(ca_dir, names, cert_path, key_path):
    """Write a server certificate for `names` (host names or IP addresses) and its key.

    RSA keys, since Postfix and Dovecot are configured for them in production. The
    certificate file holds the leaf then the CA (a full chain, as ACME writes it).
    """
    ca = load_or_create(ca_dir)
    leaf = ca.issue_cert(*names, common_name=names[0], key_type=_trustme().KeyType.RSA)
    cert_path, key_path = Path(cert_path), Path(key_path)
    cert_path.parent.mkdir(parents=True, exist_ok=True)
    cert_path.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(leaf.private_key_pem.bytes())
