"""The upstream `/mxdeliv` request form (pure): envelope headers and the DATA body.

Headers: one `X-MAIL-FROM` (empty for the null sender) and one `X-MAIL-TO` per recipient,
bare addresses. Body: the message in SMTP DATA wire form: dot-stuffed, CRLF line ends,
ending in CRLF, without the final `.` line.
"""

MXDELIV_PATH = "/mxdeliv"


def dot_stuff(data: bytes) -> bytes:
    """`data` (unstuffed, CRLF lines) as DATA content: a line starting with "." gets one more."""
    if b"\r\n." in data:
        data = data.replace(b"\r\n.", b"\r\n..")
    if data.startswith(b"."):
        data = b"." + data
    if data and not data.endswith(b"\r\n"):
        data += b"\r\n"
    return data


def envelope_headers(mail_from: str, rcpt_tos) -> list[tuple[str, str]]:
    """[(name, value)] of the envelope headers, X-MAIL-FROM first."""
    return [("X-MAIL-FROM", mail_from), *(("X-MAIL-TO", rcpt) for rcpt in rcpt_tos)]


def url(host: str, port: int = 443) -> str:
    """`https://host/mxdeliv` (an IPv6 literal in brackets; the port only when not 443)."""
    name = f"[{host}]" if ":" in host else host
    return f"https://{name}{'' if port == 443 else f':{port}'}{MXDELIV_PATH}"
