"""newemail: CGI output, randomness, dclogin URL, and acceptance by doveauth's creation rules."""

import json
import re
import subprocess
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

from chatmaild.config import read_config
from chatmaild.doveauth import hashing, rules
from chatmaild.doveauth.rules import Resources
from chatmaild.doveauth.service import DoveauthService
from chatmaild.housekeeping.credentials import PASSWORD_ALPHABET, dclogin_url
from chatmaild.housekeeping.newemail import account_document

from conftest import daemon_argv, daemon_env, write_ini


def make_config(tmp_path, **params):
    ini = write_ini(
        tmp_path / "chatmail.ini",
        mailboxes_dir=tmp_path / "mailboxes",
        nocreate_file=tmp_path / "nocreate",
        max_load_1m=1000,
        min_free_disk_space="1K",
        min_available_memory="1K",
        **params,
    )
    return ini, read_config(ini)


def run_cgi(ini):
    env = daemon_env()
    env["CHATMAIL_INI"] = str(ini)
    proc = subprocess.run(
        daemon_argv("chatmaild.housekeeping.newemail"),
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_cgi_output(tmp_path):
    ini, config = make_config(tmp_path)
    out = run_cgi(ini)
    header, blank, body = out.partition("\n\n")
    assert header == "Content-Type: application/json" and blank
    doc = json.loads(body)
    assert set(doc) == {"email", "password"}
    local, _, domain = doc["email"].partition("@")
    assert domain == "chat.example"
    assert re.fullmatch(r"[a-z0-9]{9}", local)
    assert len(doc["password"]) > config.password_min_length
    assert set(doc["password"]) <= set(PASSWORD_ALPHABET)


def test_cgi_bad_config_exits_2(tmp_path):
    ini = write_ini(tmp_path / "bad.ini", username_max_length="many")
    env = daemon_env()
    env["CHATMAIL_INI"] = str(ini)
    proc = subprocess.run(
        daemon_argv("chatmaild.housekeeping.newemail"), env=env, capture_output=True, text=True
    )
    assert proc.returncode == 2 and "username_max_length" in proc.stderr


@pytest.mark.parametrize(
    "params",
    [{}, {"username_min_length": 6, "username_max_length": 20}, {"password_min_length": 40}],
)
def test_lengths_follow_config(tmp_path, params):
    _, config = make_config(tmp_path, **params)
    docs = [account_document(config) for _ in range(200)]
    for doc in docs:
        assert len(doc["email"].split("@")[0]) == config.username_max_length
        assert len(doc["password"]) > config.password_min_length
        assert rules.creation_problem(doc["email"], doc["password"], config) is None
    assert len({d["email"] for d in docs}) == 200
    assert len({d["password"] for d in docs}) == 200
    # all 36 characters show up over 200 local parts: not a fixed or narrow alphabet
    assert set("".join(d["email"].split("@")[0] for d in docs)) == set(
        "abcdefghijklmnopqrstuvwxyz0123456789"
    )


@pytest.mark.parametrize(
    "params, mail_domain, expect_url",
    [
        ({}, "chat.example", False),
        ({"tls_cert": "self"}, "chat.example", True),
        ({"tls_cert": "acme"}, "chat.example", False),
        ({}, "192.0.2.7", True),  # an IP-only relay has a self-signed certificate
    ],
)
def test_dclogin_url_for_self_signed_relays(tmp_path, params, mail_domain, expect_url):
    ini = write_ini(tmp_path / "chatmail.ini", mail_domain=mail_domain, **params)
    doc = account_document(read_config(ini))
    assert ("dclogin_url" in doc) is expect_url
    if expect_url:
        url = urlsplit(doc["dclogin_url"])
        assert url.scheme == "dclogin"
        assert unquote(url.path) == doc["email"]
        query = parse_qs(url.query)
        assert query["p"] == [doc["password"]]
        assert query["v"] == ["1"] and query["ic"] == ["3"] and query["sc"] == ["3"]
    if mail_domain == "192.0.2.7":
        assert doc["email"].endswith("@[192.0.2.7]")
        # the address's domain names no server: IMAP and SMTP go to the address itself
        assert query["ih"] == ["192.0.2.7"] and query["sh"] == ["192.0.2.7"]
    elif expect_url:
        assert "ih" not in query and "sh" not in query


@pytest.mark.parametrize("self_signed", [True, False])
def test_the_caller_may_say_the_certificate_is_self_signed(tmp_path, self_signed):
    """The local relay knows what certificate it made (chatmail-web --self-signed)."""
    ini = write_ini(tmp_path / "chatmail.ini", mail_domain="_chat.example")
    doc = account_document(read_config(ini), self_signed=self_signed)
    assert ("dclogin_url" in doc) is self_signed


def test_dclogin_url_quotes_everything():
    url = dclogin_url("a@[1.2.3.4]", "p&=?#/ x")
    parsed = urlsplit(url)
    assert parse_qs(parsed.query)["p"] == ["p&=?#/ x"]
    assert unquote(parsed.path) == "a@[1.2.3.4]"


def passdb_key(password, addr):
    def esc(text):
        return text.replace("\\", "\\\\").replace('"', '\\"').replace("'", "\\'")

    return f'{rules.PASSDB_PREFIX}{esc(password)}"{esc(addr)}'


@pytest.mark.parametrize("mail_domain", ["chat.example", "192.0.2.7"])
async def test_newemail_account_is_created_by_doveauth_and_can_log_in(tmp_path, mail_domain):
    _, config = make_config(tmp_path, mail_domain=mail_domain)
    doc = account_document(config)
    service = DoveauthService(
        config, workers=1, read_resources=lambda _dir: Resources(0.0, 10**12, 10**12)
    )
    try:
        answer = service.lookup(passdb_key(doc["password"], doc["email"]), "")
        if not isinstance(answer, str | None):
            answer = await answer
        assert answer is not None, "doveauth refused the newemail account"
        record = json.loads(answer)
        assert record["addr"] == doc["email"]
        # the stored hash verifies the password: the account can log in
        assert hashing.verify_password(doc["password"], record["password"])
        assert not hashing.verify_password(doc["password"] + "x", record["password"])
        again = service.lookup(passdb_key(doc["password"], doc["email"]), "")
        assert json.loads(again)["password"] == record["password"]
        assert (config.mailboxes_dir / doc["email"] / "password").exists()
    finally:
        service.close()
