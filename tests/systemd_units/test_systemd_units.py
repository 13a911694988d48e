"""The shipped units: exposure scores, `systemd-analyze verify`, and the facts that make
them drop-in replacements for an existing relay's units.

Run with `pytest -s tests/systemd_units` to see every score.
"""

import os
import re
import shutil
import subprocess
import sys
import tomllib

import pytest
from systemd_unitfile import (
    CHATMAIL_INI,
    REPO_ROOT,
    SYSTEMD_DIR,
    VENV_BIN,
    Unit,
    chatmaild_timers,
    chatmaild_units,
    dropin_files,
    parse_exposure,
)

from conftest import require_tool

MAX_EXPOSURE = 2.0
SCORES = {}

# Minimal base units the drop-ins are applied to: ExecStart and User as the Debian
# packages (and the relay's own mtail unit) have them, and no hardening of their own,
# so the score measures what the drop-in brings.
BASE_UNITS = {
    "prometheus": "User=prometheus\nExecStart=/usr/bin/prometheus $ARGS\n",
    "grafana-server": (
        "User=grafana\nGroup=grafana\n"
        "ExecStart=/usr/share/grafana/bin/grafana server --config=/etc/grafana/grafana.ini\n"
    ),
    "prometheus-node-exporter": "User=prometheus\nExecStart=/usr/bin/prometheus-node-exporter\n",
    "prometheus-nginx-exporter": "User=prometheus\nExecStart=/usr/bin/prometheus-nginx-exporter\n",
    "prometheus-postfix-exporter": (
        "User=prometheus\nExecStart=/usr/bin/prometheus-postfix-exporter\n"
    ),
    # Debian 12's coturn.service (its hardening is InaccessibleDirectories=/home, PrivateTmp)
    "coturn": (
        "User=turnserver\nGroup=turnserver\nType=notify\n"
        "ExecStart=/usr/bin/turnserver -c /etc/turnserver.conf --pidfile=\n"
    ),
    "mtail": (
        'ExecStart=/bin/sh -c "journalctl -f -o short-iso -n 0 | /usr/local/bin/mtail'
        ' --address=127.0.0.1 --port=3903 --progs /etc/mtail --logtostderr --logs /dev/stdin"\n'
    ),
}

EXPECTED_EXEC = {
    "filtermail.service": f"{VENV_BIN}/filtermail {CHATMAIL_INI} outgoing",
    "filtermail-incoming.service": f"{VENV_BIN}/filtermail {CHATMAIL_INI} incoming",
    "filtermail-transport.service": f"{VENV_BIN}/filtermail {CHATMAIL_INI} transport",
    "doveauth.service": f"{VENV_BIN}/doveauth /run/doveauth/doveauth.socket {CHATMAIL_INI}",
    "lastlogin.service": (
        f"{VENV_BIN}/lastlogin /run/chatmail-lastlogin/lastlogin.socket {CHATMAIL_INI}"
    ),
    "chatmail-metadata.service": (
        f"{VENV_BIN}/chatmail-metadata /run/chatmail-metadata/metadata.socket {CHATMAIL_INI}"
    ),
    "chatmail-expire.service": f"{VENV_BIN}/chatmail-expire {CHATMAIL_INI} --remove",
    # TURN credentials on /run/chatmail-turn/turn.socket (turn_socket_path of the ini)
    "chatmail-turn.service": f"{VENV_BIN}/chatmail-turn serve {CHATMAIL_INI}",
    # /new behind nginx (upstream: the newemail CGI behind fcgiwrap)
    "chatmail-web.service": (
        f"{VENV_BIN}/chatmail-web {CHATMAIL_INI} --listen unix:/run/chatmail-web/web.socket"
    ),
    "chatmail-fsreport.service": (
        f"{VENV_BIN}/chatmail-fsreport {CHATMAIL_INI} --textfile /var/lib/prometheus/node-exporter"
    ),
    # chatmaild's own metrics services (no counterpart on an existing relay: mtail and cron)
    "chatmail-logmetrics.service": (
        f"{VENV_BIN}/chatmail-logmetrics {CHATMAIL_INI} --udp 127.0.0.1:3904"
        " --unix-dgram /run/chatmail-logmetrics/syslog.socket"
    ),
    "chatmail-extra-metrics.service": (
        f"{VENV_BIN}/chatmail-extra-metrics {CHATMAIL_INI}"
        " --textfile-dir /var/lib/prometheus/node-exporter"
    ),
    # no counterpart on an existing relay: it replaces n0's iroh-relay binary
    "chatmail-iroh-relay.service": f"{VENV_BIN}/chatmail-iroh-relay {CHATMAIL_INI}",
}


