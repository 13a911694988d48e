"""DKIM verification of incoming mail, as pure functions over the raw message bytes.

The rule (upstream filtermail, federation notes): a message passes when at least one
DKIM-Signature whose `d=` equals the `From:` header domain (strict alignment, case-insensitive,
like DMARC `adkim=s`) verifies. `From: x@[1.2.3.4]` (an IP-only relay) is exempt when the
literal is the address of the connecting client (XFORWARD ADDR from Postfix), as upstream;
any other IP literal, or one without a known client address, fails. DMARC, SPF and iprev
are not consulted.

Two steps around the DNS lookups, which the caller does:
1. `screen(message, client_addr)` finds the From domain and the signatures worth a key:
   aligned, well-formed, of an accepted algorithm, and with a body hash that matches the
   body. Everything that needs no DNS is checked here, so mail whose signatures cannot pass
   is refused without a query. It answers the key names to fetch, or decides at once
   (exempt, or refused).
2. `verify(message, screening, keys)` checks the header hash of those signatures with the
   fetched TXT records: rsa-sha256 (RFC 6376, RFC 8301) and ed25519-sha256 (RFC 8463).

Bounded work (RFC 6376 6.1 lets a verifier limit the signatures it tries): only the first
`MAX_FIELDS` DKIM-Signature fields (top down, the most recently added first) are looked at,
and of those at most `MAX_TRIED` reach step 2, so a message costs at most `MAX_TRIED` key
lookups however many signatures it carries. Every reason is at most `MAX_REASON` characters:
the first reasons, then how many more there were.

Outcomes: PASS, EXEMPT, FAIL(reason) (550) and TEMPORARY(reason) (451: a key could not be
fetched and no other aligned signature passed). No I/O here.
"""

import base64
import binascii
import functools
import hashlib
import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

import dkim
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa, utils
from dkim.canonicalization import (
    CanonicalizationPolicy,
    InvalidCanonicalizationPolicyError,
    Relaxed,
)
from dkim.util import InvalidTagValueList

from .dkimfast import (
    MalformedHeader,
    empty_b_value,
    header_fields,
    relaxed_field,
    select_fields,
    tag_list,
    unfold,
)
from .mime import extract_address, split_header_block

PASS = "pass"
EXEMPT = "exempt"
FAIL = "fail"
TEMPORARY = "temporary"

# a= -> the key type (k=) it needs. RFC 8301: rsa-sha1 signatures must not be considered
# valid, RSA keys below 1024 bits neither. RFC 8463 3: verifiers must implement ed25519-sha256.
ACCEPTED_ALGORITHMS = {b"rsa-sha256": "rsa", b"ed25519-sha256": "ed25519"}
MIN_KEY_BITS = 1024
ED25519_KEY_BYTES = 32
ED25519_SIGNATURE_BYTES = 64
# RFC 6376 6.1: a verifier may limit the signatures it tries. DKIM-Signature fields looked at
# (top down), and signatures passing every check without DNS whose keys are fetched.
MAX_FIELDS = 20
MAX_TRIED = 5
# The longest reason (it goes into a log line, and cut shorter into a 451 reply).
MAX_REASON = 300
# A DNS name of LDH labels (underscores allowed, as in selectors), at most 253 octets.
_LABEL = r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?"
_DNS_NAME_RE = re.compile(rf"(?=.{{1,253}}$)(?:{_LABEL}\.)*{_LABEL}")
_H_SPLIT_RE = re.compile(rb"\s*:\s*")
_WSP_RE = re.compile(rb"\s+")
_BARE_LF_RE = re.compile(rb"(?<!\r)\n")
_PKCS1 = padding.PKCS1v15()
_PREHASHED_SHA256 = utils.Prehashed(hashes.SHA256())


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
    """One usable DKIM-Signature field: its tags and the raw field for the header hash."""

    index: int  # position among the DKIM-Signature fields
    domain: str  # d=, lower-case A-labels
    selector: str  # s=, lower-case
    tags: dict = field(compare=False, repr=False)
    raw: tuple = field(compare=False, repr=False)  # (name, value) as in the message
    key_type: str = "rsa"  # what a= needs: "rsa" or "ed25519"
    policy: CanonicalizationPolicy | None = field(default=None, compare=False, repr=False)
    signature: bytes = field(default=b"", compare=False, repr=False)  # b=, decoded

    @property
    def key_name(self) -> str:
        return f"{self.selector}._domainkey.{self.domain}"


