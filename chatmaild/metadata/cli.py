"""chatmail-metadata SOCKET CONFIG: the METADATA dict service with its push notifier."""

from chatmaild.dictproxy.entry import dict_service_main
from chatmaild.mailbox import Mailboxes
from chatmaild.metadata.notifier import Notifier
from chatmaild.metadata.probe import HttpProbe
from chatmaild.metadata.service import MetadataService
from chatmaild.metadata.store import TokenStore
from chatmaild.metadata.turn import TurnCredentials


def build_service(config) -> MetadataService:
    mailboxes = Mailboxes(config.mailboxes_dir, config.address_domain)
    store = TokenStore(mailboxes)
    notifier = Notifier(
        mailboxes.pending_notifications_dir,
        config.notification_url,
        on_token_gone=store.remove_tokens,
    )
    turn = TurnCredentials(config.turn_socket_path)
    iroh = None
    if config.iroh_relay and config.iroh_relay_listen:
        iroh = HttpProbe.for_listen("iroh relay", config.iroh_relay_listen)
    service = MetadataService(config, mailboxes, store, notifier, turn, iroh_probe=iroh)
    service.metrics.observe_notifier(notifier)
    return service


def main(argv=None) -> None:
    dict_service_main(
        "chatmail-metadata",
        "Dovecot dict service for IMAP METADATA (device tokens, relay facts) and the push notifier",
        build_service,
        lambda config: config.metrics_metadata,
        argv,
    )
