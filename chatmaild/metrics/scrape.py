"""A minimal scraper for our endpoints (tests, operators): `scrape("unix:/run/x.sock")`.

Returns the body and content type of `GET /metrics`, asking for OpenMetrics by default.
"""

import socket

from .exporter import parse_listen_spec

OPENMETRICS_ACCEPT = "application/openmetrics-text; version=1.0.0"


def scrape(spec, accept: str = OPENMETRICS_ACCEPT, timeout: float = 10.0) -> tuple[str, bytes]:
    """(content type, body) of GET /metrics at a listen spec string or (host, port) tuple."""
    if isinstance(spec, tuple):
        sock = socket.create_connection(spec, timeout=timeout)
    else:
        listen = parse_listen_spec(spec)
        if listen.path is not None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(timeout)
            sock.connect(str(listen.path))
        else:
            sock = socket.create_connection((listen.host, listen.port), timeout=timeout)
    with sock:
        request = f"GET /metrics HTTP/1.1\r\nHost: localhost\r\nAccept: {accept}\r\n\r\n"
        sock.sendall(request.encode())
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    response = b"".join(chunks)
    head, _, body = response.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = lines[0].split(" ", 2)
    if len(status) < 2 or status[1] != "200":
        raise OSError(f"scrape failed: {lines[0]}")
    content_type = ""
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.lower() == "content-type":
            content_type = value.strip()
    return content_type, body


def samples(spec, **kw) -> dict[tuple[str, tuple], float]:
    """{(sample name, sorted label items): value} of an OpenMetrics scrape (parsed strictly)."""
    from prometheus_client.openmetrics.parser import text_string_to_metric_families

    _, body = scrape(spec, **kw)
    out = {}
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out
