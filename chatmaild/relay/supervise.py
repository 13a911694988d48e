"""`python -m chatmaild.relay.supervise --name NAME --pid-file F [...] -- ARGV`: run one daemon
of the local relay and restart it when it dies, as systemd's `Restart=always` does.

The relay (`relay up`) starts one supervisor per daemon; the daemon is its child, with the
descriptor limit of the systemd units (`--nofile`). Its pid is kept in `--pid-file` (the
relay's tests kill it there). A daemon that ends without being asked is logged (how it
ended, after how long) and started again after the back-off of restarts.py; the new pid is
logged too. SIGTERM or SIGINT to the supervisor is passed on to the daemon, which gets
`--stop-timeout` seconds to finish (filtermail's sessions in flight) before SIGKILL.

A daemon whose very first run ends by itself with a non-zero status within
`FIRST_RUN_GRACE` seconds (a bad config, a port in use) is not restarted: the supervisor
ends with that status, so `relay up` reports the failure with the daemon's log.
Lines go to stderr, which is the daemon's log file.
"""

import argparse
import contextlib
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

from chatmaild.relay.restarts import Backoff

FIRST_RUN_GRACE = 3.0
STOP_TIMEOUT = 15.0
POLL = 0.1


def describe_exit(status):
    """'exited with status 1' / 'was killed by signal 9 (SIGKILL)' from a Popen returncode."""
    if status < 0:
        try:
            name = signal.Signals(-status).name
        except ValueError:
            name = "?"
        return f"was killed by signal {-status} ({name})"
    return f"exited with status {status}"


def _say(name, text):
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    print(f"{stamp} supervisor: {name} {text}", file=sys.stderr, flush=True)


class Supervisor:
    def __init__(self, name, argv, pid_file, nofile=None, stop_timeout=STOP_TIMEOUT):
        self.name = name
        self.argv = argv
        self.pid_file = Path(pid_file)
        self.nofile = nofile
        self.stop_timeout = stop_timeout
        self.backoff = Backoff()
        self.stopping = False
        self.child = None
        self.restarts = 0

    def _limits(self):
        if self.nofile is None:
            return
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        for limit in (self.nofile, min(self.nofile, hard)):
            with contextlib.suppress(ValueError, OSError):
                resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))
                return

    def start(self):
        self.child = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, preexec_fn=self._limits)
        tmp = self.pid_file.with_suffix(".tmp")
        tmp.write_text(f"{self.child.pid}\n")
        os.replace(tmp, self.pid_file)
        return time.monotonic()

    def request_stop(self, signum, frame):
        self.stopping = True

    def _sleep(self, seconds):
        """Sleep, but end early when a stop was requested."""
        deadline = time.monotonic() + seconds
        while not self.stopping and time.monotonic() < deadline:
            time.sleep(min(POLL, max(0.0, deadline - time.monotonic())))

    def run(self):
        started = self.start()
        first = True
        while True:
            while not self.stopping and self.child.poll() is None:
                time.sleep(POLL)
            if self.stopping:
                return self.stop()
            status = self.child.returncode
            ran_for = time.monotonic() - started
            if first and status > 0 and ran_for < FIRST_RUN_GRACE:
                _say(self.name, f"{describe_exit(status)} at start; not restarting it")
                self._remove_pid_file()
                return status
            first = False
            delay = self.backoff.next_delay(ran_for)
            _say(
                self.name,
                f"(pid {self.child.pid}) {describe_exit(status)} after {ran_for:.1f} s;"
                f" restarting in {delay:g} s",
            )
            self._sleep(delay)
            if self.stopping:
                self._remove_pid_file()
                return 0
            started = self.start()
            self.restarts += 1
            _say(self.name, f"restarted (pid {self.child.pid}, restart {self.restarts})")

    def stop(self):
        child = self.child
        if child.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                child.send_signal(signal.SIGTERM)
            try:
                child.wait(self.stop_timeout)
            except subprocess.TimeoutExpired:
                _say(self.name, f"did not stop within {self.stop_timeout:g} s: killing it")
                child.kill()
                child.wait()
        self._remove_pid_file()
        return 0

    def _remove_pid_file(self):
        with contextlib.suppress(FileNotFoundError):
            self.pid_file.unlink()


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m chatmaild.relay.supervise")
    parser.add_argument("--name", required=True, help="the daemon's name in log lines")
    parser.add_argument("--pid-file", required=True, help="where the daemon's pid is kept")
    parser.add_argument("--nofile", type=int, help="RLIMIT_NOFILE (soft and hard) of the daemon")
    parser.add_argument("--stop-timeout", type=float, default=STOP_TIMEOUT)
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- ARGV of the daemon")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no daemon command line after --")
    supervisor = Supervisor(args.name, command, args.pid_file, args.nofile, args.stop_timeout)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, supervisor.request_stop)
    return supervisor.run()


if __name__ == "__main__":
    sys.exit(main())
