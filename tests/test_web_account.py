"""/new's decisions (chatmaild.web.account) and the app that applies them (web.app)."""

import json

import pytest
from aiohttp.test_utils import make_mocked_request

from chatmaild.config import read_config
from chatmaild.doveauth.rules import Resources
from chatmaild.web import account
from chatmaild.web.app import WebApp

IDLE = Resources(load_1m=0.1, available_memory=10**10, free_disk=10**12)


@pytest.fixture
def config(ini_path):
    return read_config(ini_path)


def test_refusal_nocreate_first_then_load(config):
    assert account.refusal(config, False, IDLE) is None
    assert account.refusal(config, True, IDLE) == account.NOCREATE
    busy = IDLE._replace(load_1m=config.max_load_1m + 1)
    assert account.refusal(config, False, busy).status == 503
    assert account.refusal(config, True, busy) == account.NOCREATE
    unknown = IDLE._replace(free_disk=None)  # an unreadable machine refuses, as doveauth does
    assert account.refusal(config, False, unknown).status == 503


def test_new_account_follows_doveauths_rules(config):
    doc, refusal = account.new_account(config, taken=lambda addr: False)
    assert refusal is None
    local, _, domain = doc["email"].partition("@")
    assert domain == config.address_domain
    assert len(local) == config.username_max_length
    assert len(doc["password"]) > config.password_min_length


def test_taken_addresses_are_drawn_again_then_given_up(config):
    draws = iter(["aaaaaaaaa", "aaaaaaaaa", "bbbbbbbbb"])

    def draw(config):
        return {"email": f"{next(draws)}@{config.address_domain}", "password": "p" * 20}

    taken = {f"aaaaaaaaa@{config.address_domain}"}
    doc, refusal = account.new_account(config, taken.__contains__, draw)
    assert refusal is None and doc["email"].startswith("bbbbbbbbb@")
    doc, refusal = account.new_account(config, lambda addr: True)
    assert doc is None and refusal.status == 503


def test_credentials_doveauth_would_refuse_are_never_handed_out(config):
    def draw(config):
        return {"email": f"UPPER{'a' * 4}@{config.address_domain}", "password": "p" * 20}

    doc, refusal = account.new_account(config, lambda addr: False, draw)
    assert doc is None and refusal.status == 500 and "outside [a-z0-9._-]" in refusal.reason


def _request(method, path):
    return make_mocked_request(method, path)


def test_app_routes_and_answers_json(config):
    existing = set()
    app = WebApp(config, read_resources=lambda _: IDLE, exists=lambda p: str(p) in existing)
    for method, path in [("POST", "/new"), ("GET", "/new"), ("POST", "/cgi-bin/newemail.py")]:
        status, body, ctype, _ = app.handle(_request(method, path))
        assert status == 200 and ctype == "application/json"
        assert set(json.loads(body)) == {"email", "password"}
    assert app.handle(_request("POST", "/other"))[0] == 404
    status, _, _, headers = app.handle(_request("PUT", "/new"))
    assert status == 405 and ("Allow", "POST, GET") in headers

    existing.add(str(config.nocreate_file))
    status, body, ctype, _ = app.handle(_request("POST", "/new"))
    assert status == 403 and json.loads(body) == {"reason": account.NOCREATE.reason}
    assert (app.handed_out, app.refused) == (3, 1)
