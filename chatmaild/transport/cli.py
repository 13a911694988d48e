"""`filtermail-transport CONFIG` (also `filtermail CONFIG transport`): Postfix's
default_transport over LMTP on 127.0.0.1:filtermail_lmtp_port_transport; stops on
SIGTERM/SIGINT after the deliveries under way (up to a grace period)."""

import argparse
import logging
import sys

from chatmaild import daemon
from chatmaild.config import load_config_or_exit
from chatmaild.daemon import listen_error, stop_event
from chatmaild.metrics.exporter import start_exporter
from chatmaild.metrics.transport import TransportMetrics

from .app import LISTEN_HOST, build_deliverer, build_server

log = logging.getLogger("filtermail-transport")

SHUTDOWN_GRACE = 30.0


async def serve(config, backlog: int = 1024) -> None:
    metrics = TransportMetrics()
    deliverer = build_deliverer(config, metrics=metrics)
    metrics.https_connections.set_function(lambda: deliverer.https.handshakes)
    server = build_server(config, deliverer, backlog=backlog)
    try:
        await server.start()
    except OSError as e:
        raise listen_error(f"{LISTEN_HOST}:{server.port}", e) from None
    exporter = await start_exporter(config.metrics_filtermail_transport, metrics.registry)
    stop = stop_event()
    log.info(
        "filtermail transport listening on %s:%d (LMTP): HTTPS /mxdeliv first, SMTP port 25"
        " after; SMTP-only memory %d s",
        LISTEN_HOST,
        server.port,
        config.filtermail_transport_smtp_memory,
    )
    await stop.wait()
    log.info("filtermail transport shutting down")
    if exporter is not None:
        exporter.close()
    await server.shutdown(grace=SHUTDOWN_GRACE)
    await deliverer.https.close()
    if exporter is not None:
        await exporter.wait_closed()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        prog="filtermail-transport", description=__doc__.splitlines()[0]
    )
    parser.add_argument("config", help="path to chatmail.ini")
    parser.add_argument(
        "--backlog", type=int, default=1024, help="listen backlog (default: %(default)s)"
    )
    args = parser.parse_args(argv)
    run(args.config, args.backlog)


def run(config_path, backlog=1024) -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    config = load_config_or_exit(config_path)
    daemon.run(serve(config, backlog))
