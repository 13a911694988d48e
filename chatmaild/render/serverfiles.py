"""Files only a real server needs besides Postfix, Dovecot, OpenDKIM and nginx (pure).

`render_server_files(config)` returns {absolute path: text}: the local unbound resolver
(filtermail's DKIM lookups and Postfix's MX lookups go through it), `/etc/resolv.conf`
pointing at it, rsyslog's feed of the mail log to chatmail-logmetrics, and `/etc/mailname`.
A private test relay has its own resolver and log files, so `relay up` renders none of this.
"""

from pathlib import Path

UNBOUND_CONF = Path("/etc/unbound/unbound.conf.d/chatmail.conf")
RESOLV_CONF = Path("/etc/resolv.conf")
RSYSLOG_CONF = Path("/etc/rsyslog.d/chatmail-logmetrics.conf")
MAILNAME = Path("/etc/mailname")
# chatmail-logmetrics.service listens here (--udp 127.0.0.1:3904).
LOGMETRICS_UDP = ("127.0.0.1", 3904)
# Programs whose log lines chatmail-logmetrics counts besides the mail facility's
# (Postfix, Dovecot, OpenDKIM): our daemons log to the journal under their own names.
LOGMETRICS_PROGRAMS = ("filtermail", "doveauth", "lastlogin", "chatmail-")


def unbound_conf(config):
    lines = [
        f"# Local resolver of the chatmail relay {config.mail_domain}, rendered by chatmaild.",
        "# Postfix (MX, MTA-STS) and filtermail (DKIM keys) resolve through it, DNSSEC-validated",
        "# by Debian's root trust anchor (unbound.conf.d/root-auto-trust-anchor-file.conf).",
        "server:",
        "    interface: 127.0.0.1",
        *([] if config.disable_ipv6 else ["    interface: ::1"]),
        "    access-control: 127.0.0.0/8 allow",
        *([] if config.disable_ipv6 else ["    access-control: ::1/128 allow"]),
        *(["    do-ip6: no"] if config.disable_ipv6 else []),
        "    prefetch: yes",
        "    qname-minimisation: yes",
        "    hide-identity: yes",
        "    hide-version: yes",
    ]
    return "\n".join(lines) + "\n"


def resolv_conf(config):
    return (
        "# The relay's own resolver (unbound on loopback), rendered by chatmaild.\n"
        "nameserver 127.0.0.1\n"
        "options edns0 trust-ad\n"
    )


def rsyslog_conf(config):
    host, port = LOGMETRICS_UDP
    # (a `$` inside a RainerScript string starts a variable: no regex here)
    programs = ", ".join(f'"{name}"' for name in LOGMETRICS_PROGRAMS)
    return "\n".join(
        [
            "# The mail log and our daemons' lines to chatmail-logmetrics (UDP, RFC 3164),",
            "# rendered by chatmaild; docs/metrics.md.",
            f'if $syslogfacility-text == "mail" or $programname startswith [{programs}] then {{',
            f'    action(type="omfwd" target="{host}" port="{port}" protocol="udp"',
            '           queue.type="LinkedList" queue.size="10000" action.resumeRetryCount="-1")',
            "}",
            "",
        ]
    )


def render_server_files(config):
    """{absolute path: text} of the server-only files (none of them is secret)."""
    return {
        UNBOUND_CONF: unbound_conf(config),
        RESOLV_CONF: resolv_conf(config),
        RSYSLOG_CONF: rsyslog_conf(config),
        MAILNAME: config.mail_domain + "\n",
    }
