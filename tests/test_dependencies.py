"""The runtime dependencies are what production runs (issue 19 §5).

Every module under chatmaild/ is read (its imports, at any depth, by `ast`) and each
third-party import is mapped to the distribution that provides it in this environment:
- what chatmaild/ imports is a runtime dependency, except the local relay's test CA
  (trustme, the `relay` extra, imported on first use);
- every runtime dependency is imported somewhere under chatmaild/ (none is pinned for
  nothing, as aiosmtpd and pgpy were);
- every pin in pyproject.toml is the version constraints.txt holds;
- with the extras' packages made unimportable, every module under chatmaild/ imports and
  the production commands of `python -m chatmaild.relay` (render, dkim-record, dns) run.
"""

import ast
import importlib.metadata
import re
import subprocess
import sys
import tomllib

import pytest

from conftest import REPO_ROOT, daemon_env, write_ini

PACKAGE = REPO_ROOT / "chatmaild"
# modules allowed to import a package of an extra, and which (imported inside a function)
EXTRA_IMPORTS = {"chatmaild/relay/testca.py": {"trustme"}}
# the packages of the extras, none of which production may need
NOT_RUNTIME = ("trustme", "aiosmtpd", "pgpy", "nacl", "pytest", "deltachat_rpc_client")


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _pyproject() -> dict:
    return tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())


def _pins(requirements) -> dict[str, str]:
    pins = {}
    for req in requirements:
        name, sep, version = req.partition("==")
        assert sep, f"{req}: every dependency is pinned exactly"
        pins[_norm(name)] = version
    return pins


def _top_level_imports(path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names - set(sys.stdlib_module_names) - {"chatmaild", "__future__"}


def _imported_distributions() -> dict[str, set[str]]:
    """{module path: distributions it imports}."""
    providers = importlib.metadata.packages_distributions()
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        dists = set()
        for name in _top_level_imports(path):
            assert name in providers, f"{path}: imports {name}, which nothing installed provides"
            dists.update(_norm(d) for d in providers[name])
        found[str(path.relative_to(REPO_ROOT))] = dists
    return found


def test_chatmaild_imports_only_runtime_dependencies():
    runtime = set(_pins(_pyproject()["project"]["dependencies"]))
    providers = importlib.metadata.packages_distributions()
    for module, dists in _imported_distributions().items():
        allowed = {_norm(d) for n in EXTRA_IMPORTS.get(module, ()) for d in providers[n]}
        assert dists - allowed <= runtime, f"{module} imports {sorted(dists - runtime)}"


def test_every_runtime_dependency_is_imported_under_chatmaild():
    runtime = set(_pins(_pyproject()["project"]["dependencies"]))
    imported = set().union(*_imported_distributions().values())
    assert runtime <= imported, f"pinned but never imported: {sorted(runtime - imported)}"
    for name in ("aiosmtpd", "pgpy", "trustme", "pynacl"):
        assert name not in runtime


def test_every_runtime_dependency_says_why_it_is_there():
    """pyproject.toml: a comment line right above each runtime dependency."""
    text = (REPO_ROOT / "pyproject.toml").read_text()
    block = text.split("dependencies = [", 1)[1].split("]", 1)[0]
    lines = [line.strip() for line in block.strip().splitlines()]
    for before, line in zip(lines, lines[1:], strict=False):
        if line.startswith('"'):
            assert before.startswith("# "), f"no reason given for {line}"
    assert lines[0].startswith("# ")


def test_pins_agree_with_constraints():
    constraints = {}
    for line in (REPO_ROOT / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            constraints[_norm(name)] = version
    project = _pyproject()["project"]
    groups = [project["dependencies"], *project["optional-dependencies"].values()]
    for group in groups:
        for name, version in _pins(group).items():
            assert constraints.get(name) == version, f"{name}=={version} vs constraints.txt"


BLOCK = "import sys\nfor name in {names!r}:\n    sys.modules[name] = None\n"


def _run_blocked(code: str, *args) -> subprocess.CompletedProcess:
    """Run `code` in a new interpreter in which the extras' packages cannot be imported."""
    program = BLOCK.format(names=NOT_RUNTIME) + code
    return subprocess.run(
        [sys.executable, "-c", program, *args],
        env=daemon_env(),
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_every_module_imports_without_the_extras():
    modules = [
        ".".join(path.relative_to(REPO_ROOT).with_suffix("").parts)
        for path in sorted(PACKAGE.rglob("*.py"))
        if path.name != "__main__.py"
    ]
    code = "import importlib\nfor m in sys.argv[1:]:\n    importlib.import_module(m)\n"
    done = _run_blocked(code, *modules)
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.mark.parametrize("command", ["render", "dkim-record", "dns"])
def test_production_relay_commands_run_without_the_extras(tmp_path, command):
    ini = write_ini(tmp_path / "chatmail.ini", mail_domain="eijo.im")
    key = tmp_path / "dkim.private"
    from chatmaild.render.dkimkey import new_private_pem

    key.write_bytes(new_private_pem(1024))
    args = [command, "--config", str(ini), "--dkim-key", str(key)]
    if command == "render":
        args += ["--out", str(tmp_path / "out")]
    code = "import runpy\nsys.argv[0] = 'chatmaild.relay'\n"
    code += "runpy.run_module('chatmaild.relay', run_name='__main__')\n"
    done = _run_blocked(code, *args)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "eijo.im" in done.stdout or "_domainkey" in done.stdout
