"""A test-CA certificate for any host name, `_`-prefixed ones included.

Delta Chat verifies TLS against its compiled-in web PKI roots only, so no private CA can be
made trusted; it skips the chain check (not the name check) for host names starting with
`_`, its supported path for relays without a public certificate (docs/web.md). trustme
refuses such names (IDNA), so for them the leaf is signed here with the CA of testca.py;
other names go through testca.issue unchanged.
"""

import datetime
import ipaddress
import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from . import testca


def _needs_own_signing(names):
    return any("_" in name for name in names)


def _san(name):
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def _sign(ca_dir, names, cert_path, key_path):
    testca.load_or_create(ca_dir)
    ca_cert = x509.load_pem_x509_certificate(testca.ca_cert_path(ca_dir).read_bytes())
    ca_key = serialization.load_pem_private_key(
        (Path(ca_dir) / testca.CA_KEY).read_bytes(), password=None
    )
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=365))
        .add_extension(x509.SubjectAlternativeName([_san(n) for n in names]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    cert_path, key_path = Path(cert_path), Path(key_path)
    cert_path.parent.mkdir(parents=True, exist_ok=True)
    cert_path.write_bytes(cert.public_bytes(pem))  # as testca.issue: the leaf, no root
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(
            key.private_bytes(
                pem,
                serialization.PrivateFormat.TraditionalOpenSSL,
                serialization.NoEncryption(),
            )
        )


def issue(ca_dir, names, cert_path, key_path):
    """Certificate and key for `names`, signed by the test CA in `ca_dir`."""
    if _needs_own_signing(names):
        _sign(ca_dir, names, cert_path, key_path)
    else:
        testca.issue(ca_dir, names, cert_path, key_path)


def host_names(domain):
    """The names a relay answers to: the domain, and www. and mta-sts. of a domain name."""
    try:
        ipaddress.ip_address(domain)
        return [domain]
    except ValueError:
        return [domain, f"www.{domain}", f"mta-sts.{domain}"]


def relay_names(domain):
    """The names a relay's certificate covers: its host names and 127.0.0.1."""
    return [*host_names(domain), "127.0.0.1"]
