"""doveauth's pure parts: passdb key splitting, creation rules, resource limits, hashing."""

import pytest

from chatmaild.config import read_config
from chatmaild.doveauth import hashing, rules
from chatmaild.doveauth.rules import Resources

from conftest import write_ini


@pytest.fixture
def config(tmp_path):
    return read_config(
        write_ini(
            tmp_path / "chatmail.ini",
            mailboxes_dir=tmp_path / "mailboxes",
            max_load_1m=2,
            min_available_memory="100M",
            min_free_disk_space="1G",
        )
    )


@pytest.mark.parametrize(
    "rest, password, user",
    [
        ('secret123"alice@x', "secret123", "alice@x"),
        ('s3cr\\"et"alice@x', 's3cr"et', "alice@x"),
        ("a\\'b\\\\c\"alice@x", "a'b\\c", "alice@x"),
        ('with/slash/"alice@x', "with/slash/", "alice@x"),
        ('tab\there"alice@x', "tab\there", "alice@x"),
        ('pässwörd✓"alice@x', "pässwörd✓", "alice@x"),
        ('\\\\"alice@x', "\\", "alice@x"),
        ('"alice@x', "", "alice@x"),
        ('pw"we\\"ird@x', "pw", 'we"ird@x'),
    ],
)
def test_split_passdb_key(rest, password, user):
    assert rules.split_passdb_key(rest) == (password, user)


@pytest.mark.parametrize("rest", ["nouser", 'escaped\\"only', "", "trailing\\"])
def test_split_passdb_key_without_separator(rest):
    assert rules.split_passdb_key(rest) is None


GOOD_PW = "longenough"


@pytest.mark.parametrize(
    "addr, password, problem",
    [
        ("abcdefghi@chat.example", GOOD_PW, None),
        ("abc.e_f-9@chat.example", GOOD_PW, None),
        ("abcdefghi@chat.example", "short", "password shorter than 9 characters"),
        ("abcdefgh@chat.example", GOOD_PW, "local part length 8 not within 9..9"),
        ("abcdefghij@chat.example", GOOD_PW, "local part length 10 not within 9..9"),
        ("abcdEfghi@chat.example", GOOD_PW, "local part has characters outside [a-z0-9._-]"),
        ("abcd+fghi@chat.example", GOOD_PW, "local part has characters outside [a-z0-9._-]"),
        ("abcdéfghi@chat.example", GOOD_PW, "local part has characters outside [a-z0-9._-]"),
        ("abcdefghi@other.example", GOOD_PW, "domain is not the mail domain"),
        ("abcdefghi", GOOD_PW, "not an address"),
    ],
)
def test_creation_problem(config, addr, password, problem):
    assert rules.creation_problem(addr, password, config) == problem


G = 1024**3
M = 1024**2


@pytest.mark.parametrize(
    "resources, problem_start",
    [
        (Resources(0.5, 500 * M, 5 * G), None),
        (Resources(2.0, 100 * M, 1 * G), None),  # limits themselves are fine
        (Resources(2.01, 500 * M, 5 * G), "load average 2.01 above max_load_1m"),
        (Resources(0.5, 99 * M, 5 * G), "available memory"),
        (Resources(0.5, 500 * M, G - 1), "free disk space"),
        (Resources(None, 500 * M, 5 * G), "load average unknown"),
        (Resources(0.5, None, 5 * G), "available memory unknown"),
        (Resources(0.5, 500 * M, None), "free disk space unknown"),
    ],
)
def test_resource_problem(config, resources, problem_start):
    problem = rules.resource_problem(resources, config)
    if problem_start is None:
        assert problem is None
    else:
        assert problem.startswith(problem_start)


@pytest.mark.parametrize("password", ["simple123", "q\"'\\/\tx", "pässwörd✓", "\udcff raw"])
def test_hash_is_dovecot_sha512_crypt(password):
    stored = hashing.hash_password(password)
    assert stored.startswith("{SHA512-CRYPT}$6$")
    assert hashing.verify_password(password, stored)
    assert not hashing.verify_password(password + "x", stored)
    assert hashing.hash_password(password) != stored  # fresh salt each time


def test_hash_matches_known_vector():
    # from the SHA-crypt specification's test vectors (rounds=5000 default)
    assert hashing.sha512_crypt("Hello world!", "saltstring") == (
        "$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJu"
        "esI68u4OTLiBFdcbYEdFCoEOfaS35inz1"
    )


def test_hash_refuses_nul():
    with pytest.raises(ValueError):
        hashing.hash_password("a\0b")


def test_libcrypt_releases_the_gil():
    assert hashing.RELEASES_GIL, "libcrypt not found: hashing would hold the interpreter lock"
