"""Upstream's relay-to-relay delivery over HTTPS (`POST /mxdeliv`), as pure functions.

The request: the envelope in headers (`X-MAIL-FROM`, at most one, empty or absent for the
null sender; one `X-MAIL-TO` per recipient, bare addresses) and the message in SMTP DATA
wire form as the body: dot-stuffed, CRLF line ends, ending in CRLF, without the final `.`
line. The reply: a status and a short text body, the SMTP reply text for anything that is
not an acceptance (upstream filtermail 0.6.6 and 0.7.4):

    405 Method Not Allowed                  not POST
    413 552 Message exceeds maximum size    body over max_message_size
    400 <SMTP reply>                        any refusal, permanent or temporary
    200 250 OK                              accepted (Postfix took the message)

Used both ways: the receiving listener parses with `parse_envelope` / `unstuff_body` and
answers with `http_reply`; the sending transport builds requests with `request_headers` /
`stuff_body` and reads answers with `is_delivered`. No I/O here.
"""

from collections.abc import Iterable
from dataclasses import dataclass

PATH = "/mxdeliv"
HEADER_MAIL_FROM = "X-MAIL-FROM"
HEADER_RCPT_TO = "X-MAIL-TO"

OK_STATUS = 200
OK_TEXT = "250 OK"
METHOD_NOT_ALLOWED = (405, "Method Not Allowed")
TOO_LARGE = (413, "552 Message exceeds maximum size")
REFUSED_STATUS = 400

# SMTP replies for requests the listener refuses itself (answered with status 400)
INVALID_DATA = (500, "Invalid DATA")
NO_RECIPIENTS = (554, "5.5.1 Error: no valid recipients")
TOO_MANY_RECIPIENTS = (452, "4.5.3 Error: too many recipients")
MANY_SENDERS = (503, "5.5.1 Error: more than one X-MAIL-FROM")
BAD_ADDRESS = (501, "5.1.3 Bad address syntax")

MAX_RECIPIENTS = 1000  # Postfix's smtpd_recipient_limit, as on the SMTP path


class Refused(Exception):
    """The request cannot be taken; `code` and `text` are the SMTP reply to answer."""

    def __init__(self, reply: tuple[int, str]):
        super().__init__(f"{reply[0]} {reply[1]}")
        self.code, self.text = reply


@dataclass(frozen=True, slots=True)
class RequestEnvelope:
    mail_from: str  # "" for the null sender
    rcpt_tos: list[str]


def _address(value: str) -> str:
    """A header value as a bare address: surrounding blanks and one pair of <> dropped.

    Refuses what cannot be one envelope address (a blank or control character inside, an
    unbalanced bracket): it would end up in a MAIL or RCPT command line.
    """
    value = value.strip(" \t")
    if value.startswith("<") and value.endswith(">"):
        value = value[1:-1]
    if any(c in value for c in "<> \t") or not value.isprintable():
        raise Refused(BAD_ADDRESS)
    return value


def parse_envelope(
    senders: list[str], recipients: list[str], max_recipients: int = MAX_RECIPIENTS
) -> RequestEnvelope:
    """The envelope from the values of all `X-MAIL-FROM` and all `X-MAIL-TO` headers.

    Raises `Refused` for more than one sender, no recipient, too many recipients, or an
    address that is not one bare address. A recipient header may not be empty.
    """
    if len(senders) > 1:
        raise Refused(MANY_SENDERS)
    mail_from = _address(senders[0]) if senders else ""
    if not recipients:
        raise Refused(NO_RECIPIENTS)
    if len(recipients) > max_recipients:
        raise Refused(TOO_MANY_RECIPIENTS)
    rcpt_tos = []
    for value in recipients:
        address = _address(value)
        if not address:
            raise Refused(BAD_ADDRESS)
        rcpt_tos.append(address)
    return RequestEnvelope(mail_from, rcpt_tos)


def unstuff_body(body: bytes) -> tuple[bytes, int]:
    """Validate a DATA-form body; (message bytes, number of dots unstuffed).

    Refuses (`500 Invalid DATA`) a body that is empty, has a bare CR or LF, does not end
    in CRLF, or has a line that is a lone `.` (which would end DATA early over SMTP).
    A line starting with `.` loses that first dot, as an SMTP server does (RFC 5321 4.5.2).
    """
    if not body.endswith(b"\r\n"):
        raise Refused(INVALID_DATA)
    crlf = body.count(b"\r\n")
    if body.count(b"\r") != crlf or body.count(b"\n") != crlf:
        raise Refused(INVALID_DATA)
    # four passes over a body without line-start dots (armored OpenPGP has none)
    dots = body.count(b"\r\n.")
    lead = body.startswith(b".")
    if not dots and not lead:
        return body, 0
    if body.startswith(b".\r\n") or b"\r\n.\r\n" in body:
        raise Refused(INVALID_DATA)
    if lead:
        return body[1:].replace(b"\r\n.", b"\r\n"), dots + 1
    return body.replace(b"\r\n.", b"\r\n"), dots


def stuff_body(message: bytes) -> bytes:
    """Message bytes -> the request body: CRLF line ends (a bare CR or LF becomes CRLF),
    every line starting with `.` gets one more, and a final CRLF; no final `.` line.

    The inverse of `unstuff_body` for any message with CRLF line ends.
    """
    crlf = message.count(b"\r\n")
    if message.count(b"\r") != crlf or message.count(b"\n") != crlf:
        message = message.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")
    stuffed = message.replace(b"\r\n.", b"\r\n..")
    if stuffed.startswith(b"."):
        stuffed = b"." + stuffed
    if not stuffed.endswith(b"\r\n"):
        stuffed += b"\r\n"
    return stuffed


def request_headers(mail_from: str, rcpt_tos: Iterable[str]) -> list[tuple[str, str]]:
    """The envelope headers of a request, in order (a multi-dict's items)."""
    headers = [(HEADER_MAIL_FROM, mail_from)]
    headers.extend((HEADER_RCPT_TO, rcpt) for rcpt in rcpt_tos)
    return headers


def http_reply(code: int, text: str) -> tuple[int, str]:
    """(status, body) for the SMTP reply a delivery ended with: 250 -> 200 `250 OK`,
    anything else -> 400 and the reply on one line."""
    if code == 250:
        return OK_STATUS, OK_TEXT
    return REFUSED_STATUS, smtp_line(code, text)


def smtp_line(code: int, text: str) -> str:
    """An SMTP reply as one printable line (a multi-line reply's lines joined by blanks)."""
    line = " ".join(part.strip() for part in text.splitlines() if part.strip())
    if not line.isprintable():
        line = "".join(c if c.isprintable() else "?" for c in line)
    return f"{code} {line}".rstrip()


def is_delivered(status: int) -> bool:
    """For the sender: any 2xx answer means the receiving relay took the message."""
    return 200 <= status < 300
