"""Reading systemd unit files and the facts the tests check about them.

A small parser, enough for our units: sections, `Key=value` lines, repeated keys appended
in order, an empty assignment resets the list (as systemd does for list settings).
"""

import re
import shlex
import subprocess
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
SYSTEMD_DIR = REPO_ROOT / "systemd"
DROPINS_DIR = SYSTEMD_DIR / "dropins"
VENV_BIN = "/usr/local/lib/chatmaild/venv/bin"
CHATMAIL_INI = "/usr/local/lib/chatmaild/chatmail.ini"


class Unit:
    def __init__(self, text, name=""):
        self.name = name
        self.sections = {}
        section = None
        for raw in text.splitlines():
            line = raw.strip()
            if not line or line[0] in "#;":
                continue
            if line.startswith("[") and line.endswith("]"):
                section = self.sections.setdefault(line[1:-1], {})
                continue
            key, _, value = line.partition("=")
            values = section.setdefault(key.strip(), [])
            if value.strip() == "":
                values.clear()
                values.append("")
            else:
                values.append(value.strip())

    @classmethod
    def load(cls, path, *dropins):
        unit = cls(Path(path).read_text(), Path(path).name)
        for dropin in dropins:
            extra = cls(Path(dropin).read_text())
            for section, keys in extra.sections.items():
                mine = unit.sections.setdefault(section, {})
                for key, values in keys.items():
                    if values[:1] == [""]:
                        mine[key] = list(values)
                    else:
                        mine.setdefault(key, []).extend(values)
        return unit

    def all(self, key, section="Service"):
        """Every value assigned to key, after resets, as one list of words."""
        words = []
        for value in self.sections.get(section, {}).get(key, []):
            if value == "":
                words.clear()
            else:
                words.extend(value.split())
        return words

    def get(self, key, default=None, section="Service"):
        values = self.sections.get(section, {}).get(key)
        return values[-1] if values else default

    def flag(self, key):
        return (self.get(key) or "no").lower() in ("yes", "true", "1", "on")

    def exec_start(self):
        return shlex.split(self.get("ExecStart"))


def chatmaild_units():
    return sorted(SYSTEMD_DIR.glob("*.service"))


def chatmaild_timers():
    return sorted(SYSTEMD_DIR.glob("*.timer"))


def dropin_files():
    return sorted(DROPINS_DIR.glob("*.service.d/hardening.conf"))


_EXPOSURE = re.compile(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)")


def parse_exposure(output):
    """The number of the 'Overall exposure level' line of systemd-analyze security."""
    match = _EXPOSURE.search(output)
    if match is None:
        raise ValueError(f"no 'Overall exposure level' line in:\n{output}")
    return float(match.group(1))


def syscall_groups():
    """{'@group': [members...]} as this systemd defines them (members may be groups)."""
    out = subprocess.run(
        ["systemd-analyze", "syscall-filter", "--no-pager"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    groups, current = {}, None
    for line in out.splitlines():
        word = line.strip()
        if not word or word.startswith("#"):
            continue
        if not line.startswith(" "):
            current = groups.setdefault(word, [])
        elif current is not None:
            current.append(word)
    return groups


def expand_syscalls(names, groups):
    result, stack = set(), list(names)
    while stack:
        name = stack.pop()
        if name.startswith("@"):
            stack.extend(groups[name])
        else:
            result.add(name.split(":")[0])
    return result


def allowed_syscalls(unit, groups):
    """The allow list a SystemCallFilter= allow list plus ~ removals amounts to.

    systemd adds @default to an allow list by itself; later `~` lines remove from it.
    """
    allowed = None
    for value in unit.sections.get("Service", {}).get("SystemCallFilter", []):
        deny = value.startswith("~")
        names = value.lstrip("~").split()
        if allowed is None:
            if deny:
                raise ValueError("emulation supports allow-list filters only")
            allowed = expand_syscalls(["@default"], groups)
        if deny:
            allowed -= expand_syscalls(names, groups)
        else:
            allowed |= expand_syscalls(names, groups)
    return allowed
