"""The first hour with the default local relay, done exactly as `relay up` prints it.

`python -m chatmaild.relay up` on the embedded config (domain `_chat.example`, self-signed
certificate) in its own namespace; the printed one-tap `dcaccount:` URL is given to Delta
Chat 2.65 run the printed way (`ip netns exec NS ...`): two accounts, secure-join, a
padlocked message each way. Then the printed stop command, run as printed, and what it says
about the state directory. The start-up readiness checks left no fault-looking lines.
"""

import json
import re
import shlex
import subprocess
import tempfile
from pathlib import Path

import pytest

from .conftest import relay_cli, relay_cli_cleanup, relay_prerequisites
from .deltachat_helpers import rpc_under
from .test_relay_web import _padlocked_messages_both_ways
from conftest import daemon_env, require_tool


@pytest.fixture
def printed_relay():
    """(stdout of `relay up`, state dir); the relay is stopped and removed afterwards."""
    relay_prerequisites()
    require_tool("nginx", "curl")
    state = Path(tempfile.mkdtemp(prefix="chatmaild-first-", dir="/tmp"))
    netns = f"chatmaild-first-{state.name[-6:]}"
    up = relay_cli("up", "--state-dir", state, "--netns", netns)
    try:
        assert up.returncode == 0, up.stderr
        yield up.stdout, state
    finally:
        relay_cli_cleanup(state)


def _printed(stdout, pattern):
    match = re.search(pattern, stdout)
    assert match, f"not printed: {pattern}\n{stdout}"
    return match.group(1)


def test_one_tap_onboarding_exactly_as_printed(printed_relay, tmp_path):
    from deltachat_rpc_client import DeltaChat

    stdout, state = printed_relay
    url = _printed(stdout, r"open or scan\n  (dcaccount:\S+)\n")
    assert url == "dcaccount:https://_chat.example/new"
    # "`ip netns exec NS deltachat-desktop` (or deltachat-rpc-server)": the same prefix
    client = shlex.split(_printed(stdout, r"`(ip netns exec \S+) deltachat-desktop`"))
    curl = _printed(stdout, r"a new account: (.+) -X POST https://_chat\.example/new")

    with (
        open(tmp_path / "rpc.stderr", "wb") as stderr,
        rpc_under(client, tmp_path / "accounts", stderr, env=daemon_env()) as rpc,
    ):
        deltachat = DeltaChat(rpc)
        accounts = []
        for _ in range(2):
            account = deltachat.add_account()
            account.add_transport_from_qr(url)  # the call that works with 2.65
            account.bring_online()
            addr = account.get_config("configured_addr")
            assert addr.endswith("@_chat.example")
            accounts.append(account)
        _padlocked_messages_both_ways(*accounts)

    # the printed curl example answers, and says how to log in without the `_` rule too
    new = subprocess.run(
        [*shlex.split(curl), "-sS", "-X", "POST", "https://_chat.example/new"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    doc = json.loads(new.stdout)
    site = subprocess.run(
        [*shlex.split(curl), "-sS", "https://_chat.example/"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert f'<a class="join" href="{url}">' in site.stdout  # the website shows the same tap
    assert doc["dclogin_url"].startswith(f"dclogin:{doc['email']}?p=")  # self-signed: nginx
    # and chatmail-web agree, so /new hands out the dclogin: URL that docs/web.md promises

    # readiness was decided without probe connections: no fault-looking lines at start
    log = state / "log"
    assert "broken header" not in (log / "nginx-error.log").read_text()
    assert "SSL_accept error" not in (log / "postfix.log").read_text()

    stop = shlex.split(_printed(stdout, r"Stop it with: (.+)"))
    down = subprocess.run(stop, capture_output=True, text=True, timeout=120, check=False)
    assert down.returncode == 0, down.stderr  # the printed interpreter, no PYTHONPATH needed
    assert f"Its state stays in {state}" in down.stderr
    assert (state / "chatmail.ini").exists() and (state / "mailboxes").is_dir()
