"""The outgoing and incoming filter decisions of SPEC 4.3 and 4.4, as pure functions.

No I/O, no clock: the server hands in the envelope, the message bytes, the config, and (for
incoming mail) a callable telling whether a recipient enforces end-to-end encryption.
Every decision returns (verdict, log line): verdict None means accept, otherwise the SMTP
reply to give. The log line is the one line to log for the decision (SPEC 4.6); it names
addresses and the reason, never the body.
"""

from collections.abc import Callable
from dataclasses import dataclass, field

from .checks import (
    is_autocrypt_setup_message,
    is_encrypted,
    is_mailer_daemon_report,
    is_securejoin,
)
from .dkimcheck import EXEMPT, FAIL, MAX_REASON, TEMPORARY, DkimResult
from .mime import extract_address, parse_entity
from .ratelimit import RateLimiter


@dataclass(slots=True)
class Envelope:
    mail_from: str
    rcpt_tos: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Verdict:
    """An SMTP reply: `code` and the `text` after it."""

    code: int
    text: str

    def line(self) -> str:
        return f"{self.code} {self.text}"


ENCRYPTION_NEEDED = Verdict(523, "Encryption Needed: Invalid Unencrypted Mail")
DKIM_FAILED = Verdict(550, "5.7.1 No valid DKIM signature found")
DKIM_TEMPORARY_TEXT = "4.7.1 Cannot verify the DKIM signature now, try again later"
# the sender address in a DKIM log line is cut to this many characters
DKIM_LOG_SENDER = 80

OUT_ENCRYPTED = "Outgoing: Filtering encrypted mail."
OUT_UNENCRYPTED = "Outgoing: Filtering unencrypted mail."
IN_ENCRYPTED = "Incoming: Filtering encrypted mail."
IN_UNENCRYPTED = "Incoming: Filtering unencrypted mail."
REJECTED = "Rejected unencrypted mail."


def _printable(text: str | None) -> str:
    """Make a client-supplied string safe for one reply or log line."""
    if text is None:
        return ""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else "?" for c in text)


def check_mail_from(mail_from: str) -> Verdict | None:
    """SPEC 4.3 step 1: the envelope sender is one address with exactly one `@`."""
    if mail_from.count("@") != 1:
        return Verdict(500, f"Invalid from address <{_printable(mail_from)}>")
    return None


def check_rate(limiter: RateLimiter, sender: str) -> Verdict | None:
    """SPEC 4.3 step 2: the per-sender GCRA limit, keyed by the lower-cased sender."""
    if limiter.allow(sender.lower()):
        return None
    return Verdict(450, f"4.7.1: Too much mail from {_printable(sender)}")


def recipient_matches_passthrough(recipient: str, passthrough_recipients) -> bool:
    """An exact address, or an `@domain` entry equal to the recipient's domain."""
    recipient = recipient.lower()
    domain = "@" + recipient.rpartition("@")[2]
    for entry in passthrough_recipients:
        entry = entry.lower()
        if entry == recipient or (entry.startswith("@") and entry == domain):
            return True
    return False


def is_admin_contact(recipient: str, admin_contact: str) -> bool:
    """The relay's admin contact (`admin_contact`, /shared/admin) takes cleartext mail from
    its users: whoever writes to it has no key of the operator's."""
    return recipient.lower() == admin_contact.lower()


def sender_is_passthrough(sender: str, passthrough_senders) -> bool:
    sender = sender.lower()
    return any(entry.lower() == sender for entry in passthrough_senders)


