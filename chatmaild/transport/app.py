"""The transport service's wiring: an LMTP server (the sans-I/O core of chatmaild.smtp in
LMTP mode) whose messages go to the Deliverer, one reply per recipient."""

from chatmaild.smtp.proto import Reply
from chatmaild.smtp.server import Handler, ServerSettings, SMTPServer

from .deliver import Deliverer
from .https import HttpsSender
from .limits import Admission
from .memory import SmtpOnlyMemory
from .mx import domain_of
from .replies import BAD_RECIPIENT
from .resolve import MxResolver
from .smtpclient import SmtpSender

LISTEN_HOST = "127.0.0.1"
SIZE_MARGIN = 1024 * 1024


class TransportHandler(Handler):
    def __init__(self, deliverer: Deliverer):
        self.deliverer = deliverer

    def on_rcpt(self, event, transaction) -> Reply | None:
        return None if domain_of(event.address) else BAD_RECIPIENT

    async def on_message(self, transaction):
        return await self.deliverer.deliver(transaction)


def build_deliverer(config, metrics=None, https_port=443, smtp_port=25, nameserver=None):
    https = HttpsSender(port=https_port)
    smtp = SmtpSender(config.mail_domain, port=smtp_port)
    memory = SmtpOnlyMemory(interval=float(config.filtermail_transport_smtp_memory))
    return Deliverer(
        MxResolver(nameserver),
        https,
        smtp,
        memory=memory,
        admission=Admission(),
        metrics=metrics,
    )


def build_server(config, deliverer, port=None, backlog=1024):
    # Postfix's message_size_limit counts the queue file; the LMTP stream of the same
    # message may be a little longer (headers added at queueing): never bounce a message
    # Postfix accepted for being a few bytes over
    settings = ServerSettings(
        hostname=config.mail_domain,
        max_message_size=config.max_message_size + SIZE_MARGIN,
        lmtp=True,
    )
    port = config.filtermail_lmtp_port_transport if port is None else port
    handler = TransportHandler(deliverer)
    return SMTPServer(handler, LISTEN_HOST, port, settings=settings, backlog=backlog)
