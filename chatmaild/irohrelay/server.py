"""chatmail-iroh-relay's server: one asyncio Protocol per TCP connection around the pure parts.

A connection starts in HTTP (`httpfront`); an accepted upgrade switches it to relay frames
(`frames.StreamFraming` or `websocket.WsFraming`). The first frame must be a valid ClientInfo
(`handshake`), within HANDSHAKE_TIMEOUT of the connection's start; the client is then
registered with the routing core (`core.Router`) and every SendPacket it sends is handed to
the core in the same pass over the chunk.

Writing: packets for a client wait in its core queue (bounded: a full queue drops); one
flush per loop iteration moves all of them into the transport in a single write, only while
the transport is not paused. A transport that stays paused (the client does not read) for
WRITE_TIMEOUT ends the client. Pings get their Pong at once. The server pings a client that
has sent nothing for PING_INTERVAL plus 1-5 s of jitter, and ends it when the Pong is more
than PONG_TIMEOUT late. Timers are `call_later` handles, one per connection at a time.

Logging: one line when a client is registered and one when it goes (with the reason), one
per refused handshake; plain HTTP requests are not logged.
"""

import asyncio
import logging
import os
import random
import time

from . import frames as fr
from . import httpfront
from .core import Client, Counters, Router
from .handshake import HandshakeError, parse_client_info
from .websocket import WsFraming

log = logging.getLogger("chatmaild.irohrelay")

HANDSHAKE_TIMEOUT = 10.0  # HTTP head and ClientInfo (iroh: 10 s for the ClientInfo)
HTTP_IDLE_TIMEOUT = 30.0  # a keep-alive HTTP connection with no request
PING_INTERVAL = 15.0
PING_JITTER = (1.0, 5.0)
PONG_TIMEOUT = 5.0
WRITE_TIMEOUT = 2.0
WRITE_HIGH_WATER = 256 * 1024
MAX_CLIENTS = 10000
MAX_PENDING = 1000  # connections before a relay upgrade (HTTP probes, handshakes)

HTTP, HANDSHAKE, RELAY, CLOSED = range(4)


class Limits:
    """Tunables of one server (tests shorten the timers)."""

    def __init__(
        self,
        max_clients=MAX_CLIENTS,
        max_pending=MAX_PENDING,
        max_frame=fr.MAX_FRAME_SIZE,
        handshake_timeout=HANDSHAKE_TIMEOUT,
        ping_interval=PING_INTERVAL,
        ping_jitter=PING_JITTER,
        pong_timeout=PONG_TIMEOUT,
        write_timeout=WRITE_TIMEOUT,
        write_high_water=WRITE_HIGH_WATER,
    ):
        self.max_clients = max_clients
        self.max_pending = max_pending
        self.max_frame = max_frame
        self.handshake_timeout = handshake_timeout
        self.ping_interval = ping_interval
        self.ping_jitter = ping_jitter
        self.pong_timeout = pong_timeout
        self.write_timeout = write_timeout
        self.write_high_water = write_high_water


class ServerStats(Counters):
    """Plain counters of the connection layer (the core counts routing in Router.stats)."""

    __slots__ = (
        "accepts_relay",
        "accepts_websocket",
        "packets_out",
        "bytes_out",
        "node_gone_out",
        "pings_in",
        "pings_out",
        "pongs_missed",
        "write_timeouts",
        "refused_handshake",
        "refused_full",
        "protocol_errors",
        "http_requests",
    )


class RelayServer:
    """Shared state of all connections: the router, the limits, the counters."""

    def __init__(self, limits=None, router=None, rng=None):
        self.limits = limits or Limits()
        self.router = router or Router()
        self.stats = ServerStats()
        self.connections = set()  # every open connection
        self.relayed = 0  # connections upgraded to relay frames (before or after ClientInfo)
        self.rng = rng or random.Random()

    def protocol(self):
        return RelayConnection(self)

    def close_all(self):
        for conn in list(self.connections):
            conn.abort("server shutting down")


def _short(key: bytes) -> str:
    return key[:5].hex()


