"""`doveauth SOCKET CONFIG`: the passdb/userdb dict service Dovecot's auth-worker talks to."""

import argparse
import logging

from ..config import load_config_or_exit
from ..dictproxy import run_dict_service
from ..metrics.exporter import ExportingService
from .service import DoveauthService


def main(argv=None):
    parser = argparse.ArgumentParser(prog="doveauth", description=__doc__.split(":", 1)[1].strip())
    parser.add_argument("socket", help="unix socket to listen on")
    parser.add_argument("config", help="chatmail.ini")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    config = load_config_or_exit(args.config)
    service = DoveauthService(config)
    if config.metrics_doveauth:
        service = ExportingService(service, config.metrics_doveauth, service.metrics.registry)
    run_dict_service(args.socket, service)


if __name__ == "__main__":
    main()
