"""chatmail.ini switches that add, drop or size whole blocks of the Postfix and Dovecot
configuration. Pure: each function returns template text; render.py places it.
"""

import ipaddress

from chatmaild.render.opendkim import ORIGINATING, postfix_milter, signing_layout

# Share of max_smtp_connections one client address may hold (upstream: a fifth).
SMTP_CLIENT_SHARE = 5


def smtp_limits(config):
    """(maxproc of submission/smtps, smtpd_client_connection_count_limit on them)."""
    total = config.max_smtp_connections
    per_client = max(1, total // SMTP_CLIENT_SHARE) if total else 0
    return total, per_client


def postfix_myhostname(config):
    """Postfix refuses an IP address as myhostname: an IP-only relay takes its reverse
    name (7.8.9.10.in-addr.arpa), as upstream does; the address literal stays the mail
    domain."""
    if config.ipv4_relay:
        return ipaddress.IPv4Address(config.mail_domain).reverse_pointer
    return config.mail_domain


def postfix_delivery(config):
    """main.cf: which domain Postfix hands to Dovecot over LMTP, and how."""
    if config.ipv4_relay:
        return "\n".join(
            [
                "# IP-only relay: an address literal cannot be a virtual mailbox domain, so",
                "# [address] is a local destination whose mail goes to Dovecot over LMTP;",
                "# local parts are not checked here (doveauth decides at the first login).",
                f"mydestination = {config.address_domain}",
                "local_transport = lmtp:unix:private/dovecot-lmtp",
                "local_recipient_maps =",
            ]
        )
    return "\n".join(
        [
            "# Postfix delivers nothing itself: the mail domain is a virtual mailbox domain",
            "# handed to Dovecot over LMTP.",
            "mydestination =",
            f"virtual_mailbox_domains = {config.mail_domain}",
            "virtual_transport = lmtp:unix:private/dovecot-lmtp",
        ]
    )


def dkim_milter(config, layout):
    """Postfix's milter spec of OpenDKIM, or "" when the relay does not sign."""
    dkim = signing_layout(config, layout.dkim)
    return "" if dkim is None else postfix_milter(dkim, layout.postfix_queue_dir)


def reinject_milter(config, layout):
    """master.cf lines of the outgoing reinjection smtpd that make OpenDKIM sign."""
    milter = dkim_milter(config, layout)
    if not milter:
        return "#  (this relay does not DKIM-sign: no milter)"
    return f"  -o smtpd_milters={milter}"


def postfix_dkim_main(config, layout):
    """main.cf: Postfix's own bounces pass OpenDKIM too; without the milter, mail waits."""
    milter = dkim_milter(config, layout)
    if not milter:
        return "# This relay does not DKIM-sign (IP-only relay): no milters.\n"
    return "\n".join(
        [
            "# DKIM: OpenDKIM signs the outgoing reinjection (master.cf) and the bounces",
            "# Postfix generates itself (non-SMTP mail, presented to OpenDKIM as originating).",
            f"non_smtpd_milters = {milter}",
            "internal_mail_filter_classes = bounce",
            f"milter_macro_daemon_name = {ORIGINATING}",
            "# OpenDKIM down or failing: answer 4xx / keep the bounce queued, never send",
            "# unsigned mail (receivers reject it).",
            "milter_default_action = tempfail",
            "",
        ]
    )


def imap_plugins(config):
    """Extra plugins of `protocol imap`: imap_zlib offers COMPRESS=DEFLATE (RFC 4978)."""
    return " imap_zlib" if config.imap_compress else ""


RAWLOG = """\
# imap_rawlog: every IMAP session is logged to <home>/*.in and *.out (debugging only;
# nothing removes these files).
service postlogin {
  executable = script-login -d rawlog
  unix_listener postlogin {
  }
}
service imap {
  executable = imap postlogin
}
protocol imap {
  rawlog_dir = %h
}
"""

HIBERNATE = """\
# Hibernate IDLE users to save memory (impossible with COMPRESS, see imap_compress).
imap_hibernate_timeout = 30s
service imap {
  unix_listener imap-master {
    user = $default_internal_user
  }
  extra_groups = $default_internal_group
}
service imap-hibernate {
  unix_listener imap-hibernate {
    mode = 0660
    group = $default_internal_group
  }
}
"""


def imap_rawlog(config):
    return RAWLOG if config.imap_rawlog else "# imap_rawlog = false: no IMAP protocol logs\n"


COMPRESS = """\
# imap_compress = true: COMPRESS=DEFLATE (imap_zlib); compressed IMAP sessions cannot
# hibernate, so every IDLE client keeps its imap process.
plugin {
  imap_compress_deflate_level = 6
}
"""


def imap_compress_or_hibernate(config):
    return COMPRESS if config.imap_compress else HIBERNATE


def creatable_users(config):
    """Dovecot `username_filter` of the checkpassword passdb: the addresses whose local part
    has an allowed length in the mail domain (one `?` per character). Logins of any other
    unknown user fail in the dict passdb without starting the checkpassword program."""
    lengths = range(config.username_min_length, config.username_max_length + 1)
    return " ".join("?" * n + "@" + config.address_domain for n in lengths)
