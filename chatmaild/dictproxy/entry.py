"""The command line shared by the dict services: `PROG SOCKET CONFIG`."""

import argparse
import logging
import sys

from chatmaild.config import load_config_or_exit
from chatmaild.metrics.exporter import ExportingService

from .server import run_dict_service


def dict_service_main(prog, description, build_service, metrics_spec, argv=None):
    """Parse `SOCKET CONFIG`, build the service from the config, serve it until signalled.

    `metrics_spec(config)` names the service's metrics endpoint (empty: off); the service
    then needs a `metrics.registry`.
    """
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("socket", help="unix socket to listen on")
    parser.add_argument("config", help="path to chatmail.ini")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s"
    )
    config = load_config_or_exit(args.config)
    service = build_service(config)
    spec = metrics_spec(config)
    if spec:
        service = ExportingService(service, spec, service.metrics.registry)
    run_dict_service(args.socket, service)
