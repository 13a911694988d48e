"""chatmail-iroh-relay: forwarding rate, added latency and memory per idle client.

    python benchmarks/bench_irohrelay.py [--seconds 5] [--clients 10000] [--json]

Starts the daemon (`python -m chatmaild.irohrelay`, one thread, so one core at most) on
loopback (with --pin: on CPU 0, the load on the others), and measures:

1. throughput: two clients send 1,200-byte packets to each other as fast as the relay takes
   them, each keeping at most --window packets in flight (below the per-client queue of 512,
   so nothing is dropped); packets/s and MB/s forwarded (both directions together), and the
   relay's CPU seconds per million packets (utime+stime from /proc);
2. latency: one client offers 1,000 packets/s (1,200 bytes, a send timestamp inside) to
   another; p50/p99 one-way latency through the relay, the same over a direct loopback TCP
   connection with the same client code, and the difference ("added"). With --realtime the
   load and the relay run as SCHED_FIFO for this part, so other load on a shared machine
   does not decide the tail;
3. memory: --clients clients connect and complete the handshake, then stay idle; the
   relay's RSS growth divided by the number of clients.

Goals (issue 18): >= 50,000 packets/s on one core, p99 added latency <= 1 ms, <= 8 KB per
idle client.
"""

import argparse
import asyncio
import json
import os
import resource
import selectors
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchutil import (  # noqa: E402
    free_port,
    p50_p99_ms,
    proc_cpu_seconds,
    proc_status_kb,
    stop_process,
    wait_port,
)

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: E402

from chatmaild.irohrelay import frames as fr  # noqa: E402
from chatmaild.irohrelay import handshake as hs  # noqa: E402

PACKET = 1200
FRAME = fr.HEADER_LEN + fr.KEY_LEN + PACKET  # SendPacket and RecvPacket are the same size
UPGRADE = b"GET /relay HTTP/1.1\r\nHost: bench\r\nUpgrade: iroh derp http\r\n\r\n"


