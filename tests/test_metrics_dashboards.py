"""Every metric the Grafana dashboards query is produced by some component of ours."""

import json
import re
from pathlib import Path

import pytest

from chatmaild.metrics import extra
from chatmaild.metrics.doveauth import DoveauthMetrics
from chatmaild.metrics.filtermail import FiltermailMetrics
from chatmaild.metrics.lastlogin import LastloginMetrics
from chatmaild.metrics.logmetrics import LogMetrics
from chatmaild.metrics.metadata import MetadataMetrics

ROOT = Path(__file__).resolve().parent.parent
DASHBOARDS = sorted((ROOT / "deploy" / "grafana").glob("*.json"))

# series Prometheus itself synthesizes for every target
PROMETHEUS_BUILTIN = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}

PROMQL_WORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool",
    "and", "or", "unless", "inf", "nan",
}  # fmt: skip
_IDENT = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")


def promql_metric_names(expr: str) -> set[str]:
    """Metric names referenced by a PromQL expression (functions, labels, keywords excluded)."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # range and subquery selectors
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    names = set()
    for m in _IDENT.finditer(expr):
        word = m.group(0)
        rest = expr[m.end() :].lstrip()
        if rest.startswith("("):  # a function or aggregation
            continue
        if word.lower() in PROMQL_WORDS:
            continue
        if m.start() > 0 and (expr[m.start() - 1].isdigit() or expr[m.start() - 1] == "."):
            continue  # exponent or unit of a number like 1e3
        names.add(word)
    return names


@pytest.mark.parametrize(
    "expr, names",
    [
        ("rate(delivered_mail[5m])", {"delivered_mail"}),
        (
            "histogram_quantile(0.99, sum by (mode, le) "
            '(rate(x_bucket{mode="a b"}[$__rate_interval])))',
            {"x_bucket"},
        ),
        ("a / on(job) group_left(x) b + 1e3 * c offset 1h", {"a", "b", "c"}),
        ("min without (domain) (tls_cert_expiry_days) < bool 7", {"tls_cert_expiry_days"}),
    ],
)
def test_promql_metric_names(expr, names):
    assert promql_metric_names(expr) == names


def sample_names(registry) -> set[str]:
    return {s.name for family in registry.collect() for s in family.samples}


def extra_sample_names(monkeypatch) -> set[str]:
    """Run the textfile collector on recorded tool outputs and list what it writes."""
    from test_metrics_extra import DOVEADM_WHO, F2B_JAIL, F2B_STATUS, POSTQUEUE, WG_DUMP

    outputs = {
        ("fail2ban-client", "status"): F2B_STATUS,
        ("fail2ban-client", "status", "sshd"): F2B_JAIL.format(jail="sshd", cur=1, tot=2),
        ("fail2ban-client", "status", "dovecot"): F2B_JAIL.format(jail="dovecot", cur=1, tot=2),
        ("wg", "show", "all", "dump"): WG_DUMP,
        ("postqueue", "-j"): POSTQUEUE,
        ("doveadm", "who", "-1"): DOVEADM_WHO,
    }
    monkeypatch.setattr(extra, "run_tool", lambda *argv: outputs[argv])
    monkeypatch.setattr(extra, "cert_expiry_days", lambda path, now: ("eijo.im", 30.0))
    families = extra.gather(["/etc/ssl/eijo.pem"], 1_780_000_000)
    names = {s.name for family in families for s in family.samples}
    assert names == set(extra.FAMILY_NAMES)
    return names


def produced_names(monkeypatch) -> set[str]:
    names = set()
    for metrics in (
        FiltermailMetrics("outgoing"),
        DoveauthMetrics(),
        MetadataMetrics(),
        LastloginMetrics(),
        LogMetrics(),
    ):
        names |= sample_names(metrics.registry)
    return names | extra_sample_names(monkeypatch) | PROMETHEUS_BUILTIN


def dashboard_exprs(path):
    data = json.loads(path.read_text())
    for panel in data["panels"]:
        for target in panel.get("targets", []):
            yield panel["title"], target["expr"]


def test_dashboards_exist():
    assert {p.name for p in DASHBOARDS} == {"chatmail.json", "infrastructure.json"}
    titles = {json.loads(p.read_text())["title"] for p in DASHBOARDS}
    assert titles == {"ChatMail", "Infrastructure"}


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_every_dashboard_metric_is_produced(path, monkeypatch):
    produced = produced_names(monkeypatch)
    queried = set()
    for title, expr in dashboard_exprs(path):
        names = promql_metric_names(expr)
        assert names, f"{title}: no metric in {expr!r}"
        missing = names - produced
        assert not missing, f"{path.name} panel {title!r} queries {missing}, produced by nothing"
        queried |= names
    assert len(queried) >= 8


def test_dashboards_cover_the_headline_names():
    exprs = " ".join(expr for path in DASHBOARDS for _, expr in dashboard_exprs(path))
    for name in (
        "chatmail_deliveries_total",
        "chatmail_delivery_errors_total",
        "chatmail_encrypted_ratio",
        "chatmail_dkim_signed_total",
        "fail2ban_banned_total",
        "wireguard_last_handshake_seconds",
        "postfix_queue_depth",
        "dovecot_connected_users",
        "tls_cert_expiry_days",
    ):
        assert name in exprs


def test_scrape_config_lists_logmetrics_port():
    text = (ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text()
    assert '"127.0.0.1:3903"' in text
