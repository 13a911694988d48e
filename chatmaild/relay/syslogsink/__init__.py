"""A minimal syslog daemon for one program: datagrams on a unix socket, lines to a file.

    python -m chatmaild.relay.syslogsink SOCKET FILE

OpenDKIM logs only through syslog(3), i.e. to /dev/log. The local relay has no syslog
daemon, so it runs OpenDKIM with /dev/log pointing to SOCKET (bwrap) and this sink
appends every message as one line to FILE (`<state>/log/opendkim.log`), which a human reads
and chatmail-logmetrics follows like every other log of the relay.
"""

import os
import signal
import socket
import sys
from pathlib import Path

MAX_DATAGRAM = 65536


def as_line(data):
    """One datagram as one log line: trailing newlines dropped, inner ones escaped."""
    return data.rstrip(b"\r\n").replace(b"\n", b"\\n") + b"\n"


def bind(path):
    path = Path(path)
    path.unlink(missing_ok=True)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    os.chmod(path, 0o666)  # the logging program may have dropped to any user
    return sock


def _exit(signum, frame):
    sys.exit(0)


def main(argv=None):
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m chatmaild.relay.syslogsink SOCKET FILE", file=sys.stderr)
        return 2
    path, log_file = args
    signal.signal(signal.SIGTERM, _exit)
    sock = bind(path)
    try:
        with open(log_file, "ab", buffering=0) as out:
            while True:
                data = sock.recv(MAX_DATAGRAM)
                if data:
                    out.write(as_line(data))
    finally:
        sock.close()
        Path(path).unlink(missing_ok=True)