def check_outgoing(env: Envelope, message: bytes, config) -> tuple[Verdict | None, str]:
    """SPEC 4.3 steps 3 to 8, at the end of DATA on the outgoing filter."""
    entity = parse_entity(message)
    sender = env.mail_from
    from_addr = extract_address(entity.headers.get("from"))
    if entity.headers.is_repeated("from"):
        from_addr = None  # two From fields: which one would the recipient see?
    if from_addr is None or from_addr.lower() != sender.lower():
        verdict = Verdict(500, f"Invalid FROM <{_printable(from_addr)}> for <{_printable(sender)}>")
        return verdict, f"Outgoing: Rejected mail: {verdict.line()}"

    if is_encrypted(entity, allow_armor_header=False):
        return None, OUT_ENCRYPTED
    if is_securejoin(entity):
        return None, f"{OUT_ENCRYPTED} (secure-join request)"

    if sender_is_passthrough(sender, config.passthrough_senders):
        return None, f"{OUT_UNENCRYPTED} Accepted: passthrough sender {_printable(sender)}"
    if is_autocrypt_setup_message(entity, sender, env.rcpt_tos):
        return None, f"{OUT_UNENCRYPTED} Accepted: Autocrypt Setup Message"
    for recipient in env.rcpt_tos:
        if is_admin_contact(recipient, config.admin_contact):
            continue
        if not recipient_matches_passthrough(recipient, config.passthrough_recipients):
            return ENCRYPTION_NEEDED, (
                f"{OUT_UNENCRYPTED} {REJECTED} from <{_printable(sender)}>: "
                f"recipient <{_printable(recipient)}> is not a passthrough recipient"
            )
    if not env.rcpt_tos:
        # Unreachable behind Postfix (DATA needs a recipient); fail closed anyway.
        return (
            ENCRYPTION_NEEDED,
            f"{OUT_UNENCRYPTED} {REJECTED} from <{_printable(sender)}>: no recipients",
        )
    return None, f"{OUT_UNENCRYPTED} Accepted: passthrough recipients"


def check_incoming(
    env: Envelope, message: bytes, config, enforces_e2ee: Callable[[str], bool]
) -> tuple[Verdict | None, str]:
    """SPEC 4.4, at the end of DATA on the incoming filter.

    `enforces_e2ee(recipient)` tells whether that recipient's mailbox has the
    enforceE2EEincoming marker; it must answer False (not raise) for addresses that are
    not local mailboxes.
    """
    entity = parse_entity(message)
    if is_encrypted(entity, allow_armor_header=True):
        return None, IN_ENCRYPTED
    if is_securejoin(entity):
        return None, f"{IN_ENCRYPTED} (secure-join request)"

    if is_mailer_daemon_report(entity):
        return None, f"{IN_UNENCRYPTED} Accepted: mailer-daemon report"
    for recipient in env.rcpt_tos:
        if enforces_e2ee(recipient):
            return ENCRYPTION_NEEDED, (
                f"{IN_UNENCRYPTED} {REJECTED} from <{_printable(env.mail_from)}>: "
                f"recipient <{_printable(recipient)}> enforces end-to-end encryption"
            )
    return None, f"{IN_UNENCRYPTED} Accepted: no recipient enforces encryption"


def check_dkim(result: DkimResult, env: Envelope, line: str) -> tuple[Verdict | None, str]:
    """Issue 12: the DKIM result of mail the incoming policy accepted with log `line`.

    A failure is 550, a key that could not be fetched 451 (never an accept); either way one
    log line: the policy's line, then the DKIM reason. A pass keeps the policy's line. The
    sender and the reason are cut to `DKIM_LOG_SENDER` and `MAX_REASON` characters, so the
    line stays short whatever the message carried (issue 19).
    """
    if result.outcome not in (FAIL, TEMPORARY, EXEMPT):
        return None, line
    sender = _clip(_printable(env.mail_from), DKIM_LOG_SENDER)
    reason = _clip(_printable(result.reason), MAX_REASON)
    line += " " if line.endswith(".") else ". "
    if result.outcome == FAIL:
        return DKIM_FAILED, f"{line}DKIM failed for mail from <{sender}>: {reason}"
    if result.outcome == TEMPORARY:
        verdict = Verdict(451, f"{DKIM_TEMPORARY_TEXT} ({reason[:200]})")
        return verdict, f"{line}DKIM temporary failure for mail from <{sender}>: {reason}"
    return None, f"{line}DKIM exempt: {reason}"


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."
