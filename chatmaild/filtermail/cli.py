"""`filtermail CONFIG outgoing|incoming|transport`: start one filter (or the transport
service, chatmaild.transport), stop cleanly on SIGTERM/SIGINT."""

import argparse
import asyncio
import logging
import sys

import dns.resolver

from chatmaild import daemon
from chatmaild.config import load_config_or_exit
from chatmaild.daemon import StartupError, listen_error, stop_event
from chatmaild.metrics.exporter import start_exporter
from chatmaild.metrics.filtermail import FiltermailMetrics
from chatmaild.smtp.server import DEFAULT_COMMAND_TIMEOUT, DEFAULT_SESSION_TIMEOUT

from .app import LISTEN_HOST, MODES, build_http_server, build_server

log = logging.getLogger("filtermail")
# sessions in flight may finish this long after SIGTERM (systemd waits 90 s before SIGKILL)
SHUTDOWN_GRACE = 10.0


async def serve(config, mode: str, backlog: int, deadlines=None) -> None:
    metrics = FiltermailMetrics(mode)
    try:
        server, reinjector = build_server(
            config, mode, backlog=backlog, metrics=metrics, deadlines=deadlines
        )
    except dns.resolver.NoResolverConfiguration:
        raise StartupError(
            "DKIM verification needs a resolver: none in /etc/resolv.conf "
            "(or set filtermail_dkim_nameserver)"
        ) from None
    # incoming: the /mxdeliv listener first, so that a listening SMTP port (what the relay
    # and systemd wait for) means both are up
    http = None
    if mode == "incoming":
        http = build_http_server(config, server, backlog=backlog)
        try:
            await http.start(grace=SHUTDOWN_GRACE)
        except OSError as e:
            raise listen_error(f"{LISTEN_HOST}:{http.port}", e) from None
    try:
        await server.start()
    except OSError as e:
        if http is not None:
            await http.shutdown()
        raise listen_error(f"{LISTEN_HOST}:{server.port}", e) from None
    metrics_spec = getattr(config, f"metrics_filtermail_{mode}")
    exporter = await start_exporter(metrics_spec, metrics.registry)
    stop = stop_event()
    log.info(
        "filtermail %s listening on %s:%d, reinjecting to %s:%d",
        mode,
        LISTEN_HOST,
        server.port,
        reinjector.host,
        reinjector.port,
    )
    if http is not None:
        log.info("filtermail incoming: /mxdeliv over HTTP on %s:%d", LISTEN_HOST, http.port)
        _log_dkim_setting(config)
    await stop.wait()
    log.info("filtermail %s shutting down", mode)
    if exporter is not None:
        exporter.close()
    # both listeners stop at once; their requests and sessions in flight share the grace
    stopping = [server.shutdown(grace=SHUTDOWN_GRACE)]
    if http is not None:
        stopping.append(http.shutdown())
    await asyncio.gather(*stopping)
    await reinjector.close()
    if exporter is not None:
        await exporter.wait_closed()


def _log_dkim_setting(config) -> None:
    if not config.filtermail_dkim_check:
        log.warning(
            "DKIM verification of incoming mail is OFF (filtermail_dkim_check = false): "
            "for tests only"
        )
        return
    nameserver = config.filtermail_dkim_nameserver
    if nameserver:
        resolver = f"{nameserver[0]} port {nameserver[1]}"
    else:
        resolver = "the resolvers of /etc/resolv.conf"
    log.info("DKIM verification of incoming mail is on, keys from %s", resolver)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="filtermail", description=__doc__.splitlines()[0])
    parser.add_argument("config", help="path to chatmail.ini")
    parser.add_argument("mode", choices=(*MODES, "transport"))
    parser.add_argument(
        "--backlog", type=int, default=1024, help="listen backlog (default: %(default)s)"
    )
    parser.add_argument(
        "--command-timeout",
        type=float,
        default=DEFAULT_COMMAND_TIMEOUT,
        help="seconds a client has for one whole command line (default: %(default)s)",
    )
    parser.add_argument(
        "--session-timeout",
        type=float,
        default=DEFAULT_SESSION_TIMEOUT,
        help="seconds a session may last in all (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    if args.mode == "transport":  # upstream's command line for the transport service
        from chatmaild.transport.cli import run

        run(args.config, args.backlog)
        return
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    config = load_config_or_exit(args.config)
    deadlines = {"command_timeout": args.command_timeout, "session_timeout": args.session_timeout}
    daemon.run(serve(config, args.mode, args.backlog, deadlines))
