"""Minimal MIME scanning over raw message bytes, for the filter's checks.

Only what the checks need: the header block of an entity (unfolded, names
case-insensitive), its Content-Type with parameters, the parts of a multipart body split by
the boundary, and the body with its Content-Transfer-Encoding undone. Bodies are never
copied into an `email.message` tree, so a multi-megabyte message costs a few C-level scans.

Malformed input never raises: parsing returns None (or an empty result) and the caller
treats the message as not encrypted.
"""

import binascii
import re
from email.utils import getaddresses

# A line break followed by whitespace folds a header field (RFC 5322 2.2.3).
_FOLD_RE = re.compile(rb"\r?\n(?=[ \t])")
# RFC 5322 field names: printable ASCII except ":".
_FIELD_NAME_CHARS = bytes(range(33, 127)).replace(b":", b"")
# One Content-Type parameter after the first ";": name = token | quoted-string.
_PARAM_RE = re.compile(r';\s*([^\s=;]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^;\s]*))', re.DOTALL)
_QUOTED_PAIR_RE = re.compile(r"\\(.)", re.DOTALL)
# The common From forms without quotes, comments or lists: `addr` or `Name <addr>`.
_SIMPLE_ADDRESS_RE = re.compile(
    r'(?:[^"<>(),;:\\@]*<([^\s"<>(),;:\\@]+@[^\s"<>(),;:\\@]+)>|([^\s"<>(),;:\\@]+@[^\s"<>(),;:\\@]+))'
)


class Headers:
    """The header fields of one entity; lookups by lower-cased name return the first field.

    Values are kept as raw bytes and decoded (UTF-8, surrogateescape, stripped) on lookup.
    """

    __slots__ = ("_fields", "_repeated")

    def __init__(self, fields: dict[str, bytes], repeated: frozenset[str] = frozenset()):
        self._fields = fields
        self._repeated = repeated

    def is_repeated(self, name: str) -> bool:
        """True when the field occurs more than once (readers may disagree on which wins)."""
        return name.lower() in self._repeated

    def get(self, name: str, default: str | None = None) -> str | None:
        raw = self._fields.get(name.lower())
        if raw is None:
            return default
        return raw.decode("utf-8", "surrogateescape").strip(" \t\r\n")

    def __contains__(self, name: str) -> bool:
        return name.lower() in self._fields

    def __repr__(self):
        return f"Headers({self._fields!r})"


class Entity:
    """One MIME entity: its parsed headers and its raw (still transfer-encoded) body.

    The body is a span `data[body_start:body_end]` of the whole message, so the parts of a
    multi-megabyte message are looked at in place, never copied; `body` makes the copy.
    """

    __slots__ = ("headers", "data", "body_start", "body_end", "_content_type")

    def __init__(self, headers: Headers, data: bytes, body_start: int = 0, body_end=None):
        self.headers = headers
        self.data = data
        self.body_start = body_start
        self.body_end = len(data) if body_end is None else body_end
        self._content_type = None

    @property
    def body(self) -> bytes:
        if self.body_start == 0 and self.body_end == len(self.data):
            return self.data
        return self.data[self.body_start : self.body_end]

    def _parsed_content_type(self) -> tuple[str, dict[str, str]]:
        if self._content_type is None:
            self._content_type = parse_content_type(self.headers.get("content-type"))
        return self._content_type

    @property
    def content_type(self) -> str:
        """Lower-cased `type/subtype`; `text/plain` when missing or malformed."""
        return self._parsed_content_type()[0]

    def param(self, name: str) -> str | None:
        return self._parsed_content_type()[1].get(name)

    @property
    def is_multipart(self) -> bool:
        return self.content_type.startswith("multipart/")


def split_header_block(data: bytes, start: int = 0, end: int | None = None) -> tuple[bytes, int]:
    """Return (header block, body offset) of the entity `data[start:end]`.

    The empty line between them belongs to neither. Without an empty line the whole input
    is headers and the body is empty. The offset is one into `data`.
    """
    if end is None:
        end = len(data)
    if data.startswith(b"\n", start, end):
        return b"", start + 1
    if data.startswith(b"\r\n", start, end):
        return b"", start + 2
    crlf = data.find(b"\n\r\n", start, end)
    # Look for a bare-LF empty line only before the first CRLF one: no second full scan.
    lf = data.find(b"\n\n", start, crlf + 2 if crlf >= 0 else end)
    if lf >= 0:
        return data[start : lf + 1], lf + 2
    if crlf >= 0:
        return data[start : crlf + 1], crlf + 3
    return data[start:end], end


def parse_header_block(block: bytes) -> Headers:
    """Unfold and parse a header block; the first occurrence of each name wins.

    Names are lower-cased, values are unfolded (line breaks removed, the folding
    whitespace kept) and stripped. Lines that are neither a field nor a continuation are
    skipped, as the `email` package does with its defects.
    """
    fields: dict[str, bytes] = {}
    repeated: set[str] = set()
    for line in _FOLD_RE.sub(b"", block).split(b"\n"):
        name, colon, value = line.partition(b":")
        if not colon:
            continue
        name = name.rstrip(b" \t")
        if not name or name.translate(None, _FIELD_NAME_CHARS):
            continue
        key = name.decode("ascii").lower()
        if key in fields:
            repeated.add(key)
        else:
            fields[key] = value
    return Headers(fields, frozenset(repeated))


