"""The test CA: issued certificates verify against it, for every name, over real TLS."""

import socket
import ssl
import threading

import pytest

from chatmaild.relay import testca


def _handshake(ca_dir, cert, key, server_name):
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    client_ctx = ssl.create_default_context(cafile=str(testca.ca_cert_path(ca_dir)))
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve():
        conn, _ = listener.accept()
        try:
            with server_ctx.wrap_socket(conn, server_side=True) as tls:
                tls.recv(1)
        except (ssl.SSLError, OSError):
            pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
            with client_ctx.wrap_socket(raw, server_hostname=server_name) as tls:
                tls.sendall(b"x")
                return tls.version()
    finally:
        thread.join(5)
        listener.close()


def test_issued_certificate_verifies_for_its_names(tmp_path):
    ca_dir = tmp_path / "ca"
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    testca.issue(ca_dir, ["relay-a.test", "mta-sts.relay-a.test", "10.1.2.3"], cert, key)
    assert (key.stat().st_mode & 0o777) == 0o600
    assert _handshake(ca_dir, cert, key, "relay-a.test")
    assert _handshake(ca_dir, cert, key, "mta-sts.relay-a.test")
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(ca_dir, cert, key, "relay-b.test")


def test_ca_is_reused_not_replaced(tmp_path):
    ca_dir = tmp_path / "ca"
    testca.issue(ca_dir, ["a.test"], tmp_path / "a.pem", tmp_path / "a.key")
    first = testca.ca_cert_path(ca_dir).read_bytes()
    cert, key = tmp_path / "b.pem", tmp_path / "b.key"
    testca.issue(ca_dir, ["b.test"], cert, key)
    assert testca.ca_cert_path(ca_dir).read_bytes() == first
    assert _handshake(ca_dir, cert, key, "b.test")
