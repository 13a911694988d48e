"""An HTTP proxy for the container's apt, on the host end of its veth.

The container has no route out and its resolver (the relay's unbound) cannot reach the root
servers, but the host reaches Debian's mirror. apt in the container is told to fetch through
this proxy (`Acquire::http::Proxy`), so the playbook's own apt task installs the packages on
a bare Debian 12 as on a server. Only plain-HTTP GET and HEAD of absolute URLs on the hosts in
`allowed` are forwarded; everything else gets 403. Bodies are streamed.
"""

import http.client
import shutil
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: "AptProxy"
    _upstream = None  # the kept connection to the mirror, and its (host, port)
    _upstream_address = None

    def do_GET(self):
        self._forward()

    def do_HEAD(self):
        self._forward()

    def _forward(self):
        url = urllib.parse.urlsplit(self.path)
        if url.scheme != "http" or url.hostname not in self.server.allowed:
            self.send_error(403, "not a mirror this proxy serves")
            return
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
        target = url.path + (f"?{url.query}" if url.query else "")
        try:
            resp = self._upstream_response((url.hostname, url.port or 80), target, headers)
            body_follows = self.command != "HEAD" and resp.status not in (204, 304)
            length = resp.getheader("Content-Length")
            data = None
            if body_follows and length is None:
                data = resp.read()  # a body of unknown length: sent with one
                length = str(len(data))
            self.send_response(resp.status, resp.reason)
            for key, value in resp.getheaders():
                if key.lower() not in HOP_BY_HOP and key.lower() != "content-length":
                    self.send_header(key, value)
            if length is not None:
                self.send_header("Content-Length", length)
            self.end_headers()
            if body_follows:
                if data is not None:
                    self.wfile.write(data)
                else:
                    shutil.copyfileobj(resp, self.wfile, 1 << 16)
            self.server.count += 1
        except (OSError, http.client.HTTPException) as e:
            self.server.errors.append(f"{self.path}: {e}")
            self.close_connection = True
            self._drop_upstream()

    def _upstream_response(self, address, target, headers):
        """The mirror's response, over one kept-alive connection per client connection
        (once more on a new one when the mirror closed the kept one meanwhile)."""
        try:
            return self._request(address, target, headers)
        except (http.client.RemoteDisconnected, ConnectionError):
            self._drop_upstream()
            return self._request(address, target, headers)

    def _request(self, address, target, headers):
        if self._upstream is None or self._upstream_address != address:
            self._drop_upstream()
            self._upstream = http.client.HTTPConnection(*address, timeout=60)
            self._upstream_address = address
        self._upstream.request(self.command, target, headers=headers)
        return self._upstream.getresponse()

    def _drop_upstream(self):
        if self._upstream is not None:
            self._upstream.close()
            self._upstream = None

    def finish(self):
        self._drop_upstream()
        super().finish()

    def log_message(self, format, *args):
        pass  # the count and the errors are what the tests look at


class AptProxy(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, host, port, allowed):
        self.allowed = set(allowed)
        self.count = 0
        self.errors = []
        super().__init__((host, port), _Handler)

    def start(self):
        threading.Thread(target=self.serve_forever, name="apt-proxy", daemon=True).start()
        return self

    def stop(self):
        self.shutdown()
        self.server_close()
