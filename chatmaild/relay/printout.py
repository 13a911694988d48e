"""The text `relay up` prints for a person: where the relay runs, how Delta Chat onboards
(one tap or by hand), the web front, metrics, DKIM, TURN, the iroh relay and how to stop it.
"""

from chatmaild.render.opendkim import zone_line

IMAP_PORT = 993  # what the relay's Dovecot listens on for IMAP over TLS


def _onboarding_text(relay, curl):
    c = relay.config
    url = relay.one_tap_url()
    if url is None:
        why = "an IP address" if c.ipv4_relay else f"{c.mail_domain} has no `_` in front"
        return (
            f"One tap: Delta Chat takes no dcaccount: URL here ({why}, and the certificate\n"
            "  is not from a public CA). A new account as a dclogin: URL instead (open it in\n"
            f"  Delta Chat): {curl} -X POST https://{c.mail_domain}/new  (its dclogin_url)"
        )
    if relay.netns:
        where = (
            f"  Delta Chat must run in the namespace, where {c.mail_domain} is 127.0.0.1:\n"
            f"  `ip netns exec {relay.netns} deltachat-desktop` (or deltachat-rpc-server)."
        )
    else:
        where = (
            f"  Delta Chat must resolve {c.mail_domain} to 127.0.0.1: add\n"
            f"  `127.0.0.1 {c.mail_domain}` to its /etc/hosts (nothing here edits it),"
            " or run\n  the relay in a namespace (--netns NAME)."
        )
    return (
        "One tap in Delta Chat (2.65 tested): open or scan\n"
        f"  {url}\n"
        f"{where}\n"
        "  It POSTs to /new and logs in with the address it gets. The `_` makes Delta Chat\n"
        "  accept the self-signed certificate (the name on it is still checked)."
    )


def client_info(relay):
    """What `relay up` prints: how to reach the relay, onboard, watch and stop it."""
    c = relay.config
    local = ("relaytest" * 4)[: c.username_max_length]
    example = f"{local}@{c.address_domain}"
    lengths = (
        str(c.username_min_length)
        if c.username_min_length == c.username_max_length
        else f"{c.username_min_length}-{c.username_max_length}"
    )
    if c.ipv4_relay:
        host = c.mail_domain
    else:
        host = f"{c.mail_domain} (mapped to 127.0.0.1 there)" if relay.netns else "127.0.0.1"
    where = (
        f"inside network namespace {relay.netns}"
        f" (run clients with `ip netns exec {relay.netns} ...`)"
        if relay.netns
        else "on this machine's loopback (127.0.0.1)"
    )
    urls = relay.metrics_urls()
    metrics = ""
    if urls:
        width = max(map(len, urls))
        metrics = "\n\nPrometheus metrics (GET /metrics):"
        http = [u for u in urls.values() if u.startswith("http")]
        if http:
            run = f"ip netns exec {relay.netns} curl -s" if relay.netns else "curl -s"
            metrics = f"\n\nPrometheus metrics (e.g. `{run} {http[0]}`):"
        for name, url in urls.items():
            metrics += f"\n  {name:{width}}  {url}"
    # inside the namespace the hosts file maps the domain; on the machine's own loopback
    # nothing does, so curl is told where it lives
    curl = (
        f"ip netns exec {relay.netns} curl -k"
        if relay.netns
        else f"curl -k --resolve {c.mail_domain}:443:127.0.0.1"
    )
    dkim = ""
    if relay.dkim_record:
        dkim = (
            f"\n\nDKIM: OpenDKIM signs outgoing mail and bounces with {relay.dkim.key_file};"
            f"\nthe DNS record to publish:\n  {zone_line(c.mail_domain, relay.dkim_record)}"
        )
    elif c.ipv4_relay:
        dkim = "\n\nDKIM: an IP-only relay signs nothing (no OpenDKIM)."
    turn = ""
    if relay.layout.turn is not None:
        low, high = c.turn_relay_ports
        turn = (
            f"\n\nTURN (calls): coturn on {c.mail_domain}:{c.turn_port} (UDP/TCP), relaying"
            f" UDP {low}-{high}; credentials from chatmail-turn on {c.turn_socket_path}"
            f"\n  /shared/admin: {c.admin_contact}"
        )
    iroh = ""
    if c.iroh_relay_listen and "iroh-relay" not in relay.skipped:
        advertised = c.iroh_relay or "(nothing: iroh_relay is empty)"
        iroh = (
            f"\n\niroh relay (webxdc realtime): chatmail-iroh-relay on {c.iroh_relay_listen},"
            f"\n  advertised to Delta Chat as {advertised}"
        )
        if c.iroh_relay.startswith("https://"):
            iroh += (
                "\n  (Delta Chat accepts only publicly trusted certificates there; for a"
                "\n  local test set iroh_relay = http://127.0.0.1:3340 in the ini)"
            )
    skipped = (
        f"\nNot running (not in this checkout yet): {', '.join(relay.skipped)}"
        if relay.skipped
        else ""
    )
    return f"""\
Chatmail relay for {c.mail_domain} is up {where}.
State, logs and mailboxes: {relay.state_dir} (config {relay.config_path})

{_onboarding_text(relay, curl)}

Or by hand (advanced login settings):
  address    e.g. {example}
             (any new address, local part of {lengths} characters [a-z0-9];
             the account is created at the first login)
  password   any password of at least {c.password_min_length} characters
  IMAP       server {host}, port {IMAP_PORT}, SSL/TLS
  SMTP       server {host}, port 465 SSL/TLS (or 587 STARTTLS)
  certificate checks: accept invalid certificates (the certificate is self-signed)
  port 25 takes mail from other servers (STARTTLS required)

Web front (nginx): https://{c.mail_domain}/ (website, autoconfig, MTA-STS);
  a new account: {curl} -X POST https://{c.mail_domain}/new
  port 443 also carries IMAP and SMTP for clients that offer ALPN imap/smtp\
{iroh}{metrics}{dkim}{turn}{skipped}

Stop it with: {relay.stop_command()}"""
