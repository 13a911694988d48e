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
    the END line, then nothing but line breaks. Lines end in LF or in CRLF, as the BEGIN
    line does. The CRC24 checksum is not verified (OpenPGP does not require it; integrity
    comes from the SEIPD packet).

    Cost: a few C-level passes over the block (drop line breaks, base64-decode); no
    per-line Python work, so a 1 MB message costs a few milliseconds.
    """
    if not text.startswith(ARMOR_BEGIN):
        return None
    pos = len(ARMOR_BEGIN)
    if text.startswith(b"\r\n", pos):
        newline = b"\r\n"
    elif text.startswith(b"\n", pos):
        newline = b"\n"
    else:
        return None
    pos += len(newline)
    if not text.startswith(newline, pos):
        # An armor header line before the empty line.
        if not allow_armor_header or not text.startswith(VERSION_HEADER, pos):
            return None
        line_end = text.find(newline, pos)
        if line_end < 0 or b"\n" in text[pos:line_end]:
            return None
        pos = line_end + len(newline)
        if not text.startswith(newline, pos):
            return None
    pos += len(newline)

    # The END line, followed only by line breaks (no copy of the block for this).
    end = len(text)
    while end > pos and text[end - 1] in (0x0A, 0x0D):
        end -= 1
    if not text.endswith(ARMOR_END, pos, end):
        return None
    end -= len(ARMOR_END)
    if not text.endswith(newline, pos, end):
        return None
    end -= len(newline)
    if end <= pos:
        return None

    block = text[pos:end]
    if newline == b"\r\n":
        lines = block.replace(b"\r", b"")
        carriage_returns = len(block) - len(lines)
    else:
        if b"\r" in block:
            return None
        lines = block
        carriage_returns = 0
    if lines.startswith(b"\n") or lines.endswith(b"\n") or b"\n\n" in lines:
        return None  # an empty line inside the base64 block
    encoded = lines.replace(b"\n", b"")
    line_breaks = len(lines) - len(encoded)
    if newline == b"\r\n" and carriage_returns != line_breaks:
        return None  # a CR that is not part of a CRLF line end
    data = memoryview(encoded)
    last_line_start = lines.rfind(b"\n") + 1
    if lines.startswith(b"=", last_line_start):
        checksum = lines[last_line_start:]
        if last_line_start == 0 or len(checksum) != 5:
            return None
        try:
            binascii.a2b_base64(checksum[1:], strict_mode=True)
        except binascii.Error:
            return None
        data = data[:-5]
    try:
        return binascii.a2b_base64(data, strict_mode=True)
    except binascii.Error:
        return None


def is_encrypted_armor(text: bytes, allow_armor_header: bool) -> bool:
    """True when `text` is one armored PGP MESSAGE holding an encrypted packet sequence."""
    payload = decode_armored_message(text, allow_armor_header)
    return payload is not None and is_encrypted_packet_sequence(payload)
