"""Fault injection against a running relay: signals to our daemons, traffic that retries
like a client, and counts of what arrived (tests/e2e/test_relay_faults.py)."""

import contextlib
import imaplib
import os
import signal
import smtplib
import ssl
import time

from chatmaild.relay.processes import pid_alive

from .helpers import maildir_messages, wait_until

RETRY_PAUSE = 0.3
SEND_DEADLINE = 90.0


def daemon_pid(relay, name):
    """The pid of daemon `name` (the supervisor's child), waiting for it to be up."""
    return wait_until(
        lambda: (pid := relay.relay.daemon_pid(name)) and pid_alive(pid) and pid,
        f"{name} running",
        timeout=30,
    )


def kill_and_wait_restart(relay, name, sig=signal.SIGKILL):
    """Send `sig` to daemon `name`; return (old pid, new pid, seconds until it was ready)."""
    old = daemon_pid(relay, name)
    started = time.monotonic()
    os.kill(old, sig)
    new = wait_until(
        lambda: (pid := relay.relay.daemon_pid(name)) not in (None, old) and pid_alive(pid) and pid,
        f"{name} restarted",
        timeout=30,
        interval=0.05,
    )
    relay.relay.wait_ready(only=name)
    return old, new, time.monotonic() - started


@contextlib.contextmanager
def stopped(pid):
    """The process `pid` is stopped (SIGSTOP) for the block: hung, not dead."""
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def _temporary(exc):
    """Whether a client would retry after `exc` (a 4xx, or the connection broke).

    A login that fails while doveauth is down is one too: Dovecot reports a temporary
    failure (IMAP `[UNAVAILABLE]`), which Postfix's SASL client words as 535."""
    if isinstance(exc, smtplib.SMTPAuthenticationError):
        return True
    if isinstance(exc, imaplib.IMAP4.error):
        return "UNAVAILABLE" in str(exc) or isinstance(exc, imaplib.IMAP4.abort)
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        return all(400 <= code < 500 for code, _ in exc.recipients.values())
    if isinstance(exc, smtplib.SMTPResponseException):
        return 400 <= exc.smtp_code < 500
    return isinstance(exc, (OSError, smtplib.SMTPException, ssl.SSLError))


def send_retrying(send):
    """Call `send()` until it succeeds, retrying temporary failures as a client does;
    returns the number of attempts."""
    deadline = time.monotonic() + SEND_DEADLINE
    attempts = 0
    while True:
        attempts += 1
        try:
            send()
            return attempts
        except Exception as exc:
            if not _temporary(exc) or time.monotonic() > deadline:
                raise
        time.sleep(RETRY_PAUSE)


def copies(relay, addr, markers):
    """{marker: number of copies in the INBOX of addr}."""
    counts = dict.fromkeys(markers, 0)
    for message in maildir_messages(relay.user_dir(addr)):
        for line in message.split(b"\n", 40)[:40]:
            if line.lower().startswith(b"x-test-marker:"):
                marker = line.split(b":", 1)[1].strip().decode()
                if marker in counts:
                    counts[marker] += 1
                break
    return counts


def files_containing(root, needles):
    """{path: [needles found]} for every regular file under root holding one of `needles`."""
    found = {}
    encoded = [(n, n.encode()) for n in needles]
    for dirpath, _, filenames in os.walk(root):
        for filename in filenames:
            path = os.path.join(dirpath, filename)
            try:
                if not os.path.isfile(path) or os.path.islink(path):
                    continue
                with open(path, "rb") as f:
                    data = f.read()
            except OSError:
                continue
            hits = [n for n, b in encoded if b in data]
            if hits:
                found[path] = hits
    return found
