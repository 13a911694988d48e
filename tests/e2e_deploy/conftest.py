"""One deployment for the whole session: a booted Debian 12 container that the playbook
turns into a relay (harness.py). Tests that change the container (a stopped service, a
restart, an upgrade) put it back before they end."""

import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

from .harness import COLLECTIONS, VENV_BIN, Deployment
from conftest import require, require_tool


def _log(msg):
    print(f"[deploy] {msg}", file=sys.stderr, flush=True)


@pytest.fixture(scope="session")
def deployment():
    require(os.geteuid() == 0, "root (systemd-nspawn, overlayfs, veth)")
    require_tool("systemd-nspawn", "debootstrap", "pebble", "pebble-challtestsrv", "nsenter")
    require((VENV_BIN / "ansible-playbook").exists(), "ansible-core in .venv (scripts/setup)")
    require(
        (COLLECTIONS / "ansible_collections/community/docker").is_dir(),
        "Ansible collections in .venv/share/ansible (scripts/setup)",
    )
    workdir = Path(tempfile.mkdtemp(prefix="chatmaild-deploy-"))
    d = Deployment(workdir, log=_log)
    try:
        d.up()
        first = d.play()
        d.first = first
        yield d
    finally:
        d.down()
        if not os.environ.get("CHATMAILD_DEPLOY_KEEP"):
            shutil.rmtree(workdir, ignore_errors=True)
