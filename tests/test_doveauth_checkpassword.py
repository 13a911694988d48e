"""The checkpassword program (the creation path of a first login) against a real doveauth.

Dovecot runs it with the user and password on fd 3 and reads the reply fields from fd 4; the
tests run it the same way, as a subprocess, against doveauth's unix socket (and against a
socket that is gone or never answers, as when doveauth is dead or hung)."""

import os
import socket
import subprocess
import sys
import time

import pytest
from test_doveauth_service import DOMAIN, Harness, config, userdb_line  # noqa: F401

from chatmaild.doveauth import checkpassword, hashing

from conftest import daemon_env

PASSWORD = "s3cret\"pass'\\with\tall"


def run_checkpassword(sock_path, user, password, env_extra=None, timeout=30):
    """(exit status, fd 4 output, stderr) of one checkpassword run as Dovecot does it."""
    in_r, in_w = os.pipe()
    out_r, out_w = os.pipe()
    os.write(in_w, user.encode() + b"\0" + password.encode() + b"\0\0")
    os.close(in_w)
    env = dict(daemon_env(), **(env_extra or {}))
    proc = subprocess.Popen(
        [sys.executable, "-m", "chatmaild.doveauth.checkpassword", str(sock_path), "/bin/true"],
        close_fds=False,
        preexec_fn=lambda: (os.dup2(in_r, 3), os.dup2(out_w, 4)),
        env=env,
        stderr=subprocess.PIPE,
    )
    os.close(in_r)
    os.close(out_w)
    _, err = proc.communicate(timeout=timeout)
    reply = os.read(out_r, 4096)
    os.close(out_r)
    return proc.returncode, reply.decode(), err.decode()


@pytest.fixture
async def doveauth_socket(config, tmp_path):  # noqa: F811
    from dictproxy_helpers import dict_served

    harness = Harness(config, tmp_path / "doveauth.socket")
    async with dict_served(harness.path, harness.service):
        yield harness
    harness.service.close()


async def _run(*args, **kwargs):
    import asyncio

    return await asyncio.get_running_loop().run_in_executor(
        None, lambda: run_checkpassword(*args, **kwargs)
    )


async def test_first_login_creates_then_verifies(doveauth_socket):
    addr = "abcdefghi@" + DOMAIN
    status, reply, err = await _run(doveauth_socket.path, addr, PASSWORD)
    assert (status, reply, err) == (0, f"user={addr}\t", "")
    stored = doveauth_socket.stored(addr)
    assert hashing.verify_password(PASSWORD, stored)
    # the same password again: the existing account, not a second creation
    assert (await _run(doveauth_socket.path, addr, PASSWORD))[0] == 0
    assert doveauth_socket.stored(addr) == stored
    # a wrong password: refused (status 1), the account unchanged, nothing on stderr
    assert await _run(doveauth_socket.path, addr, "wrong-password-1") == (1, "", "")
    assert doveauth_socket.stored(addr) == stored


async def test_refused_creation_fails_without_account(doveauth_socket):
    addr = "ab@" + DOMAIN  # local part too short
    assert await _run(doveauth_socket.path, addr, PASSWORD) == (1, "", "")
    assert doveauth_socket.stored(addr) is None


async def test_user_only_key_finds_existing_and_never_creates(doveauth_socket):
    addr = "userkey01@" + DOMAIN
    key_line = f"Lshared/passdb/{addr}\t{addr}\n".encode()
    assert await doveauth_socket.ask(key_line) == ["N"]
    assert doveauth_socket.stored(addr) is None
    assert (await _run(doveauth_socket.path, addr, PASSWORD))[0] == 0
    (reply,) = await doveauth_socket.ask(key_line)
    assert reply.startswith("O") and doveauth_socket.stored(addr) in reply
    assert await doveauth_socket.ask(userdb_line(addr)) == [reply]


def test_doveauth_dead_is_a_temporary_failure_without_password(tmp_path):
    gone = tmp_path / "gone.socket"
    status, reply, err = run_checkpassword(gone, "abcdefghi@" + DOMAIN, PASSWORD)
    assert (status, reply) == (111, "")
    assert str(gone) in err and "s3cret" not in err


def test_doveauth_hung_is_a_temporary_failure_after_the_timeout(tmp_path, monkeypatch):
    path = tmp_path / "hung.socket"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(str(path))
        listener.listen(5)  # accepts into the backlog, never answers
        started = time.monotonic()
        status, reply, err = run_checkpassword(
            path,
            "abcdefghi@" + DOMAIN,
            PASSWORD,
            env_extra={"CHATMAILD_CHECKPASSWORD_TIMEOUT": "1"},
        )
    assert (status, reply) == (111, "")
    assert time.monotonic() - started < 10
    assert "did not answer" in err and "s3cret" not in err


def test_lookup_without_password_is_refused(tmp_path):
    status, _, _ = run_checkpassword(tmp_path / "x", "a@b", "", env_extra={"AUTHORIZED": "1"})
    assert status == 1


@pytest.mark.parametrize(
    "data, expected",
    [
        (b"u@x\0pw\0\0", ("u@x", "pw")),
        (b"u@x\0\0\0", ("u@x", "")),
        (b"u@x\0pw", None),
        (b"\0pw\0\0", None),
    ],
)
def test_parse_request(data, expected):
    assert checkpassword.parse_request(data) == expected


def test_creation_query_escapes_like_dovecot():
    query = checkpassword.creation_query("a@x", 'p"w\t\\')
    assert query == b'H3\t2\t0\t\tauth\nLshared/passdb/p\\"w\x01t\\\\"a@x\t\n'
