"""The message predicates of SPEC 4.2, 4.4.2, 4.3.6 and 4.5, over raw message bytes.

Each takes the raw message (or an already parsed top-level `Entity`, so the policy parses
the top-level headers once) and answers a bool. Malformed input answers False.
"""

from email.header import decode_header, make_header

from .mime import (
    Entity,
    decoded_body,
    decoded_body_span,
    extract_address,
    multipart_spans,
    parse_entity,
)
from .openpgp import is_encrypted_armor

SECUREJOIN_HEADER_VALUES = ("vc-request", "vg-request")
SECUREJOIN_BODIES = (b"secure-join: vc-request", b"secure-join: vg-request")
AUTOCRYPT_SETUP_SUBJECT = "Autocrypt Setup Message"


def as_entity(message: bytes | Entity) -> Entity:
    return message if isinstance(message, Entity) else parse_entity(message)


def _parts(entity: Entity) -> list[Entity] | None:
    data = entity.data
    spans = multipart_spans(data, entity.body_start, entity.body_end, entity.param("boundary"))
    if spans is None:
        return None
    return [parse_entity(data, start, end) for start, end in spans]


def _ambiguous(entity: Entity) -> bool:
    """A repeated Content-Type or Content-Transfer-Encoding: MUAs may read it differently."""
    headers = entity.headers
    return headers.is_repeated("content-type") or headers.is_repeated("content-transfer-encoding")


def is_encrypted(message: bytes | Entity, allow_armor_header: bool) -> bool:
    """RFC 3156 multipart/encrypted holding one armored PKESK/SKESK* + SEIPD message.

    `allow_armor_header` is True for incoming mail (a `Version:` armor header may appear).
    Entities with a repeated Content-Type or Content-Transfer-Encoding are refused, so no
    reader can take the message for something else than what was checked.
    """
    entity = as_entity(message)
    if entity.content_type != "multipart/encrypted" or _ambiguous(entity):
        return False
    parts = _parts(entity)
    if parts is None or len(parts) != 2:
        return False
    control, payload = parts
    if _ambiguous(control) or _ambiguous(payload):
        return False
    if control.content_type != "application/pgp-encrypted":
        return False
    control_body = decoded_body(control)
    if control_body is None or control_body.strip() != b"Version: 1":
        return False
    if payload.content_type != "application/octet-stream":
        return False
    armored = decoded_body_span(payload)
    if armored is None:
        return False
    text, start, end = armored
    return is_encrypted_armor(text, allow_armor_header, start, end)


def is_securejoin(message: bytes | Entity) -> bool:
    """A cleartext secure-join request (vc-request / vg-request), nothing more (SPEC 4.5)."""
    entity = as_entity(message)
    if entity.headers.get("secure-join") not in SECUREJOIN_HEADER_VALUES:
        return False
    if not entity.is_multipart:
        return False
    parts = _parts(entity)
    if parts is None or len(parts) != 1:
        return False
    (part,) = parts
    if part.content_type != "text/plain":
        return False
    body = decoded_body(part)
    return body is not None and body.strip().lower() in SECUREJOIN_BODIES


def header_subject(entity: Entity) -> str | None:
    subject = entity.headers.get("subject")
    if subject and "=?" in subject:
        try:
            subject = str(make_header(decode_header(subject))).strip()
        except (ValueError, LookupError, UnicodeError):
            pass
    return subject


def is_autocrypt_setup_message(message: bytes | Entity, sender: str, rcpt_tos: list[str]) -> bool:
    """A self-sent Autocrypt Setup Message (SPEC 4.3 step 6)."""
    if len(rcpt_tos) != 1 or rcpt_tos[0].lower() != sender.lower():
        return False
    entity = as_entity(message)
    return (
        header_subject(entity) == AUTOCRYPT_SETUP_SUBJECT
        and entity.content_type == "multipart/mixed"
    )


def is_mailer_daemon_report(message: bytes | Entity) -> bool:
    """A delivery report from a mailer daemon (SPEC 4.4 step 2)."""
    entity = as_entity(message)
    if not entity.headers.get("auto-submitted"):
        return False
    from_addr = extract_address(entity.headers.get("from"))
    if from_addr is None or not from_addr.lower().startswith("mailer-daemon@"):
        return False
    return entity.content_type == "multipart/report"
