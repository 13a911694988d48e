"""Postfix and Dovecot configuration of a chatmail relay, rendered from chatmail.ini.

`render_relay(config, layout)` is pure: it returns {absolute path: file text} and writes
nothing. The same templates serve a production server (`production_layout`, the paths of a
Debian relay) and a private test relay under one directory (`local_layout`).
"""

import dataclasses
import sys
from importlib import resources
from pathlib import Path

from chatmaild.housekeeping.credentials import uses_self_signed_cert
from chatmaild.render import options
from chatmaild.render.nginx import render_nginx
from chatmaild.render.opendkim import (
    DkimLayout,
    local_dkim_layout,
    production_dkim_layout,
    render_opendkim,
)
from chatmaild.render.templating import substitute, template
from chatmaild.render.weblayout import WebLayout, local_web_layout, production_web_layout
from chatmaild.turn.coturn import (
    TurnLayout,
    local_turn_layout,
    production_turn_layout,
    render_turnserver_conf,
)

# Rendered file (relative to its config dir) -> template (relative to templates/).
# The map files carry a .cf suffix in the package so that they are package data.
POSTFIX_FILES = {
    "main.cf": "postfix/main.cf",
    "master.cf": "postfix/master.cf",
    "login_map": "postfix/login_map.cf",
    "submission_header_cleanup": "postfix/submission_header_cleanup.cf",
}
ADMIN_ALIASES = "admin_aliases"  # Postfix virtual_alias_maps (texthash: no postmap)
ADMIN_USERS = "admin-users"  # Dovecot passwd-file userdb of the admin mailbox
# RFC 2142 role addresses of the relay's domain, delivered to admin_contact
ROLE_LOCAL_PARTS = ("postmaster", "abuse", "root")
DOVECOT_FILES = {
    "dovecot.conf": "dovecot/dovecot.conf",
    "auth.conf": "dovecot/auth.conf",
}
PUSH_SCRIPT = ("chatmaild.metadata", "push_notification.lua")
# chatmail-quota-expire trims to this share of the quota, as chatmail-expire does.
QUOTA_TRIM_RATIO = 0.7
CHECKPASSWORD_WRAPPER = "checkpassword"
LMTP_PUSH_PLUGINS = "mail_lua notify push_notification push_notification_lua"


@dataclasses.dataclass(frozen=True)
class Layout:
    """Where one relay's files, directories and sockets live, and its instance knobs."""

    postfix_config_dir: Path
    postfix_queue_dir: Path
    postfix_data_dir: Path
    dovecot_config_dir: Path
    tls_cert: Path
    tls_key: Path
    doveauth_socket: Path
    metadata_socket: Path
    lastlogin_socket: Path
    # None: push notifications are not wired (the Lua script is not installed).
    push_notification_lua: Path | None
    # Private instance settings; None means the system default (syslog, /run/dovecot, ...).
    postfix_log: Path | None = None
    dovecot_base_dir: Path | None = None
    dovecot_state_dir: Path | None = None
    dovecot_log: Path | None = None
    dovecot_instance_name: str | None = None
    chroot: bool = True
    inet_interfaces: str = "all"
    inet_protocols: str = "all"
    mynetworks: str = "127.0.0.0/8 [::ffff:127.0.0.0]/104 [::1]/128"
    dovecot_listen: str = "*, ::"
    alias_maps: str = "hash:/etc/aliases"
    # OpenDKIM, the milter that signs outgoing mail and bounces; None: no signing.
    dkim: DkimLayout | None = None
    first_valid_uid: int = 500
    default_client_limit: int = 20000
    imap_login_min_avail: int = 10
    # Dovecot's quota_warning script: trims a mailbox that reached 90% of its quota to 70%
    quota_expire_command: Path = Path("/usr/local/lib/chatmaild/venv/bin/chatmail-quota-expire")
    # nginx and the web root (weblayout.py); None: no web front rendered
    web: WebLayout | None = None
    # A private CA the SMTP client trusts besides /etc/ssl/certs (test relays that deliver
    # to each other with smtp_tls_security_level = verify); None for none.
    smtp_tls_ca_file: Path | None = None
    # The checkpassword program of the second passdb (account creation on a first login,
    # chatmaild.doveauth.checkpassword); Dovecot appends the doveauth socket's path.
    checkpassword_command: str = (
        "/usr/local/lib/chatmaild/venv/bin/python3 -m chatmaild.doveauth.checkpassword"
    )
    # coturn's turnserver.conf (chatmaild.turn.coturn); None: no TURN server rendered
    turn: TurnLayout | None = None


