"""Our daemons as the relay runs them: command line and what "ready" means for each."""

import dataclasses
import importlib.util
from pathlib import Path

from chatmaild.metrics.exporter import parse_listen_spec
from chatmaild.render.opendkim import signing_layout

# chatmail-logmetrics' own default (mtail's address), when the ini sets no metrics_logmetrics
LOGMETRICS_DEFAULT_LISTEN = "127.0.0.1:3903"
OPENDKIM_LOG = "opendkim.log"
# RLIMIT_NOFILE of every daemon, soft and hard: LimitNOFILE= of the systemd units, and what
# `relay up` gives its daemons. Every connection is a descriptor: 10,000 idle connections
# leave room for the real traffic. (Inside systemd-nspawn and some containers the hard limit
# cannot go above the host's, often 20000; docs/systemd.md.)
LIMIT_NOFILE = 20000
TURN_USER = "turnserver"  # Debian's coturn user


@dataclasses.dataclass(frozen=True)
class Daemon:
    name: str
    module: str
    args: tuple  # command-line arguments after `python -m module`
    socket: Path | None = None  # ready when this unix socket accepts connections
    port: int | None = None  # ready when 127.0.0.1:port accepts connections
    metrics: str = ""  # listen spec of its Prometheus endpoint ("" = off)
    user: str = "vmail"  # the user it runs as
    env: tuple = ()  # (name, value) pairs added to its environment

    def available(self):
        """Whether this checkout has the daemon (packages land one by one)."""
        try:
            return importlib.util.find_spec(self.module + ".__main__") is not None
        except ModuleNotFoundError:
            return False


def transport_env(layout):
    """The transport verifies HTTPS and SMTP certificates against the system roots; a test
    network's relays (smtp_tls_ca_file) trust their CA instead, as their Postfix does."""
    if layout.smtp_tls_ca_file is None:
        return ()
    return (("SSL_CERT_FILE", str(layout.smtp_tls_ca_file)),)


def _iroh_relay(config, ini):
    """chatmail-iroh-relay at iroh_relay_listen (nginx proxies /relay, /ping and
    /generate_204 to it); none when that key is empty."""
    listen = parse_listen_spec(config.iroh_relay_listen)
    if listen is None:
        return None
    ready = {"socket": listen.path} if listen.path is not None else {"port": listen.port}
    return Daemon(
        "iroh-relay", "chatmaild.irohrelay", (ini,), metrics=config.metrics_irohrelay, **ready
    )


def relay_daemons(config, layout, log_dir=None):
    """The daemons of a relay, in start order (dict services before the filters).

    With `log_dir` (the local relay, whose logs are files there), chatmail-logmetrics comes
    first and follows the Postfix and Dovecot log files and every other daemon's log.
    """
    ini = str(config.path)
    daemons = [
        Daemon(
            "doveauth",
            "chatmaild.doveauth",
            (str(layout.doveauth_socket), ini),
            socket=layout.doveauth_socket,
            metrics=config.metrics_doveauth,
        ),
        Daemon(
            "lastlogin",
            "chatmaild.lastlogin",
            (str(layout.lastlogin_socket), ini),
            socket=layout.lastlogin_socket,
            metrics=config.metrics_lastlogin,
        ),
        Daemon(
            "metadata",
            "chatmaild.metadata",
            (str(layout.metadata_socket), ini),
            socket=layout.metadata_socket,
            metrics=config.metrics_metadata,
        ),
        Daemon(
            "filtermail-outgoing",
            "chatmaild.filtermail",
            (ini, "outgoing"),
            port=config.filtermail_smtp_port,
            metrics=config.metrics_filtermail_outgoing,
        ),
        Daemon(
            "filtermail-incoming",
            "chatmaild.filtermail",
            (ini, "incoming"),
            port=config.filtermail_smtp_port_incoming,
            metrics=config.metrics_filtermail_incoming,
        ),
        Daemon(
            "filtermail-transport",
            "chatmaild.transport",
            (ini,),
            port=config.filtermail_lmtp_port_transport,
            metrics=config.metrics_filtermail_transport,
            env=transport_env(layout),
        ),
    ]
    if layout.turn is not None:
        # TURN credentials for coturn; runs as coturn's user, the owner of the secret
        daemons.append(
            Daemon(
                "turn",
                "chatmaild.turn",
                ("serve", ini),
                socket=config.turn_socket_path,
                user=TURN_USER,
            )
        )
    iroh = _iroh_relay(config, ini)
    if iroh is not None:
        daemons.append(iroh)
    if layout.web is not None:
        # /new behind nginx (chatmaild.web)
        daemons.append(
            Daemon(
                "web",
                "chatmaild.web",
                (
                    ini,
                    "--listen",
                    f"unix:{layout.web.web_socket}",
                    # as nginx treats the certificate (weblayout.py)
                    *(["--self-signed"] if layout.web.self_signed else []),
                ),
                socket=layout.web.web_socket,
            )
        )
    if log_dir is None:
        return daemons
    logs = [layout.postfix_log, layout.dovecot_log]
    dkim = signing_layout(config, layout.dkim)
    if dkim is not None and dkim.syslog_socket is not None:
        # OpenDKIM's syslog messages, written to opendkim.log (see dkimrun.py)
        opendkim_log = Path(log_dir) / OPENDKIM_LOG
        sink = (str(dkim.syslog_socket), str(opendkim_log))
        daemons.append(Daemon("opendkim-syslog", "chatmaild.relay.syslogsink", sink))
        logs.append(opendkim_log)
    logs += [Path(log_dir) / f"{d.name}.log" for d in daemons]
    follow = [arg for path in logs if path is not None for arg in ("--follow", str(path))]
    listen = config.metrics_logmetrics or LOGMETRICS_DEFAULT_LISTEN
    logmetrics = Daemon(
        "logmetrics", "chatmaild.metrics", (ini, "--listen", listen, *follow), metrics=listen
    )
    return [logmetrics, *daemons]
