"""Run every chatmaild daemon of this checkout on an embedded default configuration.

`chatmaild-run [--state-dir DIR] [--config INI]` writes a chatmail.ini for a loopback-only
test domain into the state directory (unless one is given), starts each daemon whose module
exists, says what it started, and stops them all on Ctrl-C or SIGTERM. It is the quick way to
poke at the daemons; the full relay with Postfix and Dovecot is `chatmaild.relay`.
"""

import argparse
import importlib.util
import signal
import subprocess
import sys
import time
from pathlib import Path

DEFAULT_DOMAIN = "chat.example"

DEFAULT_INI = """\
# Embedded default configuration of chatmaild-run: loopback only, state under {state}.
[params]
mail_domain = {domain}
mailboxes_dir = {state}/mailboxes
nocreate_file = {state}/nocreate
turn_socket_path = {state}/turn.socket
notification_url = http://127.0.0.1:9/notify
max_load_1m = 1000
min_available_memory = 1M
min_free_disk_space = 1M
filtermail_smtp_port = 10080
postfix_reinject_port = 10025
filtermail_smtp_port_incoming = 10081
postfix_reinject_port_incoming = 10026
"""


def daemon_table(config_path, state):
    """(name, module, argv tail, what it serves) for each daemon of the suite."""
    sockets = state / "run"
    return [
        ("filtermail outgoing", "chatmaild.filtermail", [config_path, "outgoing"], "SMTP"),
        ("filtermail incoming", "chatmaild.filtermail", [config_path, "incoming"], "SMTP"),
        (
            "doveauth",
            "chatmaild.doveauth",
            [sockets / "doveauth.socket", config_path],
            "dict socket",
        ),
        (
            "lastlogin",
            "chatmaild.lastlogin",
            [sockets / "lastlogin.socket", config_path],
            "dict socket",
        ),
        (
            "chatmail-metadata",
            "chatmaild.metadata",
            [sockets / "metadata.socket", config_path],
            "dict socket",
        ),
    ]


def module_exists(name):
    try:
        return importlib.util.find_spec(name + ".__main__") is not None
    except ModuleNotFoundError:
        return False


def main(argv=None):
    parser = argparse.ArgumentParser(prog="chatmaild-run", description=__doc__.splitlines()[0])
    parser.add_argument("--state-dir", default="./chatmaild-state", type=Path)
    parser.add_argument("--config", type=Path, help="use this chatmail.ini instead")
    parser.add_argument("--seconds", type=float, help="stop by itself after this long")
    args = parser.parse_args(argv)

    state = args.state_dir.resolve()
    (state / "run").mkdir(parents=True, exist_ok=True)
    (state / "mailboxes").mkdir(exist_ok=True)
    if args.config:
        config_path = args.config.resolve()
    else:
        config_path = state / "chatmail.ini"
        config_path.write_text(DEFAULT_INI.format(state=state, domain=DEFAULT_DOMAIN))
    from chatmaild.config import load_config_or_exit

    config = load_config_or_exit(config_path)

    procs = []
    print(f"chatmaild-run: config {config_path}, state in {state}")
    for name, module, tail, serves in daemon_table(config_path, state):
        if not module_exists(module):
            print(f"  - {name}: not in this checkout yet, skipped")
            continue
        argv_ = [sys.executable, "-m", module, *map(str, tail)]
        proc = subprocess.Popen(argv_)
        procs.append((name, proc))
        where = tail[0] if serves == "dict socket" else _smtp_port(config, tail[1])
        print(f"  + {name} (pid {proc.pid}): {serves} {where}")
    if not procs:
        print("  no daemon exists in this checkout yet; nothing to run")
    print("Ctrl-C stops everything.", flush=True)

    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(1))
    deadline = time.monotonic() + args.seconds if args.seconds else None
    try:
        while not stopping and (deadline is None or time.monotonic() < deadline):
            for name, proc in procs:
                if proc.poll() is not None:
                    print(f"chatmaild-run: {name} exited with status {proc.returncode}")
                    stopping.append(1)
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    for _, proc in procs:
        if proc.poll() is None:
            proc.terminate()
    for name, proc in procs:
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        print(f"chatmaild-run: stopped {name}")
    print("chatmaild-run: all stopped")
    return 0


def _smtp_port(config, mode):
    if mode == "outgoing":
        return f"127.0.0.1:{config.filtermail_smtp_port}"
    return f"127.0.0.1:{config.filtermail_smtp_port_incoming}"


if __name__ == "__main__":
    sys.exit(main())
