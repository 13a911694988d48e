"""TURN REST credentials (pure): what coturn's `use-auth-secret` accepts.

The username is the expiry time in unix seconds, the password the base64 of
HMAC-SHA1(secret, username). coturn recomputes the password from its copy of the secret and
refuses the username once its time has passed. Delta Chat splits the METADATA value
`host:port:username:password` on `:`, so the username is the bare timestamp (no `:user`).
"""

import base64
import hashlib
import hmac

VALIDITY = 5 * 24 * 3600  # seconds; Delta Chat refreshes when less than 12 h remain


def password(secret: str, username: str) -> str:
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


def credential_line(secret: str, now: float, validity: int = VALIDITY) -> bytes:
    """`<expiry>:<password>\\n`, the line upstream's chatmail-turn writes on its socket."""
    username = str(int(now) + validity)
    return f"{username}:{password(secret, username)}\n".encode("ascii")