def production_layout(config, push=True):
    """The paths of a Debian chatmail relay (as deployed by chatmail's cmdeploy)."""
    ipv4_only = config.disable_ipv6
    acme = Path("/var/lib/acme/live") / config.mail_domain
    cert, key = config.tls_external_cert_and_key or (acme / "fullchain", acme / "privkey")
    return Layout(
        postfix_config_dir=Path("/etc/postfix"),
        postfix_queue_dir=Path("/var/spool/postfix"),
        postfix_data_dir=Path("/var/lib/postfix"),
        dovecot_config_dir=Path("/etc/dovecot"),
        tls_cert=cert,
        tls_key=key,
        doveauth_socket=Path("/run/doveauth/doveauth.socket"),
        metadata_socket=Path("/run/chatmail-metadata/metadata.socket"),
        lastlogin_socket=Path("/run/chatmail-lastlogin/lastlogin.socket"),
        push_notification_lua=Path("/etc/dovecot/push_notification.lua") if push else None,
        inet_protocols="ipv4" if ipv4_only else "all",
        mynetworks="127.0.0.0/8" if ipv4_only else Layout.mynetworks,
        dovecot_listen="*" if ipv4_only else Layout.dovecot_listen,
        dkim=production_dkim_layout(),
        web=production_web_layout(config, self_signed=uses_self_signed_cert(config)),
        turn=production_turn_layout(),
    )


def local_layout(state_dir, push=True, first_valid_uid=500, self_signed=True, address=None):
    """A private relay instance with every file, socket and log under `state_dir`.

    Loopback only, no chroot, no syslog, no aliases, small Dovecot process pools; its own
    OpenDKIM (configuration and key under `state_dir`, socket in the private queue).
    `self_signed`: the certificate is not from a CA (the web front then answers GET /new
    instead of redirecting to dcaccount:). `address`: an IP-only relay's own address, listened
    on besides 127.0.0.1 (its clients connect to it).
    """
    s = Path(state_dir)
    listen = "127.0.0.1" if address is None else f"127.0.0.1, {address}"
    return Layout(
        postfix_config_dir=s / "postfix",
        postfix_queue_dir=s / "spool",
        postfix_data_dir=s / "postfix-data",
        dovecot_config_dir=s / "dovecot",
        tls_cert=s / "tls" / "cert.pem",
        tls_key=s / "tls" / "key.pem",
        doveauth_socket=s / "run" / "doveauth" / "doveauth.socket",
        metadata_socket=s / "run" / "chatmail-metadata" / "metadata.socket",
        lastlogin_socket=s / "run" / "chatmail-lastlogin" / "lastlogin.socket",
        push_notification_lua=(s / "dovecot" / "push_notification.lua") if push else None,
        postfix_log=s / "log" / "postfix.log",
        dovecot_base_dir=s / "dovecot-run",
        dovecot_state_dir=s / "dovecot-state",
        dovecot_log=s / "log" / "dovecot.log",
        dovecot_instance_name="chatmaild-" + s.name,
        chroot=False,
        inet_interfaces=listen,
        inet_protocols="ipv4",
        mynetworks="127.0.0.0/8",
        dovecot_listen=listen,
        alias_maps="",
        dkim=local_dkim_layout(s, s / "spool"),
        first_valid_uid=first_valid_uid,
        default_client_limit=1000,
        imap_login_min_avail=1,
        quota_expire_command=Path(sys.executable).parent / "chatmail-quota-expire",
        web=local_web_layout(s, self_signed=self_signed, address=address),
        # a wrapper written by `relay up` (instance.py): the interpreter vmail can run
        checkpassword_command=str(s / "dovecot" / CHECKPASSWORD_WRAPPER),
        turn=local_turn_layout(s),
    )


