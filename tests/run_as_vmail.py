"""Run a daemon entry point as `vmail`: `run_as_vmail.py [--preload m1,m2] MODULE ARGS...`.

On a relay systemd starts the daemons as vmail. Here the interpreter may live where vmail
cannot read it (e.g. under /root), so this starts as root, imports the daemon and everything
it loads lazily (plus the `--preload` modules), then drops to vmail and calls the
module's `cli.main(ARGS)`.
"""

import asyncio  # noqa: F401
import concurrent.futures.thread  # noqa: F401
import ctypes.util  # noqa: F401
import importlib
import json  # noqa: F401
import logging.handlers  # noqa: F401
import os
import pwd
import sys

try:
    import uvloop  # noqa: F401
except ImportError:
    pass


def main():
    argv = sys.argv[1:]
    preload = []
    if argv[:1] == ["--preload"]:
        preload = [name for name in argv[1].split(",") if name]
        argv = argv[2:]
    module, *args = argv
    cli = importlib.import_module(module + ".cli")
    for name in preload:
        importlib.import_module(name)
    vmail = pwd.getpwnam("vmail")
    if os.getuid() == 0:
        os.setgroups([])
        os.setgid(vmail.pw_gid)
        os.setuid(vmail.pw_uid)
    os.environ["HOME"] = vmail.pw_dir
    sys.argv = [module, *args]
    cli.main(args)


if __name__ == "__main__":
    main()
