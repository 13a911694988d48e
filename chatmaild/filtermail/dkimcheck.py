"""DKIM verification of incoming mail, as pure functions over the raw message bytes.

The rule (upstream filtermail, federation notes): a message passes when at least one
DKIM-Signature whose `d=` equals the `From:` header domain (strict alignment, case-insensitive,
like DMARC `adkim=s`) verifies. `From: x@[1.2.3.4]` (an IP-only relay) is exempt. DMARC, SPF
and iprev are not consulted.

Two steps around the DNS lookups, which the caller does:
1. `screen(message)` finds the From domain and the aligned signatures and answers the key
   names to fetch, or decides at once (exempt, or refused without any DNS query).
2. `verify(message, screening, keys)` verifies the aligned signatures with the fetched TXT
   records. dkimpy parses and canonicalizes; its DNS callback is fed from `keys`.

Outcomes: PASS, EXEMPT, FAIL(reason) (550) and TEMPORARY(reason) (451: a key could not be
fetched and no other aligned signature passed). No I/O here.
"""

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass

import dkim
from dkim.util import InvalidTagValueList, parse_tag_value

from .mime import extract_address, split_header_block

PASS = "pass"
EXEMPT = "exempt"
FAIL = "fail"
TEMPORARY = "temporary"

# RFC 8301: rsa-sha1 signatures must not be considered valid; ed25519-sha256 needs PyNaCl
# in dkimpy, which this suite does not install.
ACCEPTED_ALGORITHMS = (b"rsa-sha256",)
# A DNS name of LDH labels (underscores allowed, as in selectors), at most 253 octets.
_DNS_NAME_RE = re.compile(
    r"(?=.{1,253}$)(?:[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?\.)*"
    r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?"
)

# dkimpy logs errors of its own; our decision is one line logged by the caller.
_QUIET = logging.getLogger("chatmaild.filtermail.dkimpy")
_QUIET.disabled = True


@dataclass(frozen=True, slots=True)
class DkimResult:
    outcome: str  # PASS, EXEMPT, FAIL or TEMPORARY
    reason: str = ""


# -- what the caller fetches ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KeyFound:
    """The TXT record(s) at a key name, each one's strings joined."""

    records: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class KeyMissing:
    """The name does not exist or has no TXT record: a permanent failure."""

    reason: str


@dataclass(frozen=True, slots=True)
class KeyTemporary:
    """Timeout, SERVFAIL, refused...: the answer is unknown for now."""

    reason: str


KeyLookup = KeyFound | KeyMissing | KeyTemporary


@dataclass(frozen=True, slots=True)
class Signature:
    """One DKIM-Signature field, as far as needed before the DNS lookup."""

    index: int  # position among the DKIM-Signature fields (dkimpy's `idx`)
    domain: str  # d=, lower-case A-labels
    selector: str  # s=, lower-case

    @property
    def key_name(self) -> str:
        return f"{self.selector}._domainkey.{self.domain}"


@dataclass(frozen=True, slots=True)
class Screening:
    """The outcome of `screen`: decided (`result`), or the aligned signatures to verify."""

    from_domain: str
    result: DkimResult | None = None
    signatures: tuple[Signature, ...] = ()
    # why the signatures that are not aligned (or not usable) were set aside, for the log
    skipped: tuple[str, ...] = ()

    @property
    def key_names(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(sig.key_name for sig in self.signatures))


def _fail(reason: str, from_domain: str = "") -> Screening:
    return Screening(from_domain, DkimResult(FAIL, reason))


# -- step 1: screening, no DNS -------------------------------------------------------------------


def normalize_domain(domain: str) -> str | None:
    """Lower-case A-label form without a trailing dot; None if not a valid DNS name."""
    domain = domain.strip().rstrip(".").lower()
    if not domain.isascii():
        try:
            domain = domain.encode("idna").decode("ascii")
        except UnicodeError:
            return None
    return domain if _DNS_NAME_RE.fullmatch(domain) else None


def is_ip_literal(domain: str) -> bool:
    return domain.startswith("[") and domain.endswith("]")


def header_fields(message: bytes) -> list[tuple[bytes, bytes]] | None:
    """The header fields of the message as dkimpy parses them; None if it refuses them."""
    block, _ = split_header_block(message)
    try:
        headers, _ = dkim.rfc822_parse(block)
    except dkim.MessageFormatError:
        return None
    return [(name, value) for name, value in headers]


def _unfold(value: bytes) -> str:
    return re.sub(rb"\r?\n", b"", value).decode("utf-8", "surrogateescape").strip()


def from_domain(headers: list[tuple[bytes, bytes]]) -> tuple[str | None, str]:
    """(the From address's domain as written, "") or (None, why not)."""
    values = [value for name, value in headers if name.lower() == b"from"]
    if not values:
        return None, "no From header"
    if len(values) > 1:
        return None, "several From headers"
    address = extract_address(_unfold(values[0]))
    if address is None:
        return None, "no single address in the From header"
    return address.rpartition("@")[2], ""


