"""The `/mxdeliv` request the transport sends: upstream's form, from the one codec both
directions share (chatmaild.filtermail.mxdeliv: envelope headers, dot-stuffed DATA body,
"any 2xx is delivered"), and the URL of an MX host."""

from chatmaild.filtermail.mxdeliv import PATH, is_delivered, request_headers, stuff_body

__all__ = ["is_delivered", "request_headers", "stuff_body", "url"]


def url(host: str, port: int = 443) -> str:
    """`https://host/mxdeliv` (an IPv6 literal in brackets; the port only when not 443)."""
    name = f"[{host}]" if ":" in host else host
    return f"https://{name}{'' if port == 443 else f':{port}'}{PATH}"
