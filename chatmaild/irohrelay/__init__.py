"""chatmail-iroh-relay: the iroh relay (protocol of iroh 0.35, as Delta Chat 2.x speaks it).

Layers, each in its own module: `frames` (the 0.35 wire codec, no I/O), `handshake` (the
ClientInfo frame and its ed25519 signature), `websocket` (the alternative framing), `httpfront`
(the HTTP/1.1 request heads in front of the upgrade), `core` (routing by client key: bounded
queues, replacement of a duplicate key, NodeGone; knows no frames), `server` (the asyncio
Protocol tying them together) and `cli`. docs/irohrelay.md has the details.
"""
