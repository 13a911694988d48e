"""Whether `/new` hands out an account, and which one. Pure: the caller reads the machine.

The address and password come from housekeeping.credentials (as the `newemail` CGI makes
them); the same rules doveauth applies at the first login decide whether they would be
accepted, so `/new` never hands out an address that doveauth would then refuse.
"""

from typing import NamedTuple

from ..doveauth import rules
from ..housekeeping.newemail import account_document

# An address already taken is drawn again; 36**9 local parts make a second clash unheard of.
MAX_DRAWS = 5


class Refusal(NamedTuple):
    status: int  # HTTP status of the refusal
    reason: str  # shown to the user by Delta Chat ({"reason": ...})


NOCREATE = Refusal(403, "account creation is closed on this relay")


def refusal(config, nocreate_exists: bool, resources: rules.Resources) -> Refusal | None:
    """Why no account may be created now, or None: the `nocreate_file` switch, then load."""
    if nocreate_exists:
        return NOCREATE
    problem = rules.resource_problem(resources, config)
    if problem is not None:
        return Refusal(503, "the relay is too busy to create accounts, try again later")
    return None


def new_account(config, taken, draw=account_document):
    """(document, None) with {"email", "password", ...}, or (None, Refusal).

    `taken(addr)` says whether a mailbox exists for the address already; `draw(config)`
    makes random credentials (injected for tests).
    """
    for _ in range(MAX_DRAWS):
        doc = draw(config)
        problem = rules.creation_problem(doc["email"], doc["password"], config)
        if problem is not None:
            # a configuration doveauth would refuse (e.g. username lengths): never hand it out
            return None, Refusal(500, f"relay misconfigured: {problem}")
        if not taken(doc["email"]):
            return doc, None
    return None, Refusal(503, "no free address found, try again")
