"""A dict service on a real unix socket for the tests, and a client that has said hello."""

import asyncio
import contextlib

from chatmaild.dictproxy import serve_unix
from chatmaild.dictproxy.server import close_connections

HELLO = b"H3\t2\t0\t\ttest\n"


@contextlib.asynccontextmanager
async def dict_served(path, service, **kwargs):
    """`service` served on the unix socket `path` for the block (`kwargs` go to
    serve_unix); then the listener and every open connection are closed."""
    server = await serve_unix(path, service, **kwargs)
    try:
        yield server
    finally:
        server.close()
        close_connections(server)
        await server.wait_closed()


async def dict_connect(path):
    """(reader, writer) of a connection to `path` whose hello is sent."""
    reader, writer = await asyncio.open_unix_connection(str(path))
    writer.write(HELLO)
    return reader, writer
