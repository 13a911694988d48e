"""Build the cached layers the deployment's container boots from (container.py), ahead of
the tests: the root conftest starts `python -m e2e_deploy.prebuild` (from tests/) in the
background when a run collects the deployment tests among others, and puts those last, so
on a fresh machine debootstrap and apt run while the other tests do. The session's fixture
takes the same lock, so it waits for a build in progress instead of starting a second one.
"""

import os
import sys
from pathlib import Path

from . import container
from .harness import role_packages


def packages_layer():
    """Whether the container boots with the role's packages preinstalled from a cached layer
    (CHATMAILD_DEPLOY_PACKAGES_LAYER=1: quicker runs while working on the role); by default
    it is a bare Debian 12 and the playbook's apt task installs them (harness.py's apt
    proxy)."""
    return bool(os.environ.get("CHATMAILD_DEPLOY_PACKAGES_LAYER"))


def needed():
    """Whether a layer is still to be built (a cheap check: no lock, no build)."""
    base = container.base_dir()
    if not (base / ".complete").exists():
        return True
    layer = container.layer_dir(base, role_packages())
    return packages_layer() and not (layer / ".complete").exists()


def build(log):
    base = container.ensure_base(log)
    layers = [base]
    if packages_layer():
        layers.insert(0, container.ensure_layer(base, role_packages(), log))
    return layers


if __name__ == "__main__":
    build(Path(sys.argv[1]) if len(sys.argv) > 1 else container.CACHE / "prebuild.log")
