"""The files nginx serves for a relay, rendered from chatmail.ini. Pure: returns {path: text}.

Paths are relative to the web root: the website (`index.html`, `qr-new.svg`), the MTA-STS
policy and the autoconfig XML that Delta Chat reads after `/new` handed out an address.
"""

import functools
import html
import io
from importlib import resources
from xml.sax.saxutils import escape as xml_escape

import segno

from ..render.templating import substitute

MTA_STS_PATH = ".well-known/mta-sts.txt"
AUTOCONFIG_PATH = ".well-known/autoconfig/mail/config-v1.1.xml"
QR_PATH = "qr-new.svg"
MTA_STS_MAX_AGE = 2419200  # 28 days, as on eijo.im

# (type, port, socketType) in the order clients should try them; 443 goes through nginx's
# ALPN multiplexer to the same Dovecot and Postfix.
IMAP_SERVERS = [(993, "SSL"), (143, "STARTTLS"), (443, "SSL")]
SMTP_SERVERS = [(465, "SSL"), (587, "STARTTLS"), (443, "SSL")]

PRIVACY_LABELS = [
    ("privacy_postal", "Postal address of the operator"),
    ("privacy_mail", "E-mail contact"),
    ("privacy_pdo", "Data protection officer"),
    ("privacy_supervisor", "Supervisory authority"),
]


@functools.cache
def _template(name):
    return resources.files("chatmaild.web").joinpath("templates", name).read_text()


def account_url(config):
    """What a user scans: Delta Chat POSTs to the URL and gets an address and password."""
    return f"dcaccount:https://{config.mail_domain}/new"


def mta_sts_policy(config):
    return f"version: STSv1\nmode: enforce\nmx: {config.mail_domain}\nmax_age: {MTA_STS_MAX_AGE}\n"


def _server_xml(kind, host, port, socket_type):
    tag = "incomingServer" if kind == "imap" else "outgoingServer"
    return (
        f'    <{tag} type="{kind}">\n'
        f"      <hostname>{xml_escape(host)}</hostname>\n"
        f"      <port>{port}</port>\n"
        f"      <socketType>{socket_type}</socketType>\n"
        f"      <authentication>password-cleartext</authentication>\n"
        f"      <username>%EMAILADDRESS%</username>\n"
        f"    </{tag}>"
    )


def autoconfig_xml(config):
    host = config.mail_domain
    servers = [_server_xml("imap", host, p, s) for p, s in IMAP_SERVERS]
    servers += [_server_xml("smtp", host, p, s) for p, s in SMTP_SERVERS]
    return substitute(
        _template("autoconfig.xml"),
        {
            "domain": xml_escape(config.mail_domain),
            "address_domain": xml_escape(config.address_domain),
            "servers": "\n".join(servers),
        },
    )


def qr_svg(text):
    out = io.BytesIO()
    segno.make(text, error="m").save(out, kind="svg", scale=8, border=2, xmldecl=False)
    return out.getvalue().decode()


def _size(n):
    mib = n / 2**20
    return f"{mib:.0f} MiB" if mib >= 1 else f"{n / 1024:.0f} KiB"


def privacy_html(config):
    rows = [
        (label, getattr(config, key).strip())
        for key, label in PRIVACY_LABELS
        if getattr(config, key).strip()
    ]
    if not rows:
        return "<p>The operator of this relay has not published privacy contacts.</p>"
    items = "\n".join(
        f"<dt>{html.escape(label)}</dt><dd><address>{html.escape(value)}</address></dd>"
        for label, value in rows
    )
    return f"<dl>\n{items}\n</dl>"


JOIN = """\
<p>Install Delta Chat, then scan this code with it
(or open the link on the device where Delta Chat is installed).
A new address on {domain} is created for you.</p>
<p class="qr"><a href="{url}"><img src="qr-new.svg" alt="QR code of {url}"></a></p>
<p><a class="join" href="{url}">Get a {domain} profile</a></p>
<p><code>{url}</code></p>"""

JOIN_IP_ONLY = """\
<p>This relay has no domain name, only the address {domain}, and a self-signed certificate:
Delta Chat takes no one-tap link for it. A POST to <code>https://{domain}/new</code> answers a new
address with a <code>dclogin:</code> link (<code>dclogin_url</code>); open or scan that link with
Delta Chat.</p>"""


def join_html(config):
    """The Join section: the dcaccount: link and its QR code, or, on an IP-only relay (which
    Delta Chat's strict TLS cannot take from a dcaccount: link), how to get a dclogin: link."""
    domain = html.escape(config.mail_domain)
    if config.ipv4_relay:
        return JOIN_IP_ONLY.format(domain=domain)
    return JOIN.format(domain=domain, url=html.escape(account_url(config)))


def index_html(config):
    return substitute(
        _template("index.html"),
        {
            "domain": html.escape(config.mail_domain),
            "join": join_html(config),
            "delete_mails_after": config.delete_mails_after,
            "delete_large_after": config.delete_large_after,
            "delete_inactive_users_after": config.delete_inactive_users_after,
            "max_mailbox_size": _size(config.max_mailbox_size),
            "max_message_size": _size(config.max_message_size),
            "privacy": privacy_html(config),
        },
    )


def render_site(config):
    """{path relative to the web root: text} of every generated file."""
    return {
        "index.html": index_html(config),
        QR_PATH: qr_svg(account_url(config)),
        MTA_STS_PATH: mta_sts_policy(config),
        AUTOCONFIG_PATH: autoconfig_xml(config),
    }
