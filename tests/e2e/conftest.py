"""One complete relay per test session, in its own network namespace.

The `relay` fixture brings up Debian's Postfix and Dovecot with the configuration of
chatmaild.relay and our daemons (python -m chatmaild.relay's code path) inside a private
network namespace, so the fixed ports (25, 465, 587, 993, 10025/6, 10080/1) never clash.
Tests reach it through `RelayClients` (tests/e2e/helpers.py): Python clients open their
sockets with the thread inside the namespace, subprocess clients (deltachat-rpc-server) run
under `ip netns exec`. A local push notification server listens inside the namespace too.
A module that needs a relay configured otherwise brings up its own with `running_relay`
(test_relay_xforward.py: the DKIM check on).
"""

import contextlib
import os
import shutil
import subprocess
import tempfile

import pytest

from chatmaild.relay.instance import Relay

from .helpers import NotificationServer, RelayClients
from conftest import daemon_argv, daemon_env, require, require_tool

NOTIFY_PORT = 9471


def relay_prerequisites():
    require(hasattr(os, "geteuid") and os.geteuid() == 0, "root (Postfix, Dovecot, netns)")
    require_tool("ip", "postfix", "dovecot", "openssl", "setpriv", "/usr/lib/dovecot/lmtp")
    require_tool("opendkim", "bwrap")  # every relay for a domain DKIM-signs (OpenDKIM)
    require(
        os.path.exists("/usr/lib/dovecot/modules/lib22_push_notification_lua_plugin.so"),
        "Dovecot push_notification_lua plugin",
    )


class E2ERelay(RelayClients):
    def __init__(self, relay, notifications):
        super().__init__(relay)
        self.notifications = notifications

    def require_daemons(self, *names):
        """The daemons a test needs must be in the checkout (CI fails, never skips)."""
        for name in names:
            require(name not in self.relay.skipped, f"daemon {name} in this checkout")


@contextlib.contextmanager
def running_relay(name: str, with_ca=False, **kwargs):
    """A relay up in a fresh state dir under /tmp and namespace `<name>-<pid>`; down and
    removed afterwards (the state is kept with CHATMAILD_E2E_KEEP). `with_ca`: its
    certificate comes from a test CA kept in `<state>/ca`."""
    relay_prerequisites()
    state_dir = tempfile.mkdtemp(prefix=f"{name}-", dir="/tmp")
    if with_ca:
        kwargs["ca_dir"] = os.path.join(state_dir, "ca")
    relay = Relay(state_dir, netns=f"{name}-{os.getpid()}", **kwargs)
    with brought_up(relay, state_dir) as instance:
        yield instance


@contextlib.contextmanager
def brought_up(instance, state_dir, what="relay"):
    """`instance` (a Relay or a RelayPair) up for the block, then down and its state dir
    removed (kept with CHATMAILD_E2E_KEEP)."""
    try:
        instance.up()
        yield instance
    finally:
        instance.down()
        if os.environ.get("CHATMAILD_E2E_KEEP"):
            print(f"{what} state kept in {state_dir}")
        else:
            shutil.rmtree(state_dir, ignore_errors=True)


def relay_cli(*args, timeout=180):
    """`python -m chatmaild.relay ARGS` as a user runs it, to its end (text output)."""
    return subprocess.run(
        daemon_argv("chatmaild.relay", *args),
        env=daemon_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def relay_cli_cleanup(state):
    """After a test of `relay up` on the state dir `state`: `relay down` if a relay of it
    may still run (relay.json is there), then the state dir removed."""
    if (state / "relay.json").exists():
        subprocess.run(
            daemon_argv("chatmaild.relay", "down", "--state-dir", state),
            env=daemon_env(),
            capture_output=True,
            check=False,
        )
    shutil.rmtree(state, ignore_errors=True)


@pytest.fixture(scope="session")
def relay():
    logs = []
    with running_relay(
        "chatmaild-e2e",
        notification_url=f"http://127.0.0.1:{NOTIFY_PORT}/notify",
        log=logs.append,
        # the tests send unsigned mail to port 25, and no DNS serves keys in the namespace
        ini_extra={"filtermail_dkim_check": "false"},
    ) as instance:
        notifications = NotificationServer(instance.netns, NOTIFY_PORT)
        try:
            yield E2ERelay(instance, notifications)
        finally:
            notifications.close()
