"""chatmail-turn serve CONFIG | chatmail-turn init-secret CONFIG [--owner USER]: wiring only."""

import argparse
import logging
import sys

from chatmaild import daemon
from chatmaild.config import load_config_or_exit
from chatmaild.daemon import stop_event
from chatmaild.turn import secretdb
from chatmaild.turn.server import CredentialServer

log = logging.getLogger("chatmail-turn")


def _parser():
    p = argparse.ArgumentParser(
        prog="chatmail-turn",
        description="TURN REST credentials for coturn on a unix socket (docs/turn.md)",
    )
    sub = p.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="answer every connection to turn_socket_path")
    serve.add_argument("config", help="chatmail.ini")
    init = sub.add_parser(
        "init-secret",
        help="make the secret in turn_db_path once (kept when there is one); run as root",
    )
    init.add_argument("config", help="chatmail.ini")
    init.add_argument(
        "--owner",
        default=secretdb.OWNER,
        help=f"the user coturn and chatmail-turn run as (default {secretdb.OWNER})",
    )
    return p


async def _serve(config):
    try:
        secret = secretdb.read_secret(config.turn_db_path, config.mail_domain)
    except secretdb.SecretMissing as e:
        log.error("no TURN secret (run `chatmail-turn init-secret` as root): %s", e)
        raise SystemExit(1) from None
    server = CredentialServer(config.turn_socket_path, secret)
    await server.start()
    stop = stop_event()
    try:
        await stop.wait()
    finally:
        await server.close()
        log.info("chatmail-turn stopped after %d credential lines", server.served)


def main(argv=None):
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s", stream=sys.stderr)
    config = load_config_or_exit(args.config)
    if args.command == "init-secret":
        created = secretdb.ensure_secret(config.turn_db_path, config.mail_domain, args.owner)
        state = "made" if created else "kept (it existed)"
        print(f"TURN secret for realm {config.mail_domain} {state} in {config.turn_db_path}")
        return
    daemon.run(_serve(config))
