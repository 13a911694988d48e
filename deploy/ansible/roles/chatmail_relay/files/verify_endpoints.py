"""--tags verify helper, run on the host by the venv's Python: chatmail.ini's metrics
endpoints, and whether the published DKIM record matches the key.

Prints JSON {"metrics": ["http://127.0.0.1:9601/metrics", ...], "dkim": "ok"|"differs"|
"unpublished"|"no key", "published": ..., "expected": ...}.
"""

import json
import re
import subprocess
import sys

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
    urls = []
    for key in METRICS_KEYS:
        listen = getattr(config, key, "")
        if listen:
            urls.append(f"http://{listen}/metrics")
    return urls


def expected_dkim(ini):
    """(record name, TXT value) from the renderer's CLI (`dkim-record`), or None."""
    cmd = [sys.executable, "-m", "chatmaild.relay", "dkim-record", "--config", ini]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        return None
    name, _, rest = res.stdout.strip().partition(" TXT ")
    return name, "".join(re.findall(r'"([^"]*)"', rest))


def published_dkim(name):
    try:
        answer = dns.resolver.resolve(name, "TXT", lifetime=5)
    except (dns.exception.DNSException, OSError):
        return None
    return ["".join(s.decode() for s in rr.strings) for rr in answer]


def main(ini):
    config = read_config(ini)
    out = {"metrics": metrics_urls(config), "dkim": "no key"}
    record = expected_dkim(ini)
    if record is not None:
        name, expected = record
        published = published_dkim(name)
        out["name"], out["expected"] = name, expected
        out["published"] = published
        if published is None:
            out["dkim"] = "unpublished"
        else:
            same = [p for p in published if p.replace(" ", "") == expected.replace(" ", "")]
            out["dkim"] = "ok" if same else "differs"
    print(json.dumps(out))


if __name__ == "__main__":
    main(*sys.argv[1:])
