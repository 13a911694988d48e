"""Our daemons as the relay runs them: command line and what "ready" means for each."""

import dataclasses
import importlib.util
from pathlib import Path


@dataclasses.dataclass(frozen=True)
class Daemon:
    name: str
    module: str
    args: tuple  # command-line arguments after `python -m module`
    socket: Path | None = None  # ready when this unix socket accepts connections
    port: int | None = None  # ready when 127.0.0.1:port accepts connections

    def available(self):
        """Whether this checkout has the daemon (packages land one by one)."""
        try:
            return importlib.util.find_spec(self.module + ".__main__") is not None
        except ModuleNotFoundError:
            return False


def relay_daemons(config, layout):
    """The daemons of a relay, in start order (dict services before the filters)."""
    ini = str(config.path)
    return [
        Daemon(
            "doveauth",
            "chatmaild.doveauth",
            (str(layout.doveauth_socket), ini),
            socket=layout.doveauth_socket,
        ),
        Daemon(
            "lastlogin",
            "chatmaild.lastlogin",
            (str(layout.lastlogin_socket), ini),
            socket=layout.lastlogin_socket,
        ),
        Daemon(
            "metadata",
            "chatmaild.metadata",
            (str(layout.metadata_socket), ini),
            socket=layout.metadata_socket,
        ),
        Daemon(
            "filtermail-outgoing",
            "chatmaild.filtermail",
            (ini, "outgoing"),
            port=config.filtermail_smtp_port,
        ),
        Daemon(
            "filtermail-incoming",
            "chatmaild.filtermail",
            (ini, "incoming"),
            port=config.filtermail_smtp_port_incoming,
        ),
    ]
