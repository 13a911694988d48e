"""chatmail-metadata SOCKET CONFIG: the METADATA dict service with its push notifier."""

import argparse
import logging
import sys

from chatmaild.config import load_config_or_exit
from chatmaild.dictproxy import run_dict_service
from chatmaild.mailbox import Mailboxes
from chatmaild.metadata.notifier import Notifier
from chatmaild.metadata.service import MetadataService
from chatmaild.metadata.store import TokenStore
from chatmaild.metadata.turn import TurnCredentials
from chatmaild.metrics.exporter import ExportingService


def build_service(config) -> MetadataService:
    mailboxes = Mailboxes(config.mailboxes_dir, config.address_domain)
    store = TokenStore(mailboxes)
    notifier = Notifier(
        mailboxes.pending_notifications_dir,
        config.notification_url,
        on_token_gone=store.remove_tokens,
    )
    turn = TurnCredentials(config.turn_socket_path)
    service = MetadataService(config, mailboxes, store, notifier, turn)
    service.metrics.observe_notifier(notifier)
    return service


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        prog="chatmail-metadata",
        description="Dovecot dict service for IMAP METADATA (device tokens, relay facts) "
        "and the push notifier",
    )
    parser.add_argument("socket", help="unix socket path to listen on")
    parser.add_argument("config", help="path to chatmail.ini")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s"
    )
    config = load_config_or_exit(args.config)
    service = build_service(config)
    if config.metrics_metadata:
        service = ExportingService(service, config.metrics_metadata, service.metrics.registry)
    run_dict_service(args.socket, service)