def analyze(*args):
    require_tool("systemd-analyze")
    return subprocess.run(
        ["systemd-analyze", *args], capture_output=True, text=True, timeout=60, check=False
    )


@pytest.fixture(scope="module", autouse=True)
def print_summary():
    yield
    if SCORES:
        print("\nsystemd-analyze security --offline=true, overall exposure:")
        for name, score in sorted(SCORES.items()):
            print(f"  {score:4.1f}  {name}")


def ids(paths):
    return [p.name if p.suffix else p.parent.name for p in paths]


def test_the_unit_set_is_complete():
    names = {p.name for p in chatmaild_units()} | {p.name for p in chatmaild_timers()}
    assert {
        "filtermail.service",
        "filtermail-incoming.service",
        "filtermail-transport.service",
        "doveauth.service",
        "lastlogin.service",
        "chatmail-metadata.service",
        "chatmail-logmetrics.service",
        "chatmail-extra-metrics.service",
        "chatmail-extra-metrics.timer",
        "chatmail-expire.service",
        "chatmail-expire.timer",
        "chatmail-fsreport.service",
        "chatmail-fsreport.timer",
        "chatmail-web.service",
        "chatmail-turn.service",
        "chatmail-iroh-relay.service",
    } <= names
    assert {p.parent.name for p in dropin_files()} == {f"{s}.service.d" for s in BASE_UNITS}


@pytest.mark.parametrize("path", chatmaild_units(), ids=ids(chatmaild_units()))
def test_unit_exposure_below_2(path):
    result = analyze("security", "--offline=true", "--no-pager", str(path))
    assert "Unknown key" not in result.stderr, result.stderr
    score = parse_exposure(result.stdout)
    SCORES[path.name] = score
    print(f"{path.name}: exposure {score}")
    assert score < MAX_EXPOSURE, result.stdout


def _root_with(tmp_path, service, dropin=None):
    unitdir = tmp_path / "etc/systemd/system"
    unitdir.mkdir(parents=True)
    base = f"[Unit]\nDescription=base {service}\n\n[Service]\n{BASE_UNITS[service]}"
    (unitdir / f"{service}.service").write_text(base)
    if dropin is not None:
        (unitdir / f"{service}.service.d").mkdir()
        shutil.copy(dropin, unitdir / f"{service}.service.d/hardening.conf")
    return tmp_path


@pytest.mark.parametrize("dropin", dropin_files(), ids=ids(dropin_files()))
def test_dropin_exposure_below_2(dropin, tmp_path):
    service = dropin.parent.name.removesuffix(".service.d")
    bare = analyze(
        "security",
        "--offline=true",
        "--no-pager",
        f"--root={_root_with(tmp_path / 'bare', service)}",
        f"{service}.service",
    )
    hardened = analyze(
        "security",
        "--offline=true",
        "--no-pager",
        f"--root={_root_with(tmp_path / 'hardened', service, dropin)}",
        f"{service}.service",
    )
    assert "Unknown key" not in hardened.stderr, hardened.stderr
    before, after = parse_exposure(bare.stdout), parse_exposure(hardened.stdout)
    SCORES[f"{service}.service + hardening.conf"] = after
    print(f"{service}.service: exposure {before} bare, {after} with hardening.conf")
    assert before > 5.0, "the base unit alone must be exposed, or the drop-in was not measured"
    assert after < MAX_EXPOSURE, hardened.stdout