@dataclass(frozen=True, slots=True)
class Screening:
    """The outcome of `screen`: decided (`result`), or the aligned signatures to verify."""

    from_domain: str
    result: DkimResult | None = None
    signatures: tuple[Signature, ...] = ()
    # why the signatures that are not tried were set aside, for the log
    skipped: tuple[str, ...] = ()
    # which limit left signatures unexamined or untried (first in a failure's reason)
    capped: tuple[str, ...] = ()
    headers: tuple = ()  # the header fields, (name, value) as dkimpy parses them
    body_start: int = 0

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


def parse_ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """An IP address as in an address literal or XFORWARD ADDR, or None.

    `IPv6:` (any case) may come first and then requires IPv6; an IPv4-mapped IPv6 address
    is taken as the IPv4 address (one host, two spellings).
    """
    tagged = text[:5].lower() == "ipv6:"
    try:
        ip = ipaddress.IPv6Address(text[5:]) if tagged else ipaddress.ip_address(text)
    except ValueError:
        return None
    if ip.version == 6 and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def check_ip_literal(literal: str, client_addr: str | None) -> DkimResult:
    """`From: x@[literal]`: exempt only when the literal is the connecting client's address.

    `client_addr` is Postfix's XFORWARD ADDR (None: not forwarded, so no exemption). An
    IP literal has no DKIM key, so anything else fails without a DNS query.
    """
    ip = parse_ip(literal[1:-1])
    if ip is None:
        return DkimResult(FAIL, f"From domain {literal} is not an IP address literal")
    if client_addr is None:
        return DkimResult(FAIL, f"IP literal {literal} and no client address (XFORWARD ADDR)")
    client = parse_ip(client_addr)
    if client is None:
        return DkimResult(FAIL, f"IP literal {literal}: client address {client_addr} is no IP")
    if ip != client:
        return DkimResult(FAIL, f"IP literal {literal} is not the client address {client}")
    return DkimResult(EXEMPT, f"IP literal {literal} is the client address")


def from_domain(headers) -> tuple[str | None, str]:
    """(the From address's domain as written, "") or (None, why not)."""
    values = [value for name, value in headers if name.lower() == b"from"]
    if not values:
        return None, "no From header"
    if len(values) > 1:
        return None, "several From headers"
    address = extract_address(unfold(values[0]).decode("utf-8", "surrogateescape").strip())
    if address is None:
        return None, "no single address in the From header"
    return address.rpartition("@")[2], ""


def parse_signature(index: int, raw: tuple[bytes, bytes]) -> tuple[Signature | None, str]:
    """(the signature, "") or (None, why it cannot be used): the checks of one field alone."""
    try:
        tags = tag_list(unfold(raw[1]))
    except InvalidTagValueList:
        return None, f"signature {index}: malformed tag list"
    try:
        dkim.validate_signature_fields(tags)
    except dkim.ValidationError as e:
        return None, f"signature {index}: {_short(e)}"
    except (IndexError, ValueError):  # dkimpy 1.1.8 on i= equal to d=, say
        return None, f"signature {index}: malformed tag value"
    key_type = ACCEPTED_ALGORITHMS.get(tags[b"a"])
    if key_type is None:
        algorithm = tags[b"a"][:40].decode("ascii", "replace")
        return None, f"signature {index}: algorithm {algorithm} not accepted"
    if b"l" in tags:
        return None, f"signature {index}: l= (partial body) not accepted"
    if b"from" not in signed_fields(tags):
        return None, f"signature {index}: From is not signed"  # RFC 6376 6.1.1
    try:
        policy = CanonicalizationPolicy.from_c_value(tags.get(b"c", b"simple/simple"))
    except InvalidCanonicalizationPolicyError:
        return None, f"signature {index}: invalid c="
    try:
        signature = base64.b64decode(_WSP_RE.sub(b"", tags[b"b"]), validate=True)
    except binascii.Error:
        return None, f"signature {index}: b= is not base64"
    if key_type == "ed25519" and len(signature) != ED25519_SIGNATURE_BYTES:
        return None, f"signature {index}: an Ed25519 signature is {ED25519_SIGNATURE_BYTES} bytes"
    domain = normalize_domain(tags[b"d"].decode("utf-8", "replace"))
    selector = normalize_domain(tags[b"s"].decode("utf-8", "replace"))
    if domain is None or selector is None:
        return None, f"signature {index}: d= or s= is not a DNS name"
    return Signature(index, domain, selector, tags, raw, key_type, policy, signature), ""


