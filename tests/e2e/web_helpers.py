"""Clients of a relay's web front, opened inside its network namespace.

TLS is verified against the relay's test CA with the real host name, as a browser would.
"""

import http.client
import json
import socket
import ssl
import subprocess

from chatmaild.relay.netns import entered, exec_prefix

HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
HTTP2_SETTINGS = 0x4


def tls_context(cafile, alpn=None):
    ctx = ssl.create_default_context(cafile=str(cafile))
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    return ctx


def tls_connect(netns, host, cafile, alpn=None, port=443, timeout=15, source="127.0.0.1"):
    """A TLS socket to 127.0.0.1:port inside `netns`, SNI and certificate name `host`, from
    the loopback address `source` (any of 127.0.0.0/8: a client other than the relay)."""
    with entered(netns):
        raw = socket.create_connection(
            ("127.0.0.1", port), timeout=timeout, source_address=(source, 0)
        )
    return tls_context(cafile, alpn).wrap_socket(raw, server_hostname=host)


def read_line(sock):
    data = b""
    while not data.endswith(b"\n"):
        chunk = sock.recv(1)
        if not chunk:
            break
        data += chunk
    return data


def http2_first_frame_type(sock):
    """Send the HTTP/2 preface and an empty SETTINGS frame; the type of the server's first frame."""
    sock.sendall(HTTP2_PREFACE + bytes([0, 0, 0, HTTP2_SETTINGS, 0, 0, 0, 0, 0]))
    head = b""
    while len(head) < 9:
        chunk = sock.recv(9 - len(head))
        if not chunk:
            break
        head += chunk
    return head[3] if len(head) == 9 else None


class Web:
    """HTTPS requests to the relay's site through port 443 (http.client)."""

    def __init__(self, netns, domain, cafile):
        self.netns = netns
        self.domain = domain
        self.cafile = cafile

    def request(self, method, path, host=None, body=None, source="127.0.0.1", headers=None):
        """(status, headers dict with lower-case names, body bytes). `headers`: a list of
        (name, value), names may repeat."""
        host = host or self.domain
        conn = http.client.HTTPSConnection(host, 443, timeout=30)
        # connected by hand: the socket is made inside the namespace, TLS checks `host`
        conn.sock = tls_connect(self.netns, host, self.cafile, timeout=30, source=source)
        try:
            if headers is None:
                conn.request(method, path, body=body)
            else:
                conn.putrequest(method, path)
                for name, value in headers:
                    conn.putheader(name, value.encode())
                conn.putheader("Content-Length", str(len(body or b"")))
                conn.endheaders(body)
            resp = conn.getresponse()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
        finally:
            conn.close()

    def new_account(self, source="127.0.0.1"):
        status, _, body = self.request("POST", "/new", source=source)
        return status, (json.loads(body) if body else None)


def run_in_netns(netns, argv, **kwargs):
    return subprocess.run([*exec_prefix(netns), *argv], capture_output=True, text=True, **kwargs)