class RelayConnection(asyncio.Protocol):
    __slots__ = (
        "server",
        "transport",
        "state",
        "buffer",
        "framing",
        "client",
        "timer",
        "pong_timer",
        "ping_data",
        "rx_seen",
        "paused",
        "write_timer",
        "flush_pending",
        "started",
        "loop",
        "counted_relay",
    )

    def __init__(self, server: RelayServer):
        self.server = server
        self.transport = None
        self.state = HTTP
        self.buffer = bytearray()
        self.framing = None
        self.client = None
        self.timer = None
        self.pong_timer = None
        self.ping_data = None
        self.rx_seen = False
        self.paused = False
        self.write_timer = None
        self.flush_pending = False
        self.started = 0.0
        self.loop = None
        self.counted_relay = False

    # -- connection lifecycle ---------------------------------------------------------------

    def connection_made(self, transport):
        self.transport = transport
        self.loop = asyncio.get_running_loop()
        self.started = time.monotonic()
        server = self.server
        pending = len(server.connections) - server.relayed
        server.connections.add(self)
        if pending >= server.limits.max_pending:
            server.stats.refused_full += 1
            self.state = CLOSED
            transport.abort()
            return
        transport.set_write_buffer_limits(high=server.limits.write_high_water)
        self.timer = self.loop.call_later(server.limits.handshake_timeout, self._timed_out)

    def connection_lost(self, exc):
        server = self.server
        server.connections.discard(self)
        if self.counted_relay:
            server.relayed -= 1
            self.counted_relay = False
        for handle in (self.timer, self.pong_timer, self.write_timer):
            if handle is not None:
                handle.cancel()
        self.timer = self.pong_timer = self.write_timer = None
        client = self.client
        if client is not None:
            server.router.unregister(client)
            self.client = None
            if self.state != CLOSED:
                reason = "connection closed" if exc is None else f"connection lost: {exc}"
                self._log_gone(client, reason)
        self.state = CLOSED

    def abort(self, reason: str):
        """End the connection now (a replaced or misbehaving client, a timeout)."""
        if self.state == CLOSED:
            return
        client = self.client
        self.state = CLOSED
        if client is not None:
            self._log_gone(client, reason)
        self.transport.abort()

    def _log_gone(self, client, reason):
        alive = time.monotonic() - self.started
        log.info("client %s gone after %.0f s: %s", _short(client.key), alive, reason)

    def _timed_out(self):
        self.timer = None
        if self.state == HTTP and self.buffer:
            self._write_close(httpfront.response(400, b"request timeout\n", close=True))
        elif self.state == HANDSHAKE:
            self.server.stats.refused_handshake += 1
            log.info("relay client refused: no ClientInfo within the handshake timeout")
            self.abort("handshake timeout")
        else:
            self.abort("idle")

    def _write_close(self, data):
        self.state = CLOSED
        self.transport.write(data)
        self.transport.close()

    # -- reading ----------------------------------------------------------------------------

    def data_received(self, data):
        if self.state == RELAY:
            self._relay_data(data)
        elif self.state == HTTP:
            self._http_data(data)
        elif self.state == HANDSHAKE:
            self._handshake_data(data)

    def _http_data(self, data):
        buffer = self.buffer
        buffer += data
        server = self.server
        while self.state == HTTP:
            try:
                end = httpfront.split_head(buffer)
                if not end:
                    return
                request = httpfront.parse_head(bytes(buffer[:end]))
            except httpfront.HttpError as e:
                self._write_close(httpfront.error_reply(e).response)
                return
            del buffer[:end]
            server.stats.http_requests += 1
            full = server.relayed >= server.limits.max_clients
            reply = httpfront.answer(request, full=full)
            if reply.status == 503:
                server.stats.refused_full += 1
            if reply.close:
                self._write_close(reply.response)
                return
            self.transport.write(reply.response)
            if reply.upgrade is not None:
                self._upgrade(reply.upgrade)
            else:
                self._rearm(HTTP_IDLE_TIMEOUT)
        if self.state == HANDSHAKE and buffer:
            rest = bytes(buffer)
            buffer.clear()
            self._handshake_data(rest)

    def _rearm(self, delay):
        if self.timer is not None:
            self.timer.cancel()
        self.timer = self.loop.call_later(delay, self._timed_out)

    def _upgrade(self, kind):
        server = self.server
        limits = server.limits
        if kind == httpfront.WEBSOCKET:
            self.framing = WsFraming(max_message=limits.max_frame + 1)
            server.stats.accepts_websocket += 1
        else:
            self.framing = fr.StreamFraming(max_frame=limits.max_frame)
            server.stats.accepts_relay += 1
        self.state = HANDSHAKE
        server.relayed += 1
        self.counted_relay = True
        self.buffer = bytearray()
        remaining = limits.handshake_timeout - (time.monotonic() - self.started)
        self._rearm(max(remaining, 0.0))

    def _feed(self, data):
        """Frames of `data`, or None when the connection was ended for bad framing."""
        framing = self.framing
        try:
            frames = framing.feed(data)
        except fr.FrameError as e:
            self.server.stats.protocol_errors += 1
            if self.client is None:
                log.info("relay client refused: %s", e)
            self.abort(str(e))
            return None
        if framing.outgoing:
            self.transport.write(bytes(framing.outgoing))
            framing.outgoing.clear()
        if framing.closed:  # the close frame answering the client's goes out first
            if self.client is not None:
                self._log_gone(self.client, "WebSocket closed by the client")
            self.state = CLOSED
            self.transport.close()
            return None
        return frames

    def _handshake_data(self, data):
        frames = self._feed(data)
        if not frames:
            return
        frame_type, payload = frames[0]
        try:
            if frame_type != fr.CLIENT_INFO:
                name = fr.NAMES.get(frame_type, str(frame_type))
                raise HandshakeError(f"expected ClientInfo, got {name}")
            key = parse_client_info(payload)
        except HandshakeError as e:
            self.server.stats.refused_handshake += 1
            log.info("relay client refused: %s", e)
            self.transport.write(self.framing.encode(fr.HEALTH, str(e).encode()))
            self.state = CLOSED
            self.transport.close()
            return
        self._register(key)
        if len(frames) > 1 and self.state == RELAY:
            self._relay_frames(frames[1:])

    def _register(self, key):
        server = self.server
        self.timer.cancel()
        self.timer = None
        self.client = Client(key, self._wake, self)
        old = server.router.register(self.client)
        self.state = RELAY
        if old is not None:
            old.owner.abort("replaced by a new connection with the same key")
        kind = "websocket" if isinstance(self.framing, WsFraming) else "relay"
        log.info("client %s connected (%s)", _short(key), kind)
        self._arm_ping()

    def _relay_data(self, data):
        self.rx_seen = True
        frames = self._feed(data)
        if frames:
            self._relay_frames(frames)

    def _relay_frames(self, frames):
        forward = self.server.router.forward
        client = self.client
        pongs = None
        max_len = fr.KEY_LEN + fr.MAX_PACKET_SIZE
        for frame_type, payload in frames:
            if frame_type == fr.SEND_PACKET:
                size = len(payload)
                if size < fr.KEY_LEN or size > max_len:
                    self._protocol_error(f"SendPacket frame of {size} bytes")
                    return
                forward(client, payload[: fr.KEY_LEN], payload[fr.KEY_LEN :])
            elif frame_type == fr.PING:
                if len(payload) != fr.PING_LEN:
                    self._protocol_error(f"Ping frame of {len(payload)} bytes")
                    return
                self.server.stats.pings_in += 1
                if pongs is None:
                    pongs = []
                pongs.append(self.framing.encode(fr.PONG, payload))
            elif frame_type == fr.PONG:
                if payload == self.ping_data:
                    self.ping_data = None
                    if self.pong_timer is not None:
                        self.pong_timer.cancel()
                        self.pong_timer = None
            elif frame_type == fr.HEALTH:
                self.abort("the client reported a problem")
                return
            # KeepAlive, NotePreferred, and types this server does not use: ignored
        if pongs and self.state == RELAY:
            self.transport.write(b"".join(pongs))

    def _protocol_error(self, reason):
        self.server.stats.protocol_errors += 1
        self.abort(reason)

    # -- writing ----------------------------------------------------------------------------

    def _wake(self):
        if not self.flush_pending and not self.paused:
            self.flush_pending = True
            self.loop.call_soon(self._flush)

    def _flush(self):
        self.flush_pending = False
        client = self.client
        if client is None or self.state != RELAY or self.paused or not client.queue:
            return
        parts = []
        packets = 0
        size = 0
        gone = 0
        encode = self.framing.packet_parts
        for src, data in self.server.router.take(client):
            if src is None:
                parts.append(self.framing.encode(fr.NODE_GONE, data))
                gone += 1
            else:
                parts.extend(encode(src, data))
                packets += 1
                size += len(data)
        stats = self.server.stats
        stats.packets_out += packets
        stats.bytes_out += size
        stats.node_gone_out += gone
        self.transport.write(b"".join(parts))

    def pause_writing(self):
        self.paused = True
        if self.write_timer is None and self.state != CLOSED:
            delay = self.server.limits.write_timeout
            self.write_timer = self.loop.call_later(delay, self._write_timed_out)

    def resume_writing(self):
        self.paused = False
        if self.write_timer is not None:
            self.write_timer.cancel()
            self.write_timer = None
        if self.client is not None and self.client.queue:
            self._flush()

    def _write_timed_out(self):
        self.write_timer = None
        self.server.stats.write_timeouts += 1
        self.abort(f"write timeout ({self.server.limits.write_timeout:g} s)")

    # -- keeping the client honest ------------------------------------------------------------

    def _arm_ping(self):
        limits = self.server.limits
        delay = limits.ping_interval + self.server.rng.uniform(*limits.ping_jitter)
        self.timer = self.loop.call_later(delay, self._ping_due)

    def _ping_due(self):
        self.timer = None
        if self.state != RELAY:
            return
        if self.rx_seen:
            self.rx_seen = False  # the client spoke lately: no ping needed yet
        elif self.ping_data is None:
            self.ping_data = os.urandom(fr.PING_LEN)
            self.server.stats.pings_out += 1
            self.transport.write(self.framing.encode(fr.PING, self.ping_data))
            timeout = self.server.limits.pong_timeout
            self.pong_timer = self.loop.call_later(timeout, self._pong_missed)
        self._arm_ping()

    def _pong_missed(self):
        self.pong_timer = None
        self.server.stats.pongs_missed += 1
        self.abort(f"no Pong within {self.server.limits.pong_timeout:g} s")
