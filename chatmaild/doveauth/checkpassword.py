"""`python -m chatmaild.doveauth.checkpassword SOCKET`: Dovecot's checkpassword program that
creates an account on its first login, without the password ever reaching a log line.

Dovecot's dict passdb puts its lookup key into every error it logs ("Failed to lookup key
...", "Dict server timeout: ... <query>", the slow-lookup warning). So the dict passdb of
auth.conf looks accounts up by user only (`passdb/%Eu`), and only a login it does not find
comes here (the second passdb of dovecot.conf). Dovecot hands user and password over a pipe
(fd 3: `user NUL password NUL timestamp NUL`, at most 512 bytes); this program asks doveauth
over its dict socket with the key upstream's auth.conf uses (`passdb/<password>"<user>`,
which creates the account when the rules allow it), verifies the password against the
stored `{SHA512-CRYPT}` hash and answers with the exit status of the checkpassword protocol:
0 (and the user on fd 4) when the password matches, 1 when it does not or no account can
exist, 111 when doveauth cannot be asked (it is down, hung or slower than the timeout).
Its one stderr line on failure (Dovecot logs it) names the socket and the reason, never the
password. Only the standard library and `hashing` are imported: it starts per first login
(and per wrong password of an existing account; Dovecot's `username_filter` keeps logins
of names that could never be created from starting it).
"""

import json
import os
import socket
import sys
import time

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_TEMPORARY = 111
#: how long doveauth may take for connect + lookup (a creation hashes: well below a second)
TIMEOUT = 10.0
MAX_REQUEST = 512
MAX_REPLY = 65536

_DICT_ESCAPES = {"\x00": "\x010", "\x01": "\x011", "\t": "\x01t", "\r": "\x01r", "\n": "\x01n"}


def dict_escape(text):
    """Tab-escape one dict protocol field (as Dovecot's str_tabescape)."""
    return "".join(_DICT_ESCAPES.get(c, c) for c in text)


def sql_escape(text):
    """Dovecot's %E modifier: a backslash before `\\`, `'` and `"`."""
    return text.replace("\\", "\\\\").replace("'", "\\'").replace('"', '\\"')


def creation_query(user, password):
    """The dict request lines asking doveauth for (and possibly creating) `user`."""
    key = "shared/passdb/" + sql_escape(password) + '"' + sql_escape(user)
    hello = "H3\t2\t0\t\tauth\n"
    return (hello + "L" + dict_escape(key) + "\t\n").encode("utf-8", "surrogateescape")


def parse_request(data):
    """(user, password) from the bytes of fd 3, or None when malformed."""
    parts = data.split(b"\0")
    if len(parts) < 3:
        return None
    user, password = (p.decode("utf-8", "surrogateescape") for p in parts[:2])
    return (user, password) if user else None


def parse_reply(line):
    """The stored password hash from doveauth's reply line; None for not found.

    Raises ValueError for a failure reply or a record without a password."""
    if line.startswith("N"):
        return None
    if not line.startswith("O"):
        raise ValueError("doveauth answered with a failure")
    value = line[1:]
    for escaped, char in (("\x01t", "\t"), ("\x01n", "\n"), ("\x01r", "\r"), ("\x010", "\0")):
        value = value.replace(escaped, char)
    value = value.replace("\x011", "\x01")
    try:
        stored = json.loads(value)["password"]
    except (ValueError, KeyError, TypeError):
        raise ValueError("doveauth answered with an unreadable record") from None
    return stored


def ask_doveauth(socket_path, user, password, timeout=TIMEOUT):
    """doveauth's reply line to the creation query (raises OSError / TimeoutError)."""
    deadline = time.monotonic() + timeout
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(socket_path)
        sock.sendall(creation_query(user, password))
        buf = b""
        while b"\n" not in buf:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("no answer in time")
            sock.settimeout(remaining)
            chunk = sock.recv(4096)
            if not chunk:
                raise ConnectionResetError("doveauth closed the connection")
            buf += chunk
            if len(buf) > MAX_REPLY:
                raise ValueError("reply too long")
    return buf.split(b"\n", 1)[0].decode("utf-8", "surrogateescape")


def check(socket_path, user, password, timeout=TIMEOUT):
    """(exit status, message for stderr or None)."""
    try:
        line = ask_doveauth(socket_path, user, password, timeout)
        stored = parse_reply(line)
    except TimeoutError:
        return EXIT_TEMPORARY, f"doveauth at {socket_path} did not answer within {timeout:g} s"
    except (OSError, ValueError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        return EXIT_TEMPORARY, f"cannot ask doveauth at {socket_path}: {reason}"
    if stored is None:
        return EXIT_FAILED, None
    from .hashing import verify_password  # only now: libcrypt's lookup costs a few ms

    if not verify_password(password, stored):
        return EXIT_FAILED, None
    return EXIT_OK, None


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        print("usage: checkpassword SOCKET [REPLY-PROGRAM]", file=sys.stderr)
        return 2
    socket_path = argv[0]
    if os.environ.get("AUTHORIZED"):
        # a lookup without a password (no PLAIN login): nothing to create or verify here
        return EXIT_FAILED
    try:
        data = os.read(3, MAX_REQUEST + 1)
    except OSError as e:
        print(f"doveauth checkpassword: cannot read fd 3: {e.strerror}", file=sys.stderr)
        return EXIT_TEMPORARY
    request = parse_request(data)
    if request is None:
        return EXIT_FAILED
    user, password = request
    timeout = float(os.environ.get("CHATMAILD_CHECKPASSWORD_TIMEOUT") or TIMEOUT)
    status, message = check(socket_path, user, password, timeout)
    if message is not None:
        print(f"doveauth checkpassword: {message}", file=sys.stderr)
    if status == EXIT_OK:
        try:
            os.write(4, f"user={user}\t".encode("utf-8", "surrogateescape"))
        except OSError as e:
            print(f"doveauth checkpassword: cannot write fd 4: {e.strerror}", file=sys.stderr)
            return EXIT_TEMPORARY
    return status


if __name__ == "__main__":
    sys.exit(main())
