"""`lastlogin SOCKET CONFIG`: the dict service Dovecot's last_login plugin writes to."""

import argparse
import logging

from ..config import load_config_or_exit
from ..dictproxy import run_dict_service
from ..metrics.exporter import ExportingService
from .service import LastLoginService


def main(argv=None):
    parser = argparse.ArgumentParser(prog="lastlogin", description=__doc__.split(":", 1)[1].strip())
    parser.add_argument("socket", help="unix socket to listen on")
    parser.add_argument("config", help="chatmail.ini")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    config = load_config_or_exit(args.config)
    service = LastLoginService(config)
    if config.metrics_lastlogin:
        service = ExportingService(service, config.metrics_lastlogin, service.metrics.registry)
    run_dict_service(args.socket, service)


if __name__ == "__main__":
    main()