def signed_fields(tags: dict) -> list[bytes]:
    return [name.lower() for name in _H_SPLIT_RE.split(tags[b"h"].strip())]


def screen(message: bytes, client_addr: str | None = None) -> Screening:
    """Find the From domain and the signatures worth fetching a key for (no DNS): among the
    first `MAX_FIELDS` DKIM-Signature fields, the first `MAX_TRIED` that are well-formed,
    aligned with the From domain and whose body hash matches.

    `client_addr`: the connecting client's address (XFORWARD ADDR) for an IP-literal From.
    """
    block, body_start = split_header_block(message)
    try:
        headers = tuple(header_fields(block))
    except MalformedHeader:
        return _fail("malformed header section")
    domain, why = from_domain(headers)
    if domain is None:
        return _fail(why)
    if is_ip_literal(domain):
        return Screening(domain, check_ip_literal(domain, client_addr))
    normalized = normalize_domain(domain)
    if normalized is None:
        return _fail(f"From domain {domain[:80]} is not a DNS name", domain)
    fields = [h for h in headers if h[0].lower() == b"dkim-signature"]
    if not fields:
        return _fail("no signature", normalized)
    tried: list[Signature] = []
    skipped: list[str] = []
    capped: list[str] = []
    if len(fields) > MAX_FIELDS:
        capped.append(f"{len(fields)} signatures, only the first {MAX_FIELDS} looked at")
    body = None
    bodies: dict = {}
    for index, raw in enumerate(fields[:MAX_FIELDS]):
        sig, why = parse_signature(index, raw)
        if sig is None:
            skipped.append(why)
            continue
        if sig.domain != normalized:
            skipped.append(f"d={sig.domain} does not match From domain {normalized}")
            continue
        if len(tried) == MAX_TRIED:
            capped.append(f"only the first {MAX_TRIED} usable signatures tried")
            break
        if body is None:
            body = message_body(message, body_start)
        why = check_body_hash(body, sig, bodies)
        if why is not None:
            skipped.append(f"d={sig.domain} s={sig.selector}: {why}")
            continue
        tried.append(sig)
    if not tried:
        return _fail(summarize(capped + skipped), normalized)
    return Screening(
        normalized, None, tuple(tried), tuple(skipped), tuple(capped), headers, body_start
    )


def check_body_hash(body: bytes, sig: Signature, bodies: dict) -> str | None:
    """None when bh= is the hash of the canonical body, else the reason. `bodies` caches
    canonical bodies by algorithm between the signatures of one message."""
    algorithm = sig.policy.body_algorithm
    canonical = bodies.get(algorithm)
    if canonical is None:
        canonical = bodies[algorithm] = algorithm.canonicalize_body(body)
    try:
        expected = base64.b64decode(_WSP_RE.sub(b"", sig.tags[b"bh"]))
    except binascii.Error:
        return "bh= is not base64"
    if hashlib.sha256(canonical).digest() != expected:
        return "body hash mismatch"
    return None


def summarize(reasons, limit: int = MAX_REASON) -> str:
    """`reasons` joined by "; " within `limit` characters: as many as fit, then how many
    more there were (the first one cut short if it alone is too long)."""
    reasons = list(reasons)
    text = ""
    for done, reason in enumerate(reasons):
        joined = reason if not text else f"{text}; {reason}"
        left = len(reasons) - done - 1
        tail = f"; {left} more" if left else ""
        if len(joined) + len(tail) <= limit:
            text = joined
            continue
        if not text:  # the first reason alone does not fit
            room = limit - len(tail) - 3
            return reason[:room] + "..." + tail
        return f"{text}; {left + 1} more"
    return text


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


PublicKey = rsa.RSAPublicKey | ed25519.Ed25519PublicKey


