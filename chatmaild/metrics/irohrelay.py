"""Metrics of chatmail-iroh-relay, read from its plain counters at scrape time.

The relay counts with plain integer attributes on its hot path (`core.Stats`,
`server.ServerStats`); this collector turns them into Prometheus families only when scraped.
"""

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily

P = "chatmail_irohrelay_"


def _counter(name, doc, value, labels=None):
    if labels is None:
        family = CounterMetricFamily(P + name, doc)
        family.add_metric([], value)
        return family
    label, values = labels
    family = CounterMetricFamily(P + name, doc, labels=[label])
    for label_value, v in values:
        family.add_metric([label_value], v)
    return family


class IrohRelayCollector:
    def __init__(self, server):
        self.server = server

    def collect(self):
        server = self.server
        routed = server.router.stats
        out = server.stats
        clients = GaugeMetricFamily(P + "clients", "Relay clients connected (after ClientInfo)")
        clients.add_metric([], len(server.router))
        yield clients
        conns = GaugeMetricFamily(P + "connections", "Open TCP connections, any state")
        conns.add_metric([], len(server.connections))
        yield conns
        yield _counter(
            "accepts",
            "Connections upgraded to the relay protocol, by framing",
            None,
            ("framing", (("relay", out.accepts_relay), ("websocket", out.accepts_websocket))),
        )
        yield _counter(
            "refused",
            "Connections refused, by reason (handshake: bad or missing ClientInfo; full: limit)",
            None,
            ("reason", (("handshake", out.refused_handshake), ("full", out.refused_full))),
        )
        yield _counter(
            "protocol_errors", "Connections ended for a framing error", out.protocol_errors
        )
        yield _counter(
            "packets_received", "SendPacket frames received from clients", routed.packets_in
        )
        yield _counter("bytes_received", "Data bytes in SendPacket frames", routed.bytes_in)
        yield _counter(
            "disco_packets_received",
            "SendPacket frames that carry iroh disco (hole punching) messages",
            routed.disco_in,
        )
        yield _counter("packets_forwarded", "Packets written to their destination", out.packets_out)
        yield _counter("bytes_forwarded", "Data bytes written to destinations", out.bytes_out)
        yield _counter(
            "packets_dropped",
            "Packets dropped, by reason (no_peer: destination not connected; queue_full: "
            "the destination's queue was full; closed: queued when the destination left)",
            None,
            (
                "reason",
                (
                    ("no_peer", routed.dropped_no_peer),
                    ("queue_full", routed.dropped_queue_full),
                    ("closed", routed.dropped_closed),
                ),
            ),
        )
        yield _counter(
            "bytes_dropped", "Data bytes dropped (no_peer or queue_full)", routed.dropped_bytes
        )
        yield _counter(
            "replaced", "Clients replaced by a new connection with the same key", routed.replaced
        )
        yield _counter("node_gone", "NodeGone frames sent", out.node_gone_out)
        yield _counter("pings_received", "Ping frames answered with a Pong", out.pings_in)
        yield _counter("pings_sent", "Ping frames sent by the relay", out.pings_out)
        yield _counter(
            "pongs_missed", "Clients ended for a Pong that came too late", out.pongs_missed
        )
        yield _counter(
            "write_timeouts", "Clients ended because writing to them stalled", out.write_timeouts
        )
        yield _counter("http_requests", "HTTP requests answered", out.http_requests)


def registry_for(server) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(IrohRelayCollector(server))
    return registry
