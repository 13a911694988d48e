"""`chatmail-iroh-relay CONFIG [--listen HOST:PORT]`: the iroh relay behind nginx."""

import argparse
import logging
import resource
import sys

from .. import acceptor
from ..config import load_config_or_exit
from ..daemon import run, stop_event
from ..metrics.exporter import parse_listen_spec, start_exporter
from ..metrics.irohrelay import registry_for
from .server import Limits, RelayServer

log = logging.getLogger("chatmaild.irohrelay")


def raise_fd_limit(wanted):
    """Room for `wanted` descriptors when the hard limit allows (systemd: LimitNOFILE)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (OSError, ValueError):
            pass
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


async def listen(server, spec):
    # our acceptor, not the loop's: it logs (rate-limited) when descriptors run out;
    # a unix socket is 0666: nginx's workers connect
    return acceptor.listen(spec, server.protocol, spec.describe(), mode=0o666)


async def serve_until_signalled(config, spec, limits):
    stop = stop_event()
    server = RelayServer(limits)
    listener = await listen(server, spec)
    exporter = await start_exporter(config.metrics_irohrelay, registry_for(server))
    log.info(
        "iroh relay (protocol of iroh 0.35) on %s, at most %d clients",
        spec.describe(),
        limits.max_clients,
    )
    try:
        await stop.wait()
        log.info("shutting down (%d clients connected)", len(server.router))
    finally:
        listener.close()
        if exporter is not None:
            exporter.close()
        server.close_all()


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="chatmail-iroh-relay", description=__doc__.split(":", 1)[1]
    )
    parser.add_argument("config", help="path to chatmail.ini")
    parser.add_argument(
        "--listen", help="HOST:PORT or unix:/path (default: iroh_relay_listen of the ini)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s"
    )
    config = load_config_or_exit(args.config)
    text = args.listen if args.listen is not None else config.iroh_relay_listen
    try:
        spec = parse_listen_spec(text)
    except ValueError as e:
        parser.error(str(e))
    if spec is None:
        parser.error("no listen address (iroh_relay_listen is empty and no --listen)")
    limits = Limits(max_clients=config.iroh_relay_max_clients)
    fds = raise_fd_limit(limits.max_clients + limits.max_pending + 64)
    if fds < limits.max_clients + 64:
        log.warning("only %d file descriptors for %d clients", fds, limits.max_clients)
    run(serve_until_signalled(config, spec, limits))


if __name__ == "__main__":
    main()
