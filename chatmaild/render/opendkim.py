"""OpenDKIM for a chatmail relay: where its files live, what they say, and the DNS record.

Pure: `render_opendkim(config, dkim)` returns {path: text} and writes nothing; the DNS
record is computed from key bytes. Every mail the relay sends is signed by Debian's OpenDKIM
as a Postfix milter: the outgoing reinjection smtpd (after filtermail, `master.cf`) and
Postfix's own bounces (`non_smtpd_milters`, `main.cf`). An IP-only relay signs nothing: it
has no domain to sign for and no DNS to publish a key in (`signing_layout`).
"""

import base64
import dataclasses
from pathlib import Path

from chatmaild.render.dnsrecords import dkim_txt, txt_strings

SELECTOR = "opendkim"
KEY_BITS = 2048
USER = "opendkim"
# RFC 6376's default header list, plus Autocrypt and Content-Type.
SIGN_HEADERS = "*,+autocrypt,+content-type"
# Headers signed once more than they occur, so that nobody can add one after signing
# (a second From, Subject or Autocrypt header would otherwise still verify).
OVERSIGN_HEADERS = (
    "from",
    "reply-to",
    "subject",
    "date",
    "to",
    "cc",
    "resent-date",
    "resent-from",
    "resent-sender",
    "resent-to",
    "resent-cc",
    "in-reply-to",
    "references",
    "list-id",
    "list-help",
    "list-unsubscribe",
    "list-subscribe",
    "list-post",
    "list-owner",
    "list-archive",
    "autocrypt",
)
# The name the reinjection smtpd gives itself (milter_macro_daemon_name in master.cf):
# OpenDKIM signs mail from that MTA and only verifies everything else.
ORIGINATING = "ORIGINATING"
# A DNS TXT character-string holds at most 255 bytes; longer values are split.


@dataclasses.dataclass(frozen=True)
class DkimLayout:
    """Where OpenDKIM's configuration, key, socket and pid file live."""

    config_file: Path
    keys_dir: Path
    socket: Path
    pid_file: Path
    # Where its syslog(3) messages go: None for the system's /dev/log; the local relay
    # binds this socket over /dev/log for OpenDKIM (chatmaild.relay.syslogsink).
    syslog_socket: Path | None = None
    # OpenDKIM refuses a key below a directory others can write (such as /tmp, where
    # test relays live); a server keeps that check.
    require_safe_keys: bool = True

    @property
    def key_file(self):
        return self.keys_dir / f"{SELECTOR}.private"

    @property
    def key_table(self):
        return self.keys_dir / "KeyTable"

    @property
    def signing_table(self):
        return self.keys_dir / "SigningTable"

    @property
    def record_file(self):
        """The DNS record in zone-file form, for the operator (like opendkim-genkey's)."""
        return self.keys_dir / f"{SELECTOR}.txt"


def production_dkim_layout(queue_dir=Path("/var/spool/postfix")):
    """Debian's paths, as chatmail's cmdeploy sets them up."""
    return DkimLayout(
        config_file=Path("/etc/opendkim.conf"),
        keys_dir=Path("/etc/dkimkeys"),
        socket=Path(queue_dir) / "opendkim" / "opendkim.sock",
        pid_file=Path("/run/opendkim/opendkim.pid"),
    )


def local_dkim_layout(state_dir, queue_dir):
    """A private OpenDKIM under `state_dir`; its socket inside the private Postfix queue."""
    s = Path(state_dir)
    return DkimLayout(
        config_file=s / "opendkim" / "opendkim.conf",
        keys_dir=s / "dkimkeys",
        socket=Path(queue_dir) / "opendkim" / "opendkim.sock",
        pid_file=s / "run" / "opendkim" / "opendkim.pid",
        syslog_socket=s / "run" / "syslog" / "opendkim.sock",
        require_safe_keys=False,
    )


def signing_layout(config, dkim):
    """The OpenDKIM layout if this relay signs, else None (IP-only relays sign nothing)."""
    if dkim is None or config.ipv4_relay:
        return None
    return dkim


def postfix_milter(dkim, queue_dir):
    """Postfix's name for the milter socket: relative to the queue directory when it is
    inside it (what chrooted Postfix daemons need), else absolute."""
    try:
        return f"unix:{dkim.socket.relative_to(queue_dir)}"
    except ValueError:
        return f"unix:{dkim.socket}"


def key_name(domain):
    return f"{SELECTOR}._domainkey.{domain}"


def opendkim_conf(domain, dkim):
    lines = [
        f"# OpenDKIM of the chatmail relay {domain}: signs what the relay sends.",
        "# Rendered by `python -m chatmaild.relay` from chatmail.ini; see docs/relay.md.",
        "Syslog\t\t\tyes",
        "SyslogSuccess\t\tyes",
        "",
        "# Signing only: incoming mail is verified by filtermail.",
        "Mode\t\t\ts",
        "Canonicalization\trelaxed/simple",
        f"SignHeaders\t\t{SIGN_HEADERS}",
        f"OversignHeaders\t\t{','.join(OVERSIGN_HEADERS)}",
        f"KeyTable\t\t{dkim.key_table}",
        f"SigningTable\t\trefile:{dkim.signing_table}",
        *([] if dkim.require_safe_keys else ["RequireSafeKeys\t\tno"]),
        "",
        f"# Sign what Postfix presents as {ORIGINATING} (the outgoing reinjection and",
        "# Postfix's own bounces); no host is trusted by its address.",
        f"MTA\t\t\t{ORIGINATING}",
        "InternalHosts\t\t-",
        "",
        "# Postfix (group opendkim) connects to the socket: UMask 007 makes it 0770.",
        f"UserID\t\t\t{USER}",
        "UMask\t\t\t007",
        f"Socket\t\t\tlocal:{dkim.socket}",
        f"PidFile\t\t\t{dkim.pid_file}",
    ]
    return "\n".join(lines) + "\n"


def render_opendkim(config, dkim):
    """{path: text} of opendkim.conf, KeyTable and SigningTable ({} when nothing signs)."""
    dkim = signing_layout(config, dkim)
    if dkim is None:
        return {}
    domain = config.mail_domain
    name = key_name(domain)
    return {
        dkim.config_file: opendkim_conf(domain, dkim),
        dkim.key_table: f"{name} {domain}:{SELECTOR}:{dkim.key_file}\n",
        dkim.signing_table: f"*@{domain} {name}\n",
    }


# -- the DNS record ------------------------------------------------------------------------


def public_key_b64(private_pem):
    """Base64 of the SubjectPublicKeyInfo (DER) of a PEM private key: the record's p=."""
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(private_pem, password=None)
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(der).decode()


def txt_value(private_pem):
    """The TXT record's value for `opendkim._domainkey.DOMAIN`."""
    return dkim_txt(public_key_b64(private_pem))


def genkey_command(domain, dkim):
    """How an operator makes the key on a server (Debian's tool, as cmdeploy runs it)."""
    return (
        f"test -e {dkim.key_file} || opendkim-genkey -b {KEY_BITS} -s {SELECTOR} -d {domain}"
        f" -D {dkim.keys_dir}; chown {USER}: {dkim.key_file}"
    )


def zone_line(domain, value):
    """`NAME. TXT "..." "..."` with the value split into DNS character-strings."""
    return f"{key_name(domain)}. TXT {txt_strings(value)}"