def parse_signature(index: int, value: bytes) -> tuple[Signature | None, str]:
    """(the signature, "") or (None, why it cannot be used)."""
    try:
        tags = parse_tag_value(re.sub(rb"\r?\n", b"", value))
    except InvalidTagValueList:
        return None, f"signature {index}: malformed tag list"
    try:
        dkim.validate_signature_fields(tags)
    except dkim.ValidationError as e:
        return None, f"signature {index}: {_short(e)}"
    if tags[b"a"] not in ACCEPTED_ALGORITHMS:
        algorithm = tags[b"a"].decode("ascii", "replace")
        return None, f"signature {index}: algorithm {algorithm} not accepted"
    if b"l" in tags:
        return None, f"signature {index}: l= (partial body) not accepted"
    domain = normalize_domain(tags[b"d"].decode("utf-8", "replace"))
    selector = normalize_domain(tags[b"s"].decode("utf-8", "replace"))
    if domain is None or selector is None:
        return None, f"signature {index}: d= or s= is not a DNS name"
    return Signature(index, domain, selector), ""


def screen(message: bytes) -> Screening:
    """Find the From domain and the aligned, usable signatures (no DNS)."""
    headers = header_fields(message)
    if headers is None:
        return _fail("malformed header section")
    domain, why = from_domain(headers)
    if domain is None:
        return _fail(why)
    if is_ip_literal(domain):
        return Screening(domain, DkimResult(EXEMPT, f"IP literal {domain}"))
    normalized = normalize_domain(domain)
    if normalized is None:
        return _fail(f"From domain {domain} is not a DNS name", domain)
    values = [value for name, value in headers if name.lower() == b"dkim-signature"]
    if not values:
        return _fail("no signature", normalized)
    aligned = []
    skipped = []
    for index, value in enumerate(values):
        sig, why = parse_signature(index, value)
        if sig is None:
            skipped.append(why)
        elif sig.domain != normalized:
            skipped.append(f"d={sig.domain} does not match From domain {normalized}")
        else:
            aligned.append(sig)
    if not aligned:
        return _fail("; ".join(skipped), normalized)
    return Screening(normalized, signatures=tuple(aligned), skipped=tuple(skipped))


# -- step 2: verification with the fetched keys --------------------------------------------------


def select_key_record(records: tuple[bytes, ...]) -> bytes | None:
    """The DKIM key record among the TXT records of a key name (RFC 6376 3.6.2.2 leaves
    several records undefined): the one starting with `v=DKIM1`, else the only one."""
    tagged = [r for r in records if r.lstrip().startswith(b"v=DKIM1")]
    if len(tagged) == 1:
        return tagged[0]
    if not tagged and len(records) == 1:
        return records[0]
    return None


def key_problem(record: bytes) -> str | None:
    """Why a key record cannot verify anything, or None if dkimpy can use it."""
    try:
        tags = parse_tag_value(record)
    except InvalidTagValueList:
        return "malformed key record"
    if tags.get(b"p", b"x") == b"":
        return "key revoked (empty p=)"
    try:
        dkim.evaluate_pk(b"", record)
    except dkim.DKIMException as e:
        return _short(e)
    except ValueError:  # binascii.Error: p= is not base64
        return "key p= is not base64"
    return None


def verify_signature(signer: dkim.DKIM, sig: Signature, record: bytes) -> str | None:
    """None when `sig` verifies with `record`, else the reason."""
    problem = key_problem(record)
    if problem is not None:
        return problem
    try:
        ok = signer.verify(idx=sig.index, dnsfunc=lambda name, timeout=5: record)
    except dkim.DKIMException as e:
        return _short(e)
    return None if ok else "signature did not verify"


def verify(message: bytes, screening: Screening, keys: Mapping[str, KeyLookup]) -> DkimResult:
    """Verify the aligned signatures of `screening` with the fetched keys."""
    if screening.result is not None:
        return screening.result
    signer = dkim.DKIM(message, logger=_QUIET)
    failures = []
    temporary = []
    for sig in screening.signatures:
        key = keys.get(sig.key_name)
        if isinstance(key, KeyTemporary) or key is None:
            temporary.append(key.reason if key else f"no answer for {sig.key_name}")
            continue
        if isinstance(key, KeyMissing):
            failures.append(f"{sig.key_name}: {key.reason}")
            continue
        record = select_key_record(key.records)
        if record is None:
            failures.append(f"{sig.key_name}: no single DKIM key record")
            continue
        why = verify_signature(signer, sig, record)
        if why is None:
            return DkimResult(PASS, f"d={sig.domain} s={sig.selector}")
        failures.append(f"d={sig.domain} s={sig.selector}: {why}")
    if temporary:
        return DkimResult(TEMPORARY, "; ".join(temporary))
    return DkimResult(FAIL, "; ".join(failures + list(screening.skipped)))


def _short(error: Exception) -> str:
    """dkimpy's message without the hashes it appends in parentheses."""
    text = str(error)
    cut = text.find(" (")
    return text[:cut] if cut > 0 else text
