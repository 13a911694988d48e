"""Running Debian's OpenDKIM inside the local relay.

OpenDKIM starts as root, opens its socket in the private Postfix queue, writes its pid
file and drops to the opendkim user (UserID), exactly as on a server. It logs only through
syslog(3): `bwrap` gives it a private /dev whose /dev/log is a symlink to our syslog sink's
socket (the real /dev is untouched). A symlink, not a bind mount of the socket: a restarted
sink makes a new socket at the same path, and OpenDKIM's next message reaches it.

The relay records OpenDKIM's own pid (from the pid file), not bwrap's: SIGTERM must reach
OpenDKIM, and bwrap, which waits for its child, ends with it. (bwrap's --die-with-parent
cannot be used: it would end OpenDKIM when `relay up` returns, and the parent-death signal
does not survive OpenDKIM's change of user.)
"""

import grp
import os
import pwd
import stat
import subprocess
import time

from chatmaild.relay.processes import read_pid
from chatmaild.render.dkimkey import ensure_key
from chatmaild.render.opendkim import USER

SOCKET_WAIT = 10.0


def opendkim_argv(dkim):
    """bwrap + opendkim in the foreground with the relay's configuration."""
    sandbox = ["bwrap", "--dev-bind", "/", "/", "--dev", "/dev"]
    if dkim.syslog_socket is not None:
        sandbox += ["--symlink", str(dkim.syslog_socket), "/dev/log"]
    return [*sandbox, "opendkim", "-f", "-x", str(dkim.config_file)]


def check_argv(dkim):
    """`opendkim -n`: parse the configuration and its tables, then exit."""
    return ["opendkim", "-n", "-x", str(dkim.config_file)]


def ensure_postfix_in_group(log, group=USER, user="postfix"):
    """Postfix reaches OpenDKIM's socket (mode 0770) through group opendkim, as upstream
    sets it up on a server."""
    if user in grp.getgrnam(group).gr_mem:
        return
    log(f"adding user {user} to group {group} (OpenDKIM's socket)")
    subprocess.run(["usermod", "--append", "--groups", group, user], check=True)


def prepare_opendkim(dkim, domain, log_owner, log):
    """Directories, group membership and key; returns the DNS TXT value."""
    ensure_postfix_in_group(log)
    user = pwd.getpwnam(USER)
    dkim.config_file.parent.mkdir(parents=True, exist_ok=True)
    dkim.socket.parent.mkdir(parents=True, exist_ok=True)
    os.chown(dkim.socket.parent, user.pw_uid, user.pw_gid)
    os.chmod(dkim.socket.parent, 0o750)
    if dkim.syslog_socket is not None:
        dkim.syslog_socket.parent.mkdir(parents=True, exist_ok=True)
        os.chown(dkim.syslog_socket.parent, log_owner.pw_uid, log_owner.pw_gid)
        # a socket left by an earlier run would pass wait_syslog_socket before the new
        # sink has made its own
        dkim.syslog_socket.unlink(missing_ok=True)
    dkim.pid_file.parent.mkdir(parents=True, exist_ok=True)
    dkim.pid_file.unlink(missing_ok=True)
    created, value = ensure_key(dkim, domain)
    if created:
        log(f"made a new DKIM key {dkim.key_file}")
    return value


def _is_socket(path):
    try:
        return stat.S_ISSOCK(path.stat().st_mode)
    except FileNotFoundError:
        return False


def wait_pid_file(dkim, proc, timeout=SOCKET_WAIT):
    """OpenDKIM's pid once it wrote its pid file; None if bwrap/OpenDKIM exited first."""
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        pid = read_pid(dkim.pid_file)
        if pid is not None:
            return pid
        time.sleep(0.05)
    return None


def wait_syslog_socket(dkim, timeout=SOCKET_WAIT):
    """Wait for the sink's socket, so that OpenDKIM's first lines are not lost."""
    if dkim.syslog_socket is None:
        return True
    deadline = time.monotonic() + timeout
    while not _is_socket(dkim.syslog_socket):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True
