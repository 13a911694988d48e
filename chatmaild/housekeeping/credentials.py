"""Random credentials for a new account and the dclogin: URL (pure apart from `secrets`).

The local part is username_max_length characters of [a-z0-9]; the password uses letters
and digits only (no quoting trouble in IMAP, URLs or the dict protocol) and is longer than
password_min_length: max(password_min_length + 3, 20) characters, i.e. at least 119 bits.
"""

import secrets
import string
from urllib.parse import quote

LOCAL_ALPHABET = string.ascii_lowercase + string.digits
PASSWORD_ALPHABET = string.ascii_letters + string.digits
MIN_PASSWORD_CHARS = 20


def random_local_part(length):
    return "".join(secrets.choice(LOCAL_ALPHABET) for _ in range(length))


def random_password(min_length):
    length = max(min_length + 3, MIN_PASSWORD_CHARS)
    return "".join(secrets.choice(PASSWORD_ALPHABET) for _ in range(length))


def new_credentials(address_domain, username_length, password_min_length):
    email = f"{random_local_part(username_length)}@{address_domain}"
    return {"email": email, "password": random_password(password_min_length)}


def dclogin_url(email, password, host=None):
    """dclogin: URL that tells Delta Chat to accept the relay's self-signed certificate
    for IMAP and SMTP (ic=3, sc=3). `host`: the IMAP and SMTP server when the address's
    domain names none (an IP-only relay's `x@[1.2.3.4]`: ih=, sh= 1.2.3.4)."""
    url = f"dclogin:{quote(email, safe='@')}?p={quote(password, safe='')}&v=1"
    if host:
        url += f"&ih={quote(host, safe='')}&sh={quote(host, safe='')}"
    return url + "&ic=3&sc=3"


def uses_self_signed_cert(config):
    """An IP-only relay has no CA-signed certificate; `tls_cert = self` says so explicitly."""
    return bool(config.ipv4_relay) or config.tls_cert == "self"
