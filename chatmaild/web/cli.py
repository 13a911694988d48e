"""`chatmail-web CONFIG [--listen unix:/run/chatmail-web/web.socket]`: `/new` behind nginx."""

import argparse
import logging
import sys

from ..config import load_config_or_exit
from ..daemon import run
from ..metrics.exporter import parse_listen_spec
from .app import WebApp
from .server import serve_until_signalled

DEFAULT_LISTEN = "unix:/run/chatmail-web/web.socket"


def main(argv=None):
    parser = argparse.ArgumentParser(prog="chatmail-web", description=__doc__.split(":", 1)[1])
    parser.add_argument("config", help="path to chatmail.ini")
    parser.add_argument(
        "--listen",
        default=DEFAULT_LISTEN,
        help=f"unix:/path or HOST:PORT (default {DEFAULT_LISTEN})",
    )
    parser.add_argument(
        "--self-signed",
        action="store_true",
        default=None,
        help="the relay's certificate is not from a public CA: answers carry a dclogin_url "
        "(default: as chatmail.ini says, an IP-only relay or tls_cert = self)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        listen = parse_listen_spec(args.listen)
    except ValueError as e:
        parser.error(str(e))
    if listen is None:
        parser.error("--listen must not be empty")
    config = load_config_or_exit(args.config)
    run(serve_until_signalled(WebApp(config, self_signed=args.self_signed), listen))


if __name__ == "__main__":
    main()