def _postfix_instance(layout):
    if layout.postfix_log is None:
        return ""
    return "\n".join(
        [
            "# Private instance: everything under one directory, logs to a file.",
            f"queue_directory = {layout.postfix_queue_dir}",
            f"data_directory = {layout.postfix_data_dir}",
            f"maillog_file = {layout.postfix_log}",
            f"maillog_file_prefixes = {layout.postfix_log.parent}",
            *([f"smtp_tls_CAfile = {layout.smtp_tls_ca_file}"] if layout.smtp_tls_ca_file else []),
            "",
        ]
    )


def _dovecot_instance(layout):
    lines = []
    if layout.dovecot_instance_name:
        lines.append("# Private instance: everything under one directory, logs to a file.")
        lines.append(f"instance_name = {layout.dovecot_instance_name}")
    if layout.dovecot_base_dir:
        lines.append(f"base_dir = {layout.dovecot_base_dir}")
    if layout.dovecot_state_dir:
        lines.append(f"state_dir = {layout.dovecot_state_dir}")
    if layout.dovecot_log:
        lines.append(f"log_path = {layout.dovecot_log}")
    return "\n".join(lines) + "\n" if lines else ""


def admin_uri(config):
    """The /shared/admin METADATA value: mailto: for an address, a URL as it is."""
    contact = config.admin_contact
    return contact if contact.startswith("https://") else f"mailto:{contact}"


def admin_mailbox(config):
    """The admin contact when it is an address on the relay itself (it gets a mailbox of its
    own, not a chatmail account: no password, no login), else None."""
    contact = config.admin_contact
    if contact.startswith("https://"):
        return None
    local, _, domain = contact.rpartition("@")
    return contact if domain.lower() == config.address_domain.lower() else None


def admin_aliases(config):
    """{role address on the relay: admin contact} (none when the contact is a URL)."""
    contact = config.admin_contact
    if contact.startswith("https://"):
        return {}
    roles = (f"{part}@{config.address_domain}" for part in ROLE_LOCAL_PARTS)
    return {role: contact for role in roles if role.lower() != contact.lower()}


def _admin_userdb(config, layout):
    if admin_mailbox(config) is None:
        return "# admin_contact is not on this relay: no admin mailbox"
    return "\n".join(
        [
            "# The mailbox of admin_contact (not an account: no passdb entry, no login).",
            "userdb {",
            "  driver = passwd-file",
            f"  args = {layout.dovecot_config_dir / ADMIN_USERS}",
            "}",
        ]
    )


