"""Routing between relay clients by their 32-byte public key. No I/O, no frames, no clock.

A protocol layer (the iroh 0.35 connection in `server.py`; an iroh 1.x one could sit beside it)
registers each authenticated client as a `Client` with a `wake` callback, hands every packet
it reads to `Router.forward`, and drains `Client.queue` when its transport can take more.

Rules (after n0's `server/clients.rs` and `server/client.rs` of iroh v0.35.0):
- a packet for a key that is not connected is dropped (`NO_PEER`);
- each client has a bounded queue (packets and bytes), and all queues together hold at most
  `total_bytes`; a full queue drops (`QUEUE_FULL`)
  and never blocks the sender. Disco packets (iroh's hole-punching messages, `TS💬` + key)
  have a budget of their own in the same queue, as n0 gives them a queue of their own, so a
  client flooded with data still gets them. iroh 0.35 clients send a batch of datagrams in
  each packet, each behind a 2-byte little-endian length (`PacketizeIter` in
  iroh/src/magicsock/relay_actor.rs), so the magic is looked for behind that length (n0's
  server looks at the very start, where a 0.35 client never puts it);
- a second client with the same key replaces the first, which the caller must close;
- when a client leaves, each client it sent packets to that is still connected gets NodeGone
  for it (bounded: at most `sent_to_limit` keys are remembered per client).
"""

from collections import deque

FORWARDED = 0  # queued for the destination
NO_PEER = 1
QUEUE_FULL = 2

QUEUE_DEPTH = 512  # packets, as n0's PER_CLIENT_SEND_QUEUE_DEPTH
DISCO_DEPTH = 512  # and disco packets besides (n0: a second queue of the same depth)
DISCO_MAGIC = "TS💬".encode()
DISCO_OFFSET = 2  # the first datagram's length
DISCO_MIN_LEN = DISCO_OFFSET + len(DISCO_MAGIC) + 32
DISCO_MAX_LEN = 4096  # real ones are far smaller; larger "disco" is treated as data
QUEUE_BYTES = 1024 * 1024  # and at most this much data queued per client
TOTAL_BYTES = 256 * 1024 * 1024  # data queued for all clients together
SENT_TO_LIMIT = 256  # keys remembered per client for NodeGone (n0: unbounded)


class Client:
    """One registered connection. `queue` holds `(src_key, data)` packets and `(None, key)`
    NodeGone notices; `wake()` is called when the queue stops being empty. `owner` is the
    protocol layer's connection object (opaque here)."""

    __slots__ = ("key", "wake", "owner", "queue", "queued_bytes", "disco", "sent_to", "closed")

    def __init__(self, key: bytes, wake, owner=None):
        self.key = key
        self.wake = wake
        self.owner = owner
        self.queue = deque()
        self.queued_bytes = 0
        self.disco = 0  # disco packets in the queue
        self.sent_to = set()
        self.closed = False


class Counters:
    """Plain integer counters, one per name in a subclass's `__slots__`, starting at 0."""

    __slots__ = ()

    def __init__(self):
        for name in self.__slots__:
            setattr(self, name, 0)


class Stats(Counters):
    """Plain counters of routing, read at scrape time (metrics.irohrelay)."""

    __slots__ = (
        "packets_in",
        "bytes_in",
        "disco_in",
        "dropped_no_peer",
        "dropped_queue_full",
        "dropped_bytes",
        "dropped_closed",
        "replaced",
        "node_gone",
    )


class Router:
    def __init__(
        self,
        queue_depth: int = QUEUE_DEPTH,
        queue_bytes: int = QUEUE_BYTES,
        sent_to_limit: int = SENT_TO_LIMIT,
        disco_depth: int = DISCO_DEPTH,
        total_bytes: int = TOTAL_BYTES,
    ):
        self.clients: dict[bytes, Client] = {}
        self.queue_depth = queue_depth
        self.queue_bytes = queue_bytes
        self.sent_to_limit = sent_to_limit
        self.disco_depth = disco_depth
        self.total_bytes = total_bytes
        self.queued_total = 0
        self.stats = Stats()

    def __len__(self):
        return len(self.clients)

    def register(self, client: Client) -> Client | None:
        """Add `client`; returns the client it replaces (same key), which must be closed."""
        old = self.clients.get(client.key)
        self.clients[client.key] = client
        if old is not None:
            old.closed = True
            self.stats.replaced += 1
        return old

    def unregister(self, client: Client) -> None:
        """`client` is gone; NodeGone to those it sent to. A replaced client changes nothing."""
        client.closed = True
        if client.queue:
            self.stats.dropped_closed += sum(1 for src, _ in client.queue if src is not None)
            client.queue.clear()
        self.queued_total -= client.queued_bytes
        client.queued_bytes = 0
        client.disco = 0
        if self.clients.get(client.key) is not client:
            return
        del self.clients[client.key]
        for key in client.sent_to:
            peer = self.clients.get(key)
            if peer is not None and len(peer.queue) < self.queue_depth:
                peer.queue.append((None, client.key))  # 32 bytes: not counted in bytes
                self.stats.node_gone += 1
                if len(peer.queue) == 1:
                    peer.wake()
        client.sent_to.clear()

    def take(self, client: Client) -> list:
        """Everything queued for `client`, oldest first; its queue is then empty."""
        items = list(client.queue)
        client.queue.clear()
        self.queued_total -= client.queued_bytes
        client.queued_bytes = 0
        client.disco = 0
        return items

    def forward(self, src: Client, dst_key: bytes, data: bytes) -> int:
        """Queue `data` from `src` for the client with `dst_key`."""
        stats = self.stats
        stats.packets_in += 1
        size = len(data)
        stats.bytes_in += size
        dst = self.clients.get(dst_key)
        if dst is None:
            stats.dropped_no_peer += 1
            stats.dropped_bytes += size
            return NO_PEER
        queue = dst.queue
        if self.queued_total + size > self.total_bytes:
            stats.dropped_queue_full += 1
            stats.dropped_bytes += size
            return QUEUE_FULL
        if DISCO_MIN_LEN <= size <= DISCO_MAX_LEN and data.startswith(DISCO_MAGIC, DISCO_OFFSET):
            stats.disco_in += 1
            if dst.disco >= self.disco_depth:
                stats.dropped_queue_full += 1
                stats.dropped_bytes += size
                return QUEUE_FULL
            dst.disco += 1
        elif (
            len(queue) - dst.disco >= self.queue_depth or dst.queued_bytes + size > self.queue_bytes
        ):
            stats.dropped_queue_full += 1
            stats.dropped_bytes += size
            return QUEUE_FULL
        queue.append((src.key, data))
        dst.queued_bytes += size
        self.queued_total += size
        sent_to = src.sent_to
        if dst_key not in sent_to and len(sent_to) < self.sent_to_limit:
            sent_to.add(dst.key)  # the registered key object: no copy kept per entry
        if len(queue) == 1:
            dst.wake()
        return FORWARDED
