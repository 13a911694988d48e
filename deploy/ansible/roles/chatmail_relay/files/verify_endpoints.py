"""--tags verify helper, run on the host by the venv's Python (one run for all checks):
`verify_endpoints.py INI PORTS EXTRA_URLS RETRIES`.

Checks that every TCP port in PORTS (comma-separated) accepts a connection on 127.0.0.1,
that every metrics endpoint of chatmail.ini (metrics_*) and of EXTRA_URLS answers 200, each
retried for up to RETRIES seconds (a reload returns before the new configuration is live),
and whether the published DKIM record matches the key (the renderer's `dkim-record`).
Prints JSON {"ports": {port: ok}, "urls": {url: status}, "dkim": "ok"|"differs"|
"unpublished"|"no key", ...}.
"""

import json
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import dns.exception
import dns.resolver

from chatmaild.config import read_config

METRICS_KEYS = (
    "metrics_filtermail_outgoing",
    "metrics_filtermail_incoming",
    "metrics_doveauth",
    "metrics_metadata",
    "metrics_lastlogin",
    "metrics_logmetrics",
)


def metrics_urls(config):
    return [f"http://{getattr(config, k)}/metrics" for k in METRICS_KEYS if getattr(config, k, "")]


def port_open(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return True
    except OSError:
        return False


def http_status(url):
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError as e:
        return str(e)


def retried(check, items, ok, seconds):
    results = {}
    deadline = time.monotonic() + seconds
    pending = list(items)
    while True:
        for item in pending:
            results[item] = check(item)
        pending = [i for i in pending if not ok(results[i])]
        if not pending or time.monotonic() > deadline:
            return results
        time.sleep(1)


def expected_dkim(ini):
    """(record name, TXT value) from the renderer's CLI (`dkim-record`), or None."""
    cmd = [sys.executable, "-m", "chatmaild.relay", "dkim-record", "--config", ini]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        return None
    name, _, rest = res.stdout.strip().partition(" TXT ")
    return name.rstrip("."), "".join(re.findall(r'"([^"]*)"', rest))


def published_dkim(name):
    try:
        answer = dns.resolver.resolve(name, "TXT", lifetime=5)
    except (dns.exception.DNSException, OSError):
        return None
    return ["".join(s.decode() for s in rr.strings) for rr in answer]


def main(ini, ports, extra_urls, retries):
    config = read_config(ini)
    seconds = float(retries)
    ports = [int(p) for p in ports.split(",") if p]
    urls = metrics_urls(config) + [u for u in extra_urls.split(",") if u]
    out = {
        "ports": retried(port_open, ports, bool, seconds),
        "urls": retried(http_status, urls, lambda s: s == 200, seconds),
        "dkim": "no key",
    }
    record = expected_dkim(ini)
    if record is not None:
        name, expected = record
        published = published_dkim(name)
        out["name"], out["expected"], out["published"] = name, expected, published
        if published is None:
            out["dkim"] = "unpublished"
        else:
            norm = expected.replace(" ", "")
            out["dkim"] = "ok" if any(p.replace(" ", "") == norm for p in published) else "differs"
    print(json.dumps(out))


if __name__ == "__main__":
    main(*sys.argv[1:])
