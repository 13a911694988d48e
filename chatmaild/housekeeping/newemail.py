"""newemail: CGI that hands out a random new account.

Prints `Content-Type: application/json`, a blank line and
`{"email": ..., "password": ...}` (plus "dclogin_url" on relays with a self-signed
certificate). The account itself is created by doveauth on the first login.
Config: $CHATMAIL_INI, else /usr/local/lib/chatmaild/chatmail.ini.
"""

import json
import os
import sys

from .credentials import dclogin_url, new_credentials, uses_self_signed_cert

DEFAULT_INI = "/usr/local/lib/chatmaild/chatmail.ini"


def account_document(config, self_signed=None):
    """{"email", "password"} (+ "dclogin_url" when the relay's certificate is self-signed:
    `self_signed`, or by default the ini's rule, uses_self_signed_cert)."""
    creds = new_credentials(
        config.address_domain, config.username_max_length, config.password_min_length
    )
    if uses_self_signed_cert(config) if self_signed is None else self_signed:
        host = config.mail_domain if config.ipv4_relay else None
        creds["dclogin_url"] = dclogin_url(creds["email"], creds["password"], host)
    return creds


def main(argv=None):
    from chatmaild.config import load_config_or_exit

    config = load_config_or_exit(os.environ.get("CHATMAIL_INI") or DEFAULT_INI)
    body = json.dumps(account_document(config))
    sys.stdout.write(f"Content-Type: application/json\n\n{body}\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
