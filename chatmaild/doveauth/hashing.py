"""SHA512-CRYPT password hashes in the form Dovecot verifies (`{SHA512-CRYPT}$6$salt$hash`).

The system's libcrypt is called through ctypes, which releases the interpreter lock for the
duration of the call: hashing in a thread pool then uses every core. (The stdlib `crypt`
module holds the lock while hashing, and is gone in Python 3.13; it is only the fallback.)
"""

import base64
import ctypes
import ctypes.util
import secrets
import threading
import warnings

SCHEME = "{SHA512-CRYPT}"
SALT_ALPHABET = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
SALT_LENGTH = 16
CRYPT_DATA_SIZE = 32768  # sizeof(struct crypt_data) in libxcrypt; glibc's is smaller


def _load_crypt_r():
    name = ctypes.util.find_library("crypt")
    if name is None:
        return None
    try:
        func = ctypes.CDLL(name, use_errno=True).crypt_r
    except (OSError, AttributeError):
        return None
    func.restype = ctypes.c_char_p
    func.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_void_p]
    return func


_crypt_r = _load_crypt_r()
_local = threading.local()


def _crypt_with_libcrypt(phrase: bytes, setting: bytes) -> str | None:
    buf = getattr(_local, "buf", None)
    if buf is None:
        buf = _local.buf = ctypes.create_string_buffer(CRYPT_DATA_SIZE)
    result = _crypt_r(phrase, setting, buf)
    if not result or result.startswith(b"*"):
        return None
    return result.decode("ascii")


def _crypt_with_stdlib(phrase: bytes, setting: bytes) -> str | None:  # pragma: no cover
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt
    result = crypt.crypt(phrase.decode("utf-8", "surrogateescape"), setting.decode())
    if not result or result.startswith("*"):
        return None
    return result


crypt_raw = _crypt_with_libcrypt if _crypt_r is not None else _crypt_with_stdlib
RELEASES_GIL = _crypt_r is not None


# base64's alphabet mapped onto crypt's: 12 random bytes give 16 uniform salt characters
# from one getrandom() call (secrets.choice per character made 16).
_B64_TO_SALT = bytes.maketrans(
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/", SALT_ALPHABET.encode()
)


def make_salt() -> str:
    raw = base64.b64encode(secrets.token_bytes(SALT_LENGTH * 3 // 4))
    return raw.translate(_B64_TO_SALT).decode("ascii")


def _phrase(password: str) -> bytes:
    phrase = password.encode("utf-8", "surrogateescape")
    if b"\0" in phrase:
        raise ValueError("password contains NUL")
    return phrase


def sha512_crypt(password: str, salt: str) -> str:
    """`$6$<salt>$<hash>` of `password` (the bytes Dovecot received: UTF-8 or raw)."""
    result = crypt_raw(_phrase(password), f"$6${salt}".encode("ascii"))
    if result is None:
        raise ValueError("crypt failed")
    return result


def hash_password(password: str) -> str:
    """The Dovecot password field for `password`: `{SHA512-CRYPT}$6$...`. CPU-heavy."""
    return SCHEME + sha512_crypt(password, make_salt())


def verify_password(password: str, stored: str) -> bool:
    """True if `password` matches a stored `{SHA512-CRYPT}` hash (for tests and tools)."""
    if not stored.startswith(SCHEME):
        return False
    setting = stored[len(SCHEME) :]
    try:
        result = crypt_raw(_phrase(password), setting.encode("ascii"))
    except (ValueError, UnicodeEncodeError):
        return False
    return result is not None and secrets.compare_digest(result, setting)
