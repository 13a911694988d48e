"""The replies the transport gives Postfix, one per recipient (pure).

2xx: delivered (Postfix logs `status=sent` with the text). 4xx: Postfix keeps the recipient
queued and retries. 5xx: Postfix bounces to the sender. A remote SMTP reply is forwarded as
the remote gave it, so a bounce quotes the receiving relay's own words.
"""

import re

from chatmaild.smtp.proto import Reply

BUSY = Reply(421, "4.3.2 Transport busy")
BAD_RECIPIENT = Reply(550, "5.1.3 Bad recipient address syntax")
NO_HOSTS = Reply(451, "4.4.0 No MX host could be reached")

# "550 5.7.1 text", "523 Encryption Needed: ..." (upstream puts the SMTP reply in the body)
_SMTP_REPLY = re.compile(r"\A([245][0-9][0-9])[ -](.*)\Z", re.S)
MAX_TEXT = 400


def delivered_https(host: str) -> Reply:
    return Reply(250, f"2.0.0 OK (HTTPS {host})")


def smtp_reply(host: str, code: int, text: str) -> Reply:
    """A remote SMTP reply as the recipient's; 2xx says it went over SMTP."""
    text = _one_line(text)
    if 200 <= code < 300:
        return Reply(250, f"2.0.0 OK (SMTP {host}: {code} {text})")
    return Reply(code, text or f"{code // 100}.0.0 remote error")


def too_slow(seconds: float) -> Reply:
    return Reply(451, f"4.4.7 Delivery not finished within {seconds:.0f} s, try again later")


def unreachable(host: str, port: int, why: str) -> Reply:
    return Reply(451, f"4.4.1 connect to {host}:{port}: {_one_line(why)}")


def https_reported(body: str) -> Reply | None:
    """The SMTP reply in a refused `/mxdeliv` answer (4xx or 5xx only), or None."""
    m = _SMTP_REPLY.match(_one_line(body))
    if m is None or m.group(1)[0] == "2":
        return None
    return Reply(int(m.group(1)), m.group(2) or f"{m.group(1)[0]}.0.0 refused")


def https_failure_text(status: int | None, body: str, error: str | None) -> str:
    """Why an HTTPS attempt did not deliver, for logs and deferral texts."""
    if error is not None:
        return _one_line(error)
    return f"HTTP {status} {_one_line(body)}".rstrip()


def final_reply(last_reply: Reply | None, https_refusal: Reply | None) -> Reply:
    """When no host delivered: what the receiving relay said over HTTPS (its 5xx bounces
    the mail now, even when its port 25 cannot be reached), else the last temporary
    failure."""
    if https_refusal is not None:
        return https_refusal
    return last_reply or NO_HOSTS


def _one_line(text: str) -> str:
    text = " ".join(str(text).split())
    return text[:MAX_TEXT]