def parse_entity(data: bytes, start: int = 0, end: int | None = None) -> Entity:
    """The entity `data[start:end]` (default: all of `data`); its body is not copied."""
    if end is None:
        end = len(data)
    block, body_start = split_header_block(data, start, end)
    return Entity(parse_header_block(block), data, body_start, end)


def parse_content_type(value: str | None) -> tuple[str, dict[str, str]]:
    """Return (lower-cased type/subtype, parameters with lower-cased names).

    A missing or malformed type is `text/plain`, as RFC 2045 section 5.2 says.
    """
    if not value:
        return "text/plain", {}
    mimetype, sep, rest = value.partition(";")
    mimetype = mimetype.strip().lower()
    maintype, slash, subtype = mimetype.partition("/")
    if not slash or not maintype or not subtype or " " in mimetype or "\t" in mimetype:
        return "text/plain", {}
    params: dict[str, str] = {}
    if sep:
        for match in _PARAM_RE.finditer(";" + rest):
            pname = match.group(1).lower()
            quoted = match.group(2)
            if quoted is None:
                pvalue = match.group(3)
            elif "\\" in quoted:
                pvalue = _QUOTED_PAIR_RE.sub(r"\1", quoted)
            else:
                pvalue = quoted
            params.setdefault(pname, pvalue)
    return mimetype, params


def split_multipart(body: bytes, boundary: str | None) -> list[bytes] | None:
    """Split a multipart body into its raw parts (each: headers, empty line, body).

    A delimiter line is `--boundary` at the start of a line, optionally followed by
    whitespace; the line break before it belongs to the delimiter. The preamble and the
    epilogue are dropped. Returns None when the boundary is missing or invalid, or the
    close delimiter `--boundary--` never comes.
    """
    spans = multipart_spans(body, 0, len(body), boundary)
    return None if spans is None else [body[start:end] for start, end in spans]


def multipart_spans(
    data: bytes, start: int, stop: int, boundary: str | None
) -> list[tuple[int, int]] | None:
    """`split_multipart` of the body `data[start:stop]`, as (start, end) offsets into `data`."""
    if not boundary or len(boundary) > 200:
        return None
    delimiter = b"--" + boundary.encode("utf-8", "surrogateescape")
    parts: list[tuple[int, int]] = []
    part_start = -1  # offset where the current part starts, -1 while in the preamble
    search = start
    while True:
        pos = data.find(delimiter, search, stop)
        if pos < 0:
            return None  # unterminated
        search = pos + len(delimiter)
        if pos > start and data[pos - 1] != 0x0A:
            continue  # not at the start of a line
        after = search
        closing = data.startswith(b"--", after, stop)
        if closing:
            after += 2
        line_end = data.find(b"\n", after, stop)
        if line_end < 0:
            line_end = stop
        if data[after:line_end].strip(b" \t\r"):
            continue  # "--boundaryX": a longer line, not our delimiter
        if part_start >= 0:
            end = pos - 1 if pos > start else start
            if end > part_start and data[end - 1] == 0x0D:
                end -= 1
            parts.append((part_start, max(end, part_start)))
        if closing:
            return parts
        part_start = line_end + 1
        search = line_end + 1


def decode_transfer_encoding(body: bytes, encoding: str | None) -> bytes | None:
    """Undo a Content-Transfer-Encoding; None for an unknown encoding or undecodable body."""
    encoding = (encoding or "7bit").strip().lower()
    if encoding in ("7bit", "8bit", "binary"):
        return body
    if encoding == "base64":
        try:
            return binascii.a2b_base64(body)
        except binascii.Error:
            return None
    if encoding == "quoted-printable":
        return binascii.a2b_qp(body)
    return None


def decoded_body(entity: Entity) -> bytes | None:
    return decode_transfer_encoding(entity.body, entity.headers.get("content-transfer-encoding"))


def decoded_body_span(entity: Entity) -> tuple[bytes, int, int] | None:
    """`decoded_body` as (buffer, start, end): an identity encoding is not copied."""
    encoding = (entity.headers.get("content-transfer-encoding") or "7bit").strip().lower()
    if encoding in ("7bit", "8bit", "binary"):
        return entity.data, entity.body_start, entity.body_end
    decoded = decode_transfer_encoding(entity.body, encoding)
    return None if decoded is None else (decoded, 0, len(decoded))


def extract_address(value: str | None) -> str | None:
    """The address of a one-mailbox header value (display name, <>, comments allowed).

    None when the value is missing or does not hold exactly one address with an `@`.
    """
    if not value:
        return None
    simple = _SIMPLE_ADDRESS_RE.fullmatch(value)
    if simple is not None:
        return simple.group(1) or simple.group(2)
    addresses = getaddresses([value])
    if len(addresses) != 1:
        return None
    addr = addresses[0][1]
    return addr if "@" in addr else None
