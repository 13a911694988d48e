"""Shared test helpers.

`require(condition, what)` is how a test states a prerequisite (a Debian tool, root, a network
namespace): outside CI a missing one skips the test, under CI=true it fails, so CI can never turn
green by skipping the end-to-end tests.
"""

import os
import shutil
import sys
import textwrap
from pathlib import Path

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
REPO_ROOT = Path(__file__).resolve().parent.parent


def require(condition, what):
    if condition:
        return
    if IN_CI:
        pytest.fail(f"prerequisite missing in CI: {what}")
    pytest.skip(f"prerequisite missing: {what}")


def require_tool(*names):
    for name in names:
        require(shutil.which(name) or Path(name).exists(), f"tool {name!r}")


def write_ini(path, mail_domain="chat.example", **params):
    """Write a chatmail.ini with `params` overriding, return its path."""
    lines = ["[params]", f"mail_domain = {mail_domain}"]
    for key, value in params.items():
        lines.append(f"{key} = {value}")
    path = Path(path)
    path.write_text(textwrap.dedent("\n".join(lines)) + "\n")
    return path


def daemon_argv(module, *args):
    """Command line that runs a chatmaild entry point from this checkout."""
    return [sys.executable, "-m", module, *map(str, args)]


def daemon_env():
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


@pytest.fixture
def ini_path(tmp_path):
    """A minimal chatmail.ini in a temp dir, mailboxes under tmp_path/mailboxes."""
    return write_ini(
        tmp_path / "chatmail.ini",
        mailboxes_dir=tmp_path / "mailboxes",
        nocreate_file=tmp_path / "nocreate",
        max_load_1m=1000,
        min_free_disk_space="1K",
        min_available_memory="1K",
    )


@pytest.fixture
async def sink():
    """A started RecordingSink (tests/filtermail_server_helpers.py), stopped afterwards."""
    from filtermail_server_helpers import RecordingSink

    sink = await RecordingSink().start()
    yield sink
    await sink.stop()


def write_self_signed_cert(path, dns_name, days):
    """A PEM certificate for `dns_name` valid from yesterday for `days` days (EC P-256)."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, dns_name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(dns_name)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def pytest_collection_modifyitems(session, config, items):
    """The deployment tests (tests/e2e_deploy) run last, and when other tests run before them
    the cached container base they boot from is built meanwhile, in the background at low
    priority (on a fresh machine: a minute or two of debootstrap, mostly waiting)."""
    deploy, others = [], []
    for item in items:
        (deploy if "e2e_deploy" in item.path.parts else others).append(item)
    if not deploy or not others:
        return
    items[:] = others + deploy
    if os.geteuid() != 0 or not shutil.which("debootstrap"):
        return  # the deployment fixture says what is missing
    from e2e_deploy import prebuild

    if prebuild.needed():
        import subprocess

        log = prebuild.container.CACHE / "prebuild.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as out:
            subprocess.Popen(
                ["nice", "-n", "19", "ionice", "-c", "3",
                 sys.executable, "-m", "e2e_deploy.prebuild", str(log)],
                cwd=Path(__file__).parent, start_new_session=True,
                stdin=subprocess.DEVNULL, stdout=out, stderr=out,
            )  # fmt: skip
