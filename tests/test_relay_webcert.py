"""chatmaild.relay.webcert: test-CA certificates, `_`-prefixed names included."""

import ipaddress

import pytest
from cryptography import x509

from chatmaild.relay import testca, webcert


@pytest.mark.parametrize("domain", ["_web.example", "chat.example"])
def test_issued_leaf_is_signed_by_the_ca_for_every_relay_name(tmp_path, domain):
    ca_dir, cert, key = tmp_path / "ca", tmp_path / "cert.pem", tmp_path / "key.pem"
    webcert.issue(ca_dir, webcert.relay_names(domain), cert, key)
    leaf = x509.load_pem_x509_certificate(cert.read_bytes())
    ca = x509.load_pem_x509_certificate(testca.ca_cert_path(ca_dir).read_bytes())
    leaf.verify_directly_issued_by(ca)  # raises unless the CA signed it
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == [
        domain,
        f"www.{domain}",
        f"mta-sts.{domain}",
    ]
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    assert key.stat().st_mode & 0o777 == 0o600


def test_host_names_of_an_ip_relay():
    assert webcert.host_names("192.0.2.1") == ["192.0.2.1"]
    assert webcert.relay_names("192.0.2.1") == ["192.0.2.1", "127.0.0.1"]
