"""The per-daemon metric definitions and the lock-free families behind them."""

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.openmetrics.exposition import generate_latest
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from chatmaild.doveauth import rules
from chatmaild.filtermail import policy
from chatmaild.metrics import fast
from chatmaild.metrics.doveauth import DoveauthMetrics, reject_reason
from chatmaild.metrics.filtermail import OUTCOMES, FiltermailMetrics
from chatmaild.metrics.lastlogin import LastloginMetrics
from chatmaild.metrics.metadata import MetadataMetrics


def parsed(registry):
    text = generate_latest(registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_fast_families_render_valid_openmetrics():
    reg = CollectorRegistry()
    c = fast.Counter("t_things", "Things", ["kind"], registry=reg).labels("a")
    g = fast.Gauge("t_level", "Level", registry=reg).labels()
    h = fast.Histogram("t_seconds", "Time", ["mode"], buckets=(0.1, 1), registry=reg).labels("x")
    c.inc()
    c.inc(2)
    g.set(5)
    g.dec()
    for v in (0.05, 0.1, 0.5, 3):
        h.observe(v)
    got = parsed(reg)
    assert got[("t_things_total", (("kind", "a"),))] == 3
    assert got[("t_level", ())] == 4
    assert got[("t_seconds_bucket", (("le", "0.1"), ("mode", "x")))] == 2  # le is inclusive
    assert got[("t_seconds_bucket", (("le", "1.0"), ("mode", "x")))] == 3
    assert got[("t_seconds_bucket", (("le", "+Inf"), ("mode", "x")))] == 4
    assert got[("t_seconds_count", (("mode", "x"),))] == 4
    assert got[("t_seconds_sum", (("mode", "x"),))] == pytest.approx(3.65)
    g.set_function(lambda: 42)
    assert parsed(reg)[("t_level", ())] == 42


def test_fast_labels_are_bound_once_and_checked():
    family = fast.Counter("t_x", "X", ["a", "b"])
    assert family.labels("1", "2") is family.labels("1", "2")
    with pytest.raises(ValueError):
        family.labels("only one")


def test_filtermail_children_prebound_and_all_outcomes_exposed():
    m = FiltermailMetrics("incoming")
    assert m.encrypted is m.outcome["encrypted"]
    got = parsed(m.registry)
    for outcome in OUTCOMES:
        assert (
            got[
                ("chatmail_filtermail_messages_total", (("mode", "incoming"), ("outcome", outcome)))
            ]
            == 0
        )


@pytest.mark.parametrize(
    "mode, code, line, outcome",
    [
        ("outgoing", None, policy.OUT_ENCRYPTED, "encrypted"),
        ("outgoing", None, f"{policy.OUT_ENCRYPTED} (secure-join request)", "securejoin"),
        (
            "outgoing",
            None,
            f"{policy.OUT_UNENCRYPTED} Accepted: passthrough sender a@b",
            "exception",
        ),
        (
            "outgoing",
            None,
            f"{policy.OUT_UNENCRYPTED} Accepted: Autocrypt Setup Message",
            "exception",
        ),
        ("outgoing", 523, f"{policy.OUT_UNENCRYPTED} {policy.REJECTED} from <a@b>", "rejected"),
        ("outgoing", 500, "Outgoing: Rejected mail: 500 Invalid FROM <x> for <y>", "invalid"),
        ("incoming", None, policy.IN_ENCRYPTED, "encrypted"),
        ("incoming", None, f"{policy.IN_UNENCRYPTED} Accepted: mailer-daemon report", "exception"),
        (
            "incoming",
            None,
            f"{policy.IN_UNENCRYPTED} Accepted: no recipient enforces encryption",
            "cleartext",
        ),
    ],
)
def test_decision_outcome_from_policy_lines(mode, code, line, outcome):
    assert FiltermailMetrics(mode).decision_outcome(code, line) == outcome


class Limits:
    password_min_length = 9
    address_domain = "chat.example"
    username_min_length = 9
    username_max_length = 9
    max_load_1m = 5
    min_available_memory = 1000
    min_free_disk_space = 1000


@pytest.mark.parametrize(
    "problem, reason",
    [
        (rules.creation_problem("abcdefghi@chat.example", "short", Limits), "password"),
        (rules.creation_problem("nodomain", "longpassword", Limits), "username"),
        (rules.creation_problem("abcdefghi@other.example", "longpassword", Limits), "domain"),
        (rules.creation_problem("ab@chat.example", "longpassword", Limits), "username"),
        (rules.creation_problem("ABCDEFGHI@chat.example", "longpassword", Limits), "username"),
        (rules.resource_problem(rules.Resources(9.0, 10**9, 10**9), Limits), "load"),
        (rules.resource_problem(rules.Resources(None, 10**9, 10**9), Limits), "load"),
        (rules.resource_problem(rules.Resources(1.0, 10, 10**9), Limits), "memory"),
        (rules.resource_problem(rules.Resources(1.0, 10**9, 10), Limits), "disk"),
        (rules.resource_problem(rules.Resources(1.0, 10**9, None), Limits), "disk"),
        ("something new", "other"),
    ],
)
def test_reject_reasons_of_doveauth_rules(problem, reason):
    assert reject_reason(problem) == reason


def test_unknown_labels_fall_back_to_other():
    d = DoveauthMetrics()
    d.rejected("martian")
    m = MetadataMetrics()
    m.lookup_key("vendor/unknown")
    assert (
        parsed(d.registry)[
            ("chatmail_doveauth_registrations_rejected_total", (("reason", "other"),))
        ]
        == 1
    )
    assert parsed(m.registry)[("chatmail_metadata_lookups_total", (("key", "other"),))] == 1
    assert ("chatmail_lastlogin_sets_total", (("result", "updated"),)) in parsed(
        LastloginMetrics().registry
    )
