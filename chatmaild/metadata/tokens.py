"""Device-token rules (pure): expiry, size bound, legacy entries.

The stored form is ``{"devicetoken": {"<token>": <unix seconds added>}}``. Legacy files held a
plain list; ``chatmaild.mailbox`` reads those as timestamp 0, which here means "added at an
unknown time": such tokens stay valid and get the current time on the next write.
"""

TOKEN_KEY = "devicetoken"
MAX_TOKEN_AGE = 90 * 86400
MAX_TOKEN_BYTES = 4096
LEGACY_TIMESTAMP = 0
# A token registered again within this many seconds of its stored date is not rewritten.
REREGISTER_REFRESH = 86400


def token_problem(token: str) -> str | None:
    """Why `token` cannot be stored, or None when it is acceptable."""
    if not token:
        return "empty token"
    size = len(token.encode("utf-8", "surrogatepass"))
    if size > MAX_TOKEN_BYTES:
        return f"token of {size} bytes exceeds {MAX_TOKEN_BYTES}"
    return None


def stored_tokens(metadata: dict) -> dict:
    """The token dict of a metadata document, tolerating odd shapes ({} when unusable)."""
    tokens = metadata.get(TOKEN_KEY) if isinstance(metadata, dict) else None
    if isinstance(tokens, dict):
        return tokens
    if isinstance(tokens, list):
        return {t: LEGACY_TIMESTAMP for t in tokens if isinstance(t, str)}
    return {}


def is_valid(timestamp, now: float) -> bool:
    if isinstance(timestamp, bool) or not isinstance(timestamp, int | float):
        return False
    if timestamp == LEGACY_TIMESTAMP:
        return True
    return now - MAX_TOKEN_AGE <= timestamp <= now


def valid_tokens(tokens: dict, now: float) -> list[str]:
    """Tokens not expired and not dated in the future, in insertion order."""
    return [t for t, ts in tokens.items() if isinstance(t, str) and is_valid(ts, now)]


def pruned(tokens: dict, now: float) -> dict:
    """The valid tokens, legacy ones stamped with `now` (the form written back to disk)."""
    stamp = int(now)
    return {
        t: (stamp if ts == LEGACY_TIMESTAMP else int(ts))
        for t, ts in tokens.items()
        if isinstance(t, str) and is_valid(ts, now)
    }


def is_recent_registration(tokens: dict, token: str, now: float) -> bool:
    """True when `token` is stored, valid and dated within the last REREGISTER_REFRESH seconds.

    Delta Chat sets its token again at every login. Storing the date only once a day (as
    lastlogin does for logins) spares a metadata.json rewrite per login; a token then expires
    at most one day earlier than it would with the exact date.
    """
    stamp = tokens.get(token)
    if stamp is None or stamp == LEGACY_TIMESTAMP or not is_valid(stamp, now):
        return False
    return now - stamp < REREGISTER_REFRESH
