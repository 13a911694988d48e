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


def _locate_block(
    text: bytes, allow_armor_header: bool, lo: int, hi: int
) -> tuple[int, int, bytes] | None:
    """(start, end, line break) of the base64 lines of the armored `text[lo:hi]`, or None.

    Checks the frame: BEGIN line, at most one `Version: ...` header line (only when
    `allow_armor_header`), an empty line, ..., the END line, then nothing but line breaks.
    `text[start:end]` holds the base64 and checksum lines without the line break before END.
    """
    if not text.startswith(ARMOR_BEGIN, lo, hi):
        return None
    pos = lo + len(ARMOR_BEGIN)
    if text.startswith(b"\r\n", pos, hi):
        newline = b"\r\n"
    elif text.startswith(b"\n", pos, hi):
        newline = b"\n"
    else:
        return None
    pos += len(newline)
    if not text.startswith(newline, pos, hi):
        # An armor header line before the empty line.
        if not allow_armor_header or not text.startswith(VERSION_HEADER, pos, hi):
            return None
        line_end = text.find(newline, pos, hi)
        if line_end < 0 or b"\n" in text[pos:line_end]:
            return None
        pos = line_end + len(newline)
        if not text.startswith(newline, pos, hi):
            return None
    pos += len(newline)

    # The END line, followed only by line breaks (no copy of the block for this).
    end = hi
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
    return pos, end, newline


def _decode_block(block: bytes, newline: bytes) -> bytes | None:
    """Decode base64 lines and an optional `=XXXX` checksum line; any layout, strict base64."""
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


_B64_DIGITS = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