def template_values(config, layout):
    """Every placeholder value of the templates, as strings."""
    push = layout.push_notification_lua
    smtp_maxproc, smtp_client_limit = options.smtp_limits(config)
    return {
        "mail_domain": config.mail_domain,
        "address_domain": config.address_domain,
        "myhostname": options.postfix_myhostname(config),
        "delivery": options.postfix_delivery(config),
        "admin_uri": admin_uri(config),
        "admin_userdb": _admin_userdb(config, layout),
        "admin_aliases": layout.postfix_config_dir / ADMIN_ALIASES,
        "max_message_size": config.max_message_size,
        "max_mailbox_size_mb": config.max_mailbox_size_mb,
        "quota_target_mb": int(config.max_mailbox_size_mb * QUOTA_TRIM_RATIO),
        "quota_expire_command": layout.quota_expire_command,
        "mailboxes_dir": config.mailboxes_dir,
        "filtermail_smtp_port": config.filtermail_smtp_port,
        "filtermail_smtp_port_incoming": config.filtermail_smtp_port_incoming,
        "postfix_reinject_port": config.postfix_reinject_port,
        "postfix_reinject_port_incoming": config.postfix_reinject_port_incoming,
        "filtermail_lmtp_port_transport": config.filtermail_lmtp_port_transport,
        "postfix_config_dir": layout.postfix_config_dir,
        "postfix_queue_dir": layout.postfix_queue_dir,
        "dovecot_config_dir": layout.dovecot_config_dir,
        "tls_cert": layout.tls_cert,
        "tls_key": layout.tls_key,
        "doveauth_socket": layout.doveauth_socket,
        "checkpassword_command": layout.checkpassword_command,
        "creatable_users": options.creatable_users(config),
        "metadata_socket": layout.metadata_socket,
        "lastlogin_socket": layout.lastlogin_socket,
        "chroot": "y" if layout.chroot else "n",
        "inet_interfaces": layout.inet_interfaces,
        "inet_protocols": layout.inet_protocols,
        "mynetworks": layout.mynetworks,
        "alias_maps": layout.alias_maps,
        "dovecot_listen": layout.dovecot_listen,
        "first_valid_uid": layout.first_valid_uid,
        "default_client_limit": layout.default_client_limit,
        "imap_process_limit": config.max_imap_connections,
        "imap_login_min_avail": layout.imap_login_min_avail,
        "smtp_maxproc": smtp_maxproc,
        "smtp_client_limit": smtp_client_limit,
        "reinject_milter": options.reinject_milter(config, layout),
        "dkim_main": options.postfix_dkim_main(config, layout),
        "imap_plugins": options.imap_plugins(config),
        "imap_rawlog": options.imap_rawlog(config),
        "imap_compress_or_hibernate": options.imap_compress_or_hibernate(config),
        "lmtp_push_plugins": LMTP_PUSH_PLUGINS if push else "",
        "push_notification_driver": (
            f"push_notification_driver = lua:file={push}"
            if push
            else "# push notifications disabled: no push_notification.lua installed"
        ),
        "instance_main": _postfix_instance(layout),
        "instance_dovecot": _dovecot_instance(layout),
    }


def push_script_text():
    """The Lua push script shipped by chatmaild.metadata, or None while it is missing."""
    package, name = PUSH_SCRIPT
    try:
        path = resources.files(package).joinpath(name)
        return path.read_text() if path.is_file() else None
    except ModuleNotFoundError:
        return None


def render_relay(config, layout):
    """{absolute path: text} of every Postfix, Dovecot, OpenDKIM and nginx file of the relay."""
    values = template_values(config, layout)
    files = {}
    for out, tpl in POSTFIX_FILES.items():
        files[layout.postfix_config_dir / out] = substitute(template(tpl), values)
    for out, tpl in DOVECOT_FILES.items():
        files[layout.dovecot_config_dir / out] = substitute(template(tpl), values)
    if layout.push_notification_lua is not None:
        script = push_script_text()
        if script is None:
            raise FileNotFoundError("push_notification.lua is not installed (chatmaild.metadata)")
        files[layout.push_notification_lua] = script
    aliases = admin_aliases(config)
    files[layout.postfix_config_dir / ADMIN_ALIASES] = "".join(
        f"{role} {target}\n" for role, target in aliases.items()
    )
    mailbox = admin_mailbox(config)
    if mailbox is not None:
        home = config.mailboxes_dir / mailbox
        files[layout.dovecot_config_dir / ADMIN_USERS] = f"{mailbox}::vmail:vmail::{home}::\n"
    if layout.turn is not None:
        files[layout.turn.conf] = render_turnserver_conf(config, layout.turn)
    files.update(render_opendkim(config, layout.dkim))
    files.update(render_nginx(config, layout))
    return files