class Relay:
    def __init__(self, max_clients, pin=False):
        self.dir = tempfile.TemporaryDirectory(prefix="bench-iroh-")
        self.port, self.metrics_port = free_port(), free_port()
        ini = Path(self.dir.name) / "chatmail.ini"
        ini.write_text(
            "[params]\nmail_domain = bench.example\n"
            f"iroh_relay_listen = 127.0.0.1:{self.port}\n"
            f"metrics_irohrelay = 127.0.0.1:{self.metrics_port}\n"
            f"iroh_relay_max_clients = {max_clients}\n"
        )
        argv = [sys.executable, "-m", "chatmaild.irohrelay", str(ini)]
        cpus = sorted(os.sched_getaffinity(0))
        if pin and len(cpus) > 1:
            argv = ["taskset", "-c", str(cpus[0]), *argv]
            os.sched_setaffinity(0, cpus[1:])
        self.log = open(Path(self.dir.name) / "relay.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(argv, stdout=self.log, stderr=self.log)
        wait_port(self.port)
        wait_port(self.metrics_port)

    def cpu_seconds(self):
        return proc_cpu_seconds(self.proc.pid)

    def rss_kb(self):
        rss = proc_status_kb(self.proc.pid, "VmRSS")
        if rss is None:
            raise RuntimeError("no VmRSS")
        return rss

    def metric(self, name):
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        total = 0.0
        for line in urllib.request.urlopen(url, timeout=10).read().decode().splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def close(self):
        stop_process(self.proc)
        self.log.close()
        self.dir.cleanup()


def _client_socket(port, key):
    """A connected, handshaken relay client socket (blocking); the 101 is read."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(UPGRADE + hs.client_info(key))
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        chunk = sock.recv(1)
        if not chunk:
            raise RuntimeError("relay closed during the upgrade")
        head += chunk
    if not head.startswith(b"HTTP/1.1 101"):
        raise RuntimeError(head.decode(errors="replace"))
    return sock


def _registered(sock):
    """Ping and wait for the Pong: the relay has processed the ClientInfo before it."""
    sock.sendall(fr.ping(b"register"))
    data = b""
    while fr.pong(b"register") not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise RuntimeError("relay closed the connection")
        data += chunk


# -- 1. throughput ----------------------------------------------------------------------------


def throughput(relay, seconds, window):
    keys = [Ed25519PrivateKey.generate() for _ in range(2)]
    pubs = [hs.public_key(k) for k in keys]
    socks = [_client_socket(relay.port, k) for k in keys]
    for sock in socks:
        _registered(sock)
        sock.setblocking(False)
    batch_packets = 32
    payload = os.urandom(PACKET)
    batches = [fr.send_packet(pubs[1 - i], payload) * batch_packets for i in range(2)]
    state = [{"sent": 0, "got_bytes": 0, "out": memoryview(b""), "sock": sock} for sock in socks]
    sel = selectors.DefaultSelector()
    for i, sock in enumerate(socks):
        sel.register(sock, selectors.EVENT_READ | selectors.EVENT_WRITE, i)

    def run(duration):
        end = time.perf_counter() + duration
        while time.perf_counter() < end:
            for sel_key, events in sel.select(0.1):
                i = sel_key.data
                me, peer = state[i], state[1 - i]
                if events & selectors.EVENT_READ:
                    data = me["sock"].recv(1 << 18)
                    if not data:
                        raise RuntimeError("relay closed a throughput connection")
                    me["got_bytes"] += len(data)
                if events & selectors.EVENT_WRITE:
                    if not me["out"]:
                        in_flight = me["sent"] - peer["got_bytes"] // FRAME
                        if in_flight + batch_packets > window:
                            continue
                        me["out"] = memoryview(batches[i])
                        me["sent"] += batch_packets
                    try:
                        n = me["sock"].send(me["out"])
                    except BlockingIOError:
                        n = 0
                    me["out"] = me["out"][n:]

    run(1.0)  # warm-up
    got0 = sum(s["got_bytes"] for s in state) // FRAME
    cpu0, t0 = relay.cpu_seconds(), time.perf_counter()
    dropped0 = relay.metric("chatmail_irohrelay_packets_dropped_total")
    run(seconds)
    elapsed = time.perf_counter() - t0
    cpu = relay.cpu_seconds() - cpu0
    packets = sum(s["got_bytes"] for s in state) // FRAME - got0
    dropped = relay.metric("chatmail_irohrelay_packets_dropped_total") - dropped0
    for sock in socks:
        sel.unregister(sock)
        sock.close()
    return {
        "packets_per_s": round(packets / elapsed),
        "mb_per_s": round(packets * PACKET / elapsed / 1e6, 1),
        "relay_cpu_share": round(cpu / elapsed, 2),
        "cpu_s_per_million_packets": round(cpu / packets * 1e6, 2) if packets else None,
        "packets_per_s_per_core": round(packets / cpu) if cpu else None,
        "dropped": int(dropped),
        "window": window,
    }


# -- 2. latency ---------------------------------------------------------------------------------


class Receiver(asyncio.Protocol):
    """Records one-way latency of frames whose data starts with a perf_counter timestamp."""

    def __init__(self, latencies, registered=None, http_head=True):
        self.decoder = fr.FrameDecoder()
        self.latencies = latencies
        self.registered = registered
        self.head = b"" if http_head else None  # the 101 response comes before any frame

    def data_received(self, data):
        now = time.perf_counter()
        if self.head is not None:
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                return
            data, self.head = self.head[end + 4 :], None
        for frame_type, payload in self.decoder.feed(data):
            if frame_type in (fr.RECV_PACKET, fr.SEND_PACKET):
                (sent,) = struct.unpack_from(">d", payload, fr.KEY_LEN)
                self.latencies.append(now - sent)
            elif frame_type == fr.PONG and self.registered is not None:
                self.registered.set_result(None)
                self.registered = None


async def _offer(transport, dst, rate, seconds):
    """Write one packet every 1/rate s (on schedule, not after the previous one)."""
    loop = asyncio.get_running_loop()
    pad = os.urandom(PACKET - 8)
    interval = 1.0 / rate
    start = loop.time()
    for n in range(int(rate * seconds)):
        delay = start + n * interval - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        transport.write(fr.send_packet(dst, struct.pack(">d", time.perf_counter()) + pad))


async def _through_relay(port, rate, seconds):
    loop = asyncio.get_running_loop()
    a_key, b_key = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    latencies = []
    registered = loop.create_future()
    b_transport, _ = await loop.create_connection(
        lambda: Receiver(latencies, registered), "127.0.0.1", port
    )
    b_transport.write(UPGRADE + hs.client_info(b_key) + fr.ping(b"register"))
    await asyncio.wait_for(registered, 10)
    a_registered = loop.create_future()
    a_transport, _ = await loop.create_connection(
        lambda: Receiver([], a_registered), "127.0.0.1", port
    )
    a_transport.write(UPGRADE + hs.client_info(a_key) + fr.ping(b"register"))
    await asyncio.wait_for(a_registered, 10)
    await _offer(a_transport, hs.public_key(b_key), rate, seconds)
    await asyncio.sleep(0.2)
    a_transport.close()
    b_transport.close()
    return latencies


async def _direct(rate, seconds):
    loop = asyncio.get_running_loop()
    latencies = []
    server = await loop.create_server(lambda: Receiver(latencies, http_head=False), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    a_transport, _ = await loop.create_connection(asyncio.Protocol, "127.0.0.1", port)
    await _offer(a_transport, bytes(32), rate, seconds)
    await asyncio.sleep(0.2)
    a_transport.close()
    server.close()
    return latencies


def _set_fifo(pids, on):
    """SCHED_FIFO (priority 10) or back to SCHED_OTHER for `pids` (needs root)."""
    policy, param = (os.SCHED_FIFO, 10) if on else (os.SCHED_OTHER, 0)
    for pid in pids:
        os.sched_setscheduler(pid, policy, os.sched_param(param))


def latency(relay, rate, seconds, realtime=False):
    if realtime:
        _set_fifo([0, relay.proc.pid], True)
    try:
        return _latency(relay, rate, seconds) | {"realtime": realtime}
    finally:
        if realtime:
            _set_fifo([0, relay.proc.pid], False)


def _latency(relay, rate, seconds):
    try:
        import uvloop

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:
        runner = asyncio.Runner()
    with runner:
        via_relay = sorted(runner.run(_through_relay(relay.port, rate, seconds)))
        direct = sorted(runner.run(_direct(rate, seconds)))
    r50, r99 = p50_p99_ms(via_relay)
    d50, d99 = p50_p99_ms(direct)
    return {
        "offered_per_s": rate,
        "received": len(via_relay),
        "relay_p50_ms": round(r50, 3),
        "relay_p99_ms": round(r99, 3),
        "direct_p50_ms": round(d50, 3),
        "direct_p99_ms": round(d99, 3),
        "added_p50_ms": round(r50 - d50, 3),
        "added_p99_ms": round(r99 - d99, 3),
    }


# -- 3. memory ----------------------------------------------------------------------------------


def memory(relay, clients):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = clients + 256
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard), hard))
    infos = [hs.client_info(Ed25519PrivateKey.generate()) for _ in range(clients)]
    before = relay.rss_kb()
    socks = []
    step = 500
    for start in range(0, clients, step):
        for info in infos[start : start + step]:
            sock = socket.create_connection(("127.0.0.1", relay.port))
            sock.sendall(UPGRADE + info)  # the 101 stays unread: an idle client
            socks.append(sock)
        deadline = time.monotonic() + 60
        while relay.metric("chatmail_irohrelay_clients") < len(socks):
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {relay.metric('chatmail_irohrelay_clients')} clients")
            time.sleep(0.05)
    time.sleep(1.0)
    after = relay.rss_kb()
    registered = relay.metric("chatmail_irohrelay_clients")
    for sock in socks:
        sock.close()
    return {
        "clients": int(registered),
        "rss_before_kb": before,
        "rss_after_kb": after,
        "kb_per_client": round((after - before) / clients, 2),
    }


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--window", type=int, default=400, help="packets in flight per client")
    p.add_argument("--rate", type=int, default=1000, help="packets/s offered for latency")
    p.add_argument("--clients", type=int, default=10000, help="idle clients for memory")
    p.add_argument(
        "--pin",
        action="store_true",
        help="pin the relay to the first CPU and the load to the others (on a busy shared"
        " machine this hurts: the relay then waits for that one CPU)",
    )
    p.add_argument(
        "--realtime",
        action="store_true",
        help="latency part only: run the load and the relay as SCHED_FIFO (root), so the"
        " other load of a shared machine does not delay them; measures the relay, not the"
        " machine",
    )
    p.add_argument("--only", choices=("throughput", "latency", "memory"), action="append")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    parts = args.only or ["throughput", "latency", "memory"]
    relay = Relay(max_clients=args.clients + 100, pin=args.pin)
    result = {"load_average_1m": os.getloadavg()[0], "pinned": args.pin}
    try:
        if "throughput" in parts:
            result["throughput"] = throughput(relay, args.seconds, args.window)
        if "latency" in parts:
            result["latency"] = latency(relay, args.rate, args.seconds, args.realtime)
        if "memory" in parts:
            result["memory"] = memory(relay, args.clients)
    finally:
        relay.close()
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"load average (1 min) at the start: {result['load_average_1m']:.1f}")
    if "throughput" in result:
        _print_throughput(result["throughput"])
    if "latency" in result:
        _print_latency(result["latency"])
    if "memory" in result:
        _print_memory(result["memory"])


def _print_throughput(t):
    print(
        f"throughput: {t['packets_per_s']:,} packets/s of {PACKET} bytes, {t['mb_per_s']} MB/s,"
        f" relay CPU {t['relay_cpu_share']:.0%} of a core,"
        f" {t['cpu_s_per_million_packets']} CPU-s per million packets"
        f" (= {t['packets_per_s_per_core']:,} packets/s per core), {t['dropped']} dropped"
    )


def _print_latency(lat):
    fifo = " (SCHED_FIFO)" if lat["realtime"] else ""
    print(
        f"latency at {lat['offered_per_s']} packets/s{fifo}: relay p50 {lat['relay_p50_ms']} ms,"
        f" p99 {lat['relay_p99_ms']} ms; direct p50 {lat['direct_p50_ms']} ms,"
        f" p99 {lat['direct_p99_ms']} ms; added p99 {lat['added_p99_ms']} ms"
    )


def _print_memory(m):
    print(
        f"memory: {m['clients']:,} idle clients, RSS {m['rss_before_kb']:,} ->"
        f" {m['rss_after_kb']:,} KB, {m['kb_per_client']} KB per client"
    )


if __name__ == "__main__":
    main()