class LazyBase64:
    """The decoded bytes of base64 lines of one fixed length, decoded where they are read.

    Only for a block already proven valid (see `_regular_block`). Supports `len()`, an
    index and a `[start:stop]` slice, which is all the packet walk reads: a few header
    octets per packet or partial-length chunk. Each read decodes a small window of
    whole base64 quanta; after `MAX_WINDOWS` windows (a packet cut into many small
    chunks) the rest is decoded at once, so the cost never exceeds one full decode by much.
    """

    MAX_WINDOWS = 64
    WINDOW_QUANTA = 16  # 48 decoded bytes per window: a packet header fits in one

    __slots__ = (
        "_text",
        "_start",
        "_line",
        "_stride",
        "_quanta",
        "_length",
        "_cached_at",
        "_cached",
        "_windows",
    )

    def __init__(self, text: bytes, start: int, line: int, stride: int, chars: int, pad: int):
        self._text = text
        self._start = start  # offset of the first base64 digit in `text`
        self._line = line  # base64 digits per line
        self._stride = stride  # line length including its line break
        self._quanta = chars // 4
        self._length = self._quanta * 3 - pad
        self._cached_at = 0
        self._cached = b""
        self._windows = 0

    def __len__(self) -> int:
        return self._length

    def __getitem__(self, key):
        if isinstance(key, slice):
            start, stop, step = key.indices(self._length)
            if step != 1:
                raise ValueError("only contiguous slices")
            if stop <= start:
                return b""
            return self._read(start, stop)
        if key < 0:
            key += self._length
        if not 0 <= key < self._length:
            raise IndexError("decoded index out of range")
        return self._read(key, key + 1)[0]

    def _offset(self, digit: int) -> int:
        """Offset in `text` of the base64 digit number `digit` (line breaks skipped)."""
        line, column = divmod(digit, self._line)
        return self._start + line * self._stride + column

    def _read(self, start: int, stop: int) -> bytes:
        at = self._cached_at
        if at <= start and stop <= at + len(self._cached):
            return self._cached[start - at : stop - at]
        first = start // 3
        if self._windows >= self.MAX_WINDOWS:
            last = self._quanta  # decode everything from here on
        else:
            last = min(max(-(-stop // 3), first + self.WINDOW_QUANTA), self._quanta)
        self._windows += 1
        begin = self._offset(4 * first)
        finish = self._offset(4 * last - 1) + 1
        digits = self._text[begin:finish].translate(None, b"\r\n")
        self._cached = binascii.a2b_base64(digits)
        self._cached_at = 3 * first
        return self._cached[start - 3 * first : stop - 3 * first]


def _regular_block(text: bytes, start: int, end: int, newline: bytes) -> LazyBase64 | None:
    """A lazy decoding of the block `text[start:end]` when it has the usual layout, else None.

    Usual layout: lines of L base64 digits, the last data line 1..L characters ending in at
    most two "=", all data characters a multiple of 4, then optionally a `=XXXX` checksum
    line. Every such block is valid strict base64 that `_decode_block` decodes to the same
    bytes; anything else (uneven lines, stray characters) gets None and goes that way.

    The proof costs one C-level pass and no copy of the block: deleting all base64 digits
    from `text` leaves the block's other characters in order, which must be exactly the
    line breaks, the padding and the checksum "=" whose positions are then checked.
    """
    line = text.find(newline, start, end) - start
    if line <= 0:
        return None
    stride = line + len(newline)
    data_end = end
    checksum = newline + b"="
    has_checksum = end - start > 5 + len(checksum) and text.startswith(
        checksum, end - 4 - len(checksum), end
    )
    if has_checksum:
        data_end -= 4 + len(checksum)
    full_lines, last = divmod(data_end - start, stride)
    if not 1 <= last <= line:
        return None
    pad = (
        2
        if text.endswith(b"==", start, data_end)
        else 1
        if text.endswith(b"=", start, data_end)
        else 0
    )
    chars = full_lines * line + last
    if last <= pad or chars % 4:
        return None
    # The non-digits of the block, in order: what it must hold, and where.
    others = text.translate(None, _B64_DIGITS)
    before = len(text[:start].translate(None, _B64_DIGITS))
    after = len(text[end:].translate(None, _B64_DIGITS))
    expected = newline * full_lines + b"=" * pad + (checksum if has_checksum else b"")
    if others[before : len(others) - after] != expected:
        return None
    for i, char in enumerate(newline):
        if text[start + line + i : data_end : stride] != bytes((char,)) * full_lines:
            return None
    return LazyBase64(text, start, line, stride, chars, pad)


def decode_armored_message(
    text: bytes, allow_armor_header: bool, start: int = 0, end: int | None = None
) -> bytes | None:
    """Return the binary payload of the ASCII-armored PGP MESSAGE `text[start:end]`, or None.

    Layout: BEGIN line, at most one `Version: ...` header line (only when
    `allow_armor_header`), an empty line, base64 lines, an optional `=XXXX` checksum line,
    the END line, then nothing but line breaks. Lines end in LF or in CRLF, as the BEGIN
    line does. The CRC24 checksum is not verified (OpenPGP does not require it; integrity
    comes from the SEIPD packet).
    """
    located = _locate_block(text, allow_armor_header, start, len(text) if end is None else end)
    if located is None:
        return None
    block_start, block_end, newline = located
    return _decode_block(text[block_start:block_end], newline)


def armored_payload(
    text: bytes, allow_armor_header: bool, start: int = 0, end: int | None = None
) -> "bytes | LazyBase64 | None":
    """Like `decode_armored_message`, but lazily decoded when the block is laid out as usual.

    Cost for a regular block: one translate pass over `text` and a few strided compares,
    then only the windows the packet walk reads are decoded (1 MB: well under 1 ms).
    """
    located = _locate_block(text, allow_armor_header, start, len(text) if end is None else end)
    if located is None:
        return None
    block_start, block_end, newline = located
    lazy = _regular_block(text, block_start, block_end, newline)
    if lazy is not None:
        return lazy
    return _decode_block(text[block_start:block_end], newline)


def is_encrypted_armor(
    text: bytes, allow_armor_header: bool, start: int = 0, end: int | None = None
) -> bool:
    """True when `text[start:end]` is one armored PGP MESSAGE holding encrypted packets."""
    payload = armored_payload(text, allow_armor_header, start, end)
    return payload is not None and is_encrypted_packet_sequence(payload)