@functools.lru_cache(maxsize=4096)
def parse_key(record: bytes) -> PublicKey | str:
    """The public key of a key record (RFC 6376 3.6.1; RFC 8463 4.2: `k=ed25519` with the
    32 raw bytes of the key in p=), or why it cannot verify."""
    try:
        tags = tag_list(record)
    except InvalidTagValueList:
        return "malformed key record"
    if tags.get(b"v", b"DKIM1") != b"DKIM1":
        return "key record v= is not DKIM1"
    if b"p" not in tags:
        return "key record without p="
    if not tags[b"p"]:
        return "key revoked (empty p=)"
    key_type = tags.get(b"k", b"rsa")
    if key_type not in (b"rsa", b"ed25519"):
        return f"key type k={key_type[:40].decode('ascii', 'replace')} not supported"
    if b"sha256" not in _colon_list(tags.get(b"h", b"sha256")):
        return "key record does not allow sha256 (h=)"
    if not {b"*", b"email"} & set(_colon_list(tags.get(b"s", b"*"))):
        return "key record is not for email (s=)"
    try:
        data = base64.b64decode(_WSP_RE.sub(b"", tags[b"p"]), validate=True)
    except binascii.Error:
        return "key p= is not base64"
    if key_type == b"ed25519":
        if len(data) != ED25519_KEY_BYTES:
            return f"key p= is not {ED25519_KEY_BYTES} bytes of an Ed25519 key"
        return ed25519.Ed25519PublicKey.from_public_bytes(data)
    try:
        key = serialization.load_der_public_key(data)
    except (ValueError, UnsupportedAlgorithm):
        return "key p= is not an RSA public key"
    if not isinstance(key, rsa.RSAPublicKey):
        return "key p= is not an RSA public key"
    if key.key_size < MIN_KEY_BITS:
        return f"key too small ({key.key_size} bits)"
    return key


def _colon_list(value: bytes) -> list[bytes]:
    return [item.strip().lower() for item in value.split(b":")]


def message_body(message: bytes, start: int) -> bytes:
    """The body as dkimpy sees it: CRLF line ends (SMTP mail has them already)."""
    body = message[start:]
    return _BARE_LF_RE.sub(b"\r\n", body) if body.count(b"\n") != body.count(b"\r\n") else body


def signed_header_fields(headers: tuple, sig: Signature, policy) -> list[tuple[bytes, bytes]]:
    """The canonical fields the header hash covers (RFC 6376 3.7), as dkimpy hashes them:
    the h= fields picked bottom-up, one more From (so an added From field breaks the
    signature), then the signature field itself with b= emptied and no final CRLF. Only the
    picked fields are canonicalized (dkimpy canonicalizes all of them first: same bytes,
    more regex passes)."""
    include = signed_fields(sig.tags)
    include.append(b"from")
    picked = select_fields(headers, include)
    name, value = sig.raw
    picked.append((name, empty_b_value(value)))
    fields = canonicalize_fields(policy, picked)
    fields[-1] = (fields[-1][0], fields[-1][1].rstrip())
    return fields


def canonicalize_fields(policy, fields: list) -> list[tuple[bytes, bytes]]:
    """dkimpy's header canonicalization of `policy` (relaxed fields by the faster stand-in)."""
    if policy.header_algorithm is not Relaxed:
        return policy.canonicalize_headers(fields)
    out = []
    for name, value in fields:
        field = relaxed_field(name, value)
        out.append(field if field is not None else Relaxed.canonicalize_headers([(name, value)])[0])
    return out


def check_signature(headers: tuple, sig: Signature, key: PublicKey) -> str | None:
    """None when the header hash of `sig` verifies with `key`, else the reason (the body
    hash was checked by `screen`)."""
    key_type = "rsa" if isinstance(key, rsa.RSAPublicKey) else "ed25519"
    if key_type != sig.key_type:
        return f"key type {key_type} does not fit a={sig.tags[b'a'].decode('ascii')}"
    fields = signed_header_fields(headers, sig, sig.policy)
    digest = hashlib.sha256(b"".join(name + b":" + value for name, value in fields)).digest()
    try:
        if sig.key_type == "rsa":
            key.verify(sig.signature, digest, _PKCS1, _PREHASHED_SHA256)
        else:  # RFC 8463 3: PureEdDSA over the SHA-256 hash
            key.verify(sig.signature, digest)
    except (InvalidSignature, ValueError):
        return "signature did not verify"
    return None


def verify(message: bytes, screening: Screening, keys: Mapping[str, KeyLookup]) -> DkimResult:
    """Verify the signatures `screening` kept with the fetched keys."""
    if screening.result is not None:
        return screening.result
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
        public_key = parse_key(record)
        if isinstance(public_key, str):
            why = public_key
        else:
            why = check_signature(screening.headers, sig, public_key)
        if why is None:
            return DkimResult(PASS, f"d={sig.domain} s={sig.selector}")
        failures.append(f"d={sig.domain} s={sig.selector}: {why}")
    if temporary:
        return DkimResult(TEMPORARY, summarize(temporary))
    return DkimResult(FAIL, summarize([*screening.capped, *failures, *screening.skipped]))


def _short(error: Exception) -> str:
    """dkimpy's message without the values it appends in parentheses."""
    text = str(error)
    cut = text.find(" (")
    return text[:cut] if cut > 0 else text