def _console_scripts():
    with open(REPO_ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["project"]["scripts"]


def _render_for_verify(tmp_path):
    """Copies of the units whose ExecStart points at a bin dir holding the console scripts
    the package installs (pyproject's [project.scripts], as pip writes them)."""
    bindir = tmp_path / "venv/bin"
    bindir.mkdir(parents=True)
    for name, target in _console_scripts().items():
        module, func = target.split(":")
        script = bindir / name
        script.write_text(
            f"#!{sys.executable}\nimport sys\nfrom {module} import {func}\nsys.exit({func}())\n"
        )
        script.chmod(0o755)
    unitdir = tmp_path / "units"
    unitdir.mkdir()
    for path in chatmaild_units() + chatmaild_timers():
        text = path.read_text().replace(VENV_BIN + "/", f"{bindir}/")
        (unitdir / path.name).write_text(text)
    return unitdir


@pytest.mark.parametrize("path", chatmaild_units(), ids=ids(chatmaild_units()))
def test_exec_start_is_a_packaged_console_script(path):
    program = Unit.load(path).exec_start()[0]
    assert program.startswith(VENV_BIN + "/")
    assert program.removeprefix(VENV_BIN + "/") in _console_scripts()


def test_verify_is_clean(tmp_path):
    unitdir = _render_for_verify(tmp_path)
    units = sorted(str(p) for p in unitdir.iterdir())
    result = analyze("verify", "--man=no", "--generators=no", *units)
    print(f"systemd-analyze verify on {len(units)} units: rc={result.returncode}")
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr


def test_verify_catches_a_missing_binary(tmp_path):
    """The verify check is not vacuous: an ExecStart path that does not exist fails."""
    unit = tmp_path / "broken.service"
    unit.write_text("[Service]\nExecStart=/nonexistent/chatmaild/bin/doveauth\n")
    result = analyze("verify", "--man=no", "--generators=no", str(unit))
    assert result.returncode != 0 or "not executable" in result.stderr


def test_dropins_verify_clean(tmp_path):
    """Drop-ins have no unknown or misspelt settings: verify each on its base unit, in a
    temp root (ExecStart must exist inside the root, so it is a copy of /bin/true)."""
    root = tmp_path / "root"
    stand_in = root / "usr/bin/stand-in"
    stand_in.parent.mkdir(parents=True)
    shutil.copy("/bin/true", stand_in)
    unitdir = root / "etc/systemd/system"
    unitdir.mkdir(parents=True)
    for dropin in dropin_files():
        service = dropin.parent.name.removesuffix(".service.d")
        users = [x for x in BASE_UNITS[service].splitlines() if x.startswith(("User=", "Group="))]
        (unitdir / f"{service}.service").write_text(
            "[Unit]\nDefaultDependencies=no\n\n[Service]\n"
            + "".join(x + "\n" for x in users)
            + "ExecStart=/usr/bin/stand-in\n"
        )
        (unitdir / f"{service}.service.d").mkdir()
        shutil.copy(dropin, unitdir / f"{service}.service.d/hardening.conf")
        result = analyze(
            "verify", "--man=no", "--generators=no", f"--root={root}", f"{service}.service"
        )
        assert result.returncode == 0, f"{service}: {result.stderr}"
        assert result.stderr.strip() == "", f"{service}: {result.stderr}"


@pytest.mark.parametrize("name", sorted(EXPECTED_EXEC))
def test_command_lines_match_existing_relays(name):
    unit = Unit.load(SYSTEMD_DIR / name)
    assert unit.get("ExecStart") == EXPECTED_EXEC[name]
    if name in ("chatmail-logmetrics.service", "chatmail-iroh-relay.service"):
        assert unit.flag("DynamicUser") and unit.get("User") is None
    elif name == "chatmail-extra-metrics.service":
        assert unit.get("User") is None  # root, with two capabilities
    elif name == "chatmail-turn.service":
        # coturn's user, the owner of the secret; the secret is made before, as root
        assert unit.get("User") == "turnserver"
        assert unit.get("ExecStartPre") == "+" + EXPECTED_EXEC[name].replace(
            " serve ", " init-secret "
        )
    else:
        assert unit.get("User") == "vmail"


@pytest.mark.parametrize(
    "name, runtime_dir",
    [
        ("doveauth.service", "doveauth"),
        ("lastlogin.service", "chatmail-lastlogin"),
        ("chatmail-metadata.service", "chatmail-metadata"),
        ("chatmail-web.service", "chatmail-web"),
    ],
)
def test_socket_lives_in_the_runtime_directory(name, runtime_dir):
    unit = Unit.load(SYSTEMD_DIR / name)
    assert unit.all("RuntimeDirectory") == [runtime_dir]
    socket_path = unit.exec_start()[1]
    if socket_path.endswith(".ini"):  # chatmail-web: CONFIG --listen unix:SOCKET
        socket_path = unit.exec_start()[-1].removeprefix("unix:")
    assert os.path.dirname(socket_path) == f"/run/{runtime_dir}"
    assert unit.get("UMask") == "0077"


@pytest.mark.parametrize("path", chatmaild_units(), ids=ids(chatmaild_units()))
def test_common_hardening(path):
    unit = Unit.load(path)
    for key in (
        "NoNewPrivileges",
        "PrivateTmp",
        "PrivateDevices",
        "ProtectClock",
        "ProtectHostname",
        "ProtectKernelTunables",
        "ProtectKernelModules",
        "ProtectKernelLogs",
        "ProtectControlGroups",
        "RestrictNamespaces",
        "RestrictRealtime",
        "RestrictSUIDSGID",
        "LockPersonality",
        "MemoryDenyWriteExecute",
    ):
        assert unit.flag(key), f"{path.name}: {key}"
    assert unit.get("ProtectSystem") == "strict"
    assert unit.get("ProtectProc") == "invisible"
    assert unit.get("ProtectHome") in ("yes", "tmpfs")
    assert unit.get("SystemCallArchitectures") == "native"
    assert unit.sections["Service"]["SystemCallFilter"][0] == "@system-service"
    assert unit.all("RestrictAddressFamilies")
    assert unit.get("UMask") == "0077"
    if unit.get("User") == "vmail" or unit.flag("DynamicUser"):
        assert unit.all("CapabilityBoundingSet") == []
    if unit.get("Type") != "oneshot":
        assert unit.get("Restart") in ("always", "on-failure")


@pytest.mark.parametrize("path", chatmaild_units(), ids=ids(chatmaild_units()))
def test_write_paths_are_only_the_needed_ones(path):
    unit = Unit.load(path)
    writable = set(unit.all("ReadWritePaths")) | set(unit.all("BindPaths"))
    expected = {
        "filtermail.service": set(),
        "filtermail-incoming.service": set(),
        "filtermail-transport.service": set(),
        "doveauth.service": {"/home/vmail/mail"},
        "lastlogin.service": {"/home/vmail/mail"},
        "chatmail-metadata.service": {"/home/vmail/mail"},
        "chatmail-expire.service": {"/home/vmail/mail"},
        "chatmail-fsreport.service": {"/var/lib/prometheus/node-exporter"},
        "chatmail-extra-metrics.service": {"/var/lib/prometheus/node-exporter"},
        "chatmail-logmetrics.service": set(),
        "chatmail-web.service": set(),  # reads the mailboxes (BindReadOnlyPaths) only
        "chatmail-turn.service": set(),  # reads the TURN secret only
        "chatmail-iroh-relay.service": set(),
    }[path.name]
    assert writable == expected


@pytest.mark.parametrize("path", chatmaild_units(), ids=ids(chatmaild_units()))
def test_loopback_services_have_an_ip_allow_list(path):
    unit = Unit.load(path)
    if path.name == "chatmail-metadata.service":
        assert unit.all("IPAddressDeny") == [], "metadata posts notifications over HTTPS"
    elif path.name == "filtermail-transport.service":
        assert unit.all("IPAddressDeny") == [], "the transport delivers to other relays"
    else:
        assert unit.all("IPAddressDeny") == ["any"]
        assert set(unit.all("IPAddressAllow")) <= {"localhost"}


@pytest.mark.parametrize("timer", chatmaild_timers(), ids=ids(chatmaild_timers()))
def test_timers_have_their_service_and_schedule(timer):
    unit = Unit.load(timer)
    service = SYSTEMD_DIR / timer.name.replace(".timer", ".service")
    assert service.exists()
    assert Unit.load(service).get("Type") == "oneshot"
    calendar = unit.get("OnCalendar", section="Timer")
    if "extra-metrics" in timer.name:
        assert calendar == "*-*-* *:*:00"
    else:
        assert re.fullmatch(r"\*-\*-\* \d\d:\d\d:00", calendar), calendar
        assert unit.get("Persistent", section="Timer") == "true"
    assert unit.get("WantedBy", section="Install") == "timers.target"


@pytest.mark.parametrize("path", chatmaild_units(), ids=ids(chatmaild_units()))
def test_daemons_have_the_descriptor_limit_of_the_local_relay(path):
    """A long-running daemon gets LimitNOFILE (soft = hard: the units' seccomp filter forbids
    setrlimit, so the daemon cannot raise its soft limit itself); `relay up` gives its
    daemons the same limit, so the tests see what production sees."""
    from chatmaild.relay.daemons import LIMIT_NOFILE

    unit = Unit.load(path)
    if unit.get("Type") == "oneshot":
        return
    # at least that much (a unit may need more, e.g. the iroh relay's one per client)
    assert int(unit.get("LimitNOFILE") or 0) >= LIMIT_NOFILE, path.name
