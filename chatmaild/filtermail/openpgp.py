"""ASCII armor and OpenPGP packet sequence checks on bytes (SPEC 4.2 points 3 and 4).

Pure functions, no I/O, no `email`. Every malformed input gives False (or None), never an
exception: the caller treats it as "not encrypted" and the filter fails closed.
"""

import binascii

ARMOR_BEGIN = b"-----BEGIN PGP MESSAGE-----"
ARMOR_END = b"-----END PGP MESSAGE-----"
VERSION_HEADER = b"Version: "

TAG_PKESK = 1
TAG_SKESK = 3
TAG_SEIPD = 18

# RFC 4880 4.2.2.4: the first partial body length of a packet must be at least 512 octets.
MIN_FIRST_PARTIAL = 512


def is_encrypted_packet_sequence(data: bytes) -> bool:
    """True when `data` is PKESK/SKESK packets followed by one SEIPD ending at the last byte.

    Only new-format packet headers are accepted. Body lengths may be one-, two- or
    five-octet; partial body lengths only inside the SEIPD packet (the only data packet
    allowed here), with a first chunk of at least 512 octets.
    """
    end = len(data)
    pos = 0
    while pos < end:
        header = data[pos]
        if header & 0xC0 != 0xC0:
            return False  # old-format header or not a packet at all
        tag = header & 0x3F
        if tag not in (TAG_PKESK, TAG_SKESK, TAG_SEIPD):
            return False
        pos += 1
        first_chunk = True
        while True:
            if pos >= end:
                return False  # truncated length
            octet = data[pos]
            if octet < 192:
                length = octet
                pos += 1
            elif octet < 224:
                if pos + 1 >= end:
                    return False
                length = ((octet - 192) << 8) + data[pos + 1] + 192
                pos += 2
            elif octet == 255:
                if pos + 4 >= end:
                    return False
                length = int.from_bytes(data[pos + 1 : pos + 5], "big")
                pos += 5
            else:
                # Partial body length: a chunk of 2**n octets, more length octets follow.
                length = 1 << (octet & 0x1F)
                if tag != TAG_SEIPD or (first_chunk and length < MIN_FIRST_PARTIAL):
                    return False
                pos += 1 + length
                first_chunk = False
                continue
            break
        pos += length
        if pos > end:
            return False  # truncated body
        if tag == TAG_SEIPD:
            return pos == end
    return False


def decode_armored_message(text: bytes, allow_armor_header: bool) -> bytes | None:
    """Return the binary payload of one ASCII-armored PGP MESSAGE, or None if malformed.

    Layout: BEGIN line, at most one `Version: ...` header line (only when
    `allow_armor_header`), an empty line, base64 lines, an optional `=XXXX` checksum line,
    the END line, then nothing but line breaks. LF and CRLF line ends are both accepted.
    The CRC24 checksum is not verified (OpenPGP does not require it; integrity comes from
    the SEIPD packet).
    """
    if not text.startswith(ARMOR_BEGIN):
        return None
    stripped = text.rstrip(b"\r\n")
    if not stripped.endswith(ARMOR_END):
        return None
    body_start = len(ARMOR_BEGIN)
    body_end = len(stripped) - len(ARMOR_END)
    if body_end < body_start:
        return None
    # The END line starts a line of its own.
    if stripped[body_end - 1 : body_end] != b"\n":
        return None
    body = stripped[body_start:body_end]
    # CR only as part of CRLF.
    if body.count(b"\r") != body.count(b"\r\n"):
        return None
    if b"\r" in body:
        body = body.replace(b"\r\n", b"\n")
    # body now is "\n" [header "\n"] "\n" base64-lines "\n" ; the BEGIN line ends right here.
    if not body.startswith(b"\n"):
        return None
    if body.startswith(b"\n\n"):
        data_start = 2
    else:
        if not allow_armor_header:
            return None
        header_end = body.find(b"\n", 1)
        if header_end < 0:
            return None
        if not body.startswith(VERSION_HEADER, 1) or body[header_end + 1 : header_end + 2] != b"\n":
            return None
        data_start = header_end + 2
    lines = body[data_start:-1]  # without the line break before the END line
    if not lines or lines.startswith(b"\n") or b"\n\n" in lines:
        return None  # no data, or an empty line inside the base64 block
    last_break = lines.rfind(b"\n")
    last_line = lines[last_break + 1 :]
    if last_line.startswith(b"="):
        if len(last_line) != 5 or last_break < 0:
            return None
        try:
            binascii.a2b_base64(last_line[1:], strict_mode=True)
        except binascii.Error:
            return None
        lines = lines[:last_break]
    try:
        return binascii.a2b_base64(lines.replace(b"\n", b""), strict_mode=True)
    except binascii.Error:
        return None


def is_encrypted_armor(text: bytes, allow_armor_header: bool) -> bool:
    """True when `text` is one armored PGP MESSAGE holding an encrypted packet sequence."""
    payload = decode_armored_message(text, allow_armor_header)
    return payload is not None and is_encrypted_packet_sequence(payload)
