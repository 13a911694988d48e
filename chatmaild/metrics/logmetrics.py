"""chatmail-logmetrics: the relay's log-derived counters, replacing mtail.

    chatmail-logmetrics [CONFIG] [--listen 127.0.0.1:3903] [--udp 127.0.0.1:PORT]
                        [--unix-dgram PATH] [--follow FILE] [--replay FILE [--print]]

Receives the Postfix/Dovecot/chatmaild syslog stream as datagrams (rsyslog `omfwd` over UDP,
or a unix datagram socket that rsyslog/journald forward to) and/or follows log files
(`--follow`, like `tail -F`; where no syslog daemon runs), classifies each line
(`logclass.classify`) and serves the counters in OpenMetrics on `--listen`. Malformed
datagrams and lines are counted and dropped. `--replay FILE` feeds a log file first (testing,
back-filling); with `--print` the exposition is printed and the program exits.
"""

import argparse
import asyncio
import logging
import os
import socket
import stat
import sys
from pathlib import Path

import asyncio_dgram
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import generate_latest

from chatmaild.daemon import StartupError, raise_nofile_limit, stop_event

from .exporter import parse_listen_spec, start_exporter
from .follow import FileFollower, follow
from .logclass import classify
from .logcounters import LogCounters
from .syslog import parse_datagram

log = logging.getLogger("chatmail-logmetrics")

DEFAULT_LISTEN = "127.0.0.1:3903"
DEFAULT_UDP = "127.0.0.1:3904"
RCVBUF = 4 * 1024 * 1024


class LogMetrics:
    """Counters plus the registry serving them; `feed(bytes)` is the whole per-datagram path."""

    def __init__(self):
        self.counters = LogCounters()
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(self.counters)

    def feed(self, data: bytes):
        counters = self.counters
        try:
            records = parse_datagram(data)
            if records is None:
                counters.counts["malformed"] += 1
                return
            for record in records:
                counters.counts["lines"] += 1
                counters.apply(classify(record))
        except Exception:  # a classifier bug must not stop the service
            counters.counts["malformed"] += 1
            log.exception("dropping a datagram that could not be classified")

    def drop(self):
        """Count a line dropped before classification (e.g. longer than the line limit)."""
        self.counters.counts["malformed"] += 1

    def replay(self, path: Path) -> int:
        """Feed every line of a log file; returns the number of lines read."""
        n = 0
        with open(path, "rb") as f:
            for line in f:
                line = line.rstrip(b"\r\n")
                if line:
                    self.feed(line)
                    n += 1
        return n


def parse_hostport(spec: str) -> tuple[str, int]:
    listen = parse_listen_spec(spec)
    if listen is None or listen.path is not None:
        raise ValueError(f"expected HOST:PORT: {spec!r}")
    return listen.host, listen.port


async def bind_udp(spec: str):
    host, port = parse_hostport(spec)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    _grow_rcvbuf(sock)
    sock.bind((host, port))
    return await asyncio_dgram.from_socket(sock)


async def bind_unix_dgram(path: Path):
    try:
        if stat.S_ISSOCK(path.lstat().st_mode):
            path.unlink()
    except FileNotFoundError:
        pass
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    _grow_rcvbuf(sock)
    sock.bind(str(path))
    os.chmod(path, 0o660)
    return await asyncio_dgram.from_socket(sock)


def _grow_rcvbuf(sock):
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
    except OSError:
        pass


async def receive(stream, metrics: LogMetrics):
    feed = metrics.feed
    while True:
        try:
            data, _ = await stream.recv()
        except asyncio_dgram.TransportClosed:
            return
        except OSError as exc:  # e.g. ICMP errors reported on the socket
            log.warning("receive error: %s", exc)
            continue
        feed(data)


class Running:
    """The receivers and the endpoint of a started service."""

    def __init__(self, streams, tasks, server, unix_paths, followers=()):
        self.streams = streams
        self.followers = list(followers)
        self.tasks = tasks
        self.server = server
        self.unix_paths = unix_paths

    async def close(self):
        for stream in self.streams:
            stream.close()
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        for follower in self.followers:
            follower.close()
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
        for path in self.unix_paths:
            Path(path).unlink(missing_ok=True)


async def start(
    metrics: LogMetrics,
    listen: str,
    udp: list[str],
    unix: list[Path],
    files: list[Path] = (),
    poll_interval: float | None = None,
) -> Running:
    """Bind the receivers, position the file followers, then open the endpoint.

    The endpoint answers only once every follower has its start position, so a client that
    sees it up knows that lines written from then on will be counted.
    """
    streams = []
    followers = [FileFollower(p, metrics.feed, metrics.drop) for p in files]
    try:
        for spec in udp:
            streams.append(await bind_udp(spec))
        for path in unix:
            streams.append(await bind_unix_dgram(Path(path)))
        server = await start_exporter(listen, metrics.registry)
    except BaseException:
        for stream in streams:
            stream.close()
        for follower in followers:
            follower.close()
        raise
    for stream in streams:
        log.info("receiving syslog datagrams on %s", stream.sockname)
    for follower in followers:
        log.info("following %s", follower.path)
    tasks = [asyncio.create_task(receive(s, metrics)) for s in streams]
    interval = {} if poll_interval is None else {"interval": poll_interval}
    tasks += [asyncio.create_task(follow(f, **interval)) for f in followers]
    return Running(streams, tasks, server, list(unix), followers)


async def serve(
    metrics: LogMetrics, listen: str, udp: list[str], unix: list[Path], files: list[Path] = ()
):
    running = await start(metrics, listen, udp, unix, files)
    stop = stop_event()
    try:
        await stop.wait()
    finally:
        await running.close()


def resolve_listen(listen: str | None, config_path: str | None) -> str:
    """--listen, else the ini's metrics_logmetrics, else 127.0.0.1:3903 (mtail's port)."""
    if listen is None and config_path:
        from chatmaild.config import load_config_or_exit

        listen = load_config_or_exit(config_path).metrics_logmetrics or None
    return listen or DEFAULT_LISTEN


def build_parser():
    p = argparse.ArgumentParser(prog="chatmail-logmetrics", description=__doc__.split("\n\n")[0])
    p.add_argument("config", nargs="?", help="chatmail.ini (metrics_logmetrics sets --listen)")
    p.add_argument("--listen", help=f"metrics endpoint (default {DEFAULT_LISTEN})")
    p.add_argument("--udp", action="append", default=[], help="receive syslog over UDP HOST:PORT")
    p.add_argument("--unix-dgram", action="append", default=[], type=Path, metavar="PATH")
    p.add_argument(
        "--follow",
        action="append",
        default=[],
        type=Path,
        metavar="FILE",
        help="follow a log file like tail -F (may be repeated)",
    )
    p.add_argument("--replay", type=Path, metavar="FILE", help="feed a log file first")
    p.add_argument("--print", action="store_true", help="with --replay: print and exit")
    p.add_argument("--openmetrics", action="store_true", help="--print in OpenMetrics format")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    listen = resolve_listen(args.listen, args.config)
    try:
        parse_listen_spec(listen)
        for spec in args.udp:
            parse_hostport(spec)
    except ValueError as exc:
        print(f"chatmail-logmetrics: {exc}", file=sys.stderr)
        return 2
    metrics = LogMetrics()
    if args.replay is not None:
        try:
            n = metrics.replay(args.replay)
        except OSError as exc:
            print(f"chatmail-logmetrics: {args.replay}: {exc.strerror}", file=sys.stderr)
            return 1
        log.info("replayed %d lines from %s", n, args.replay)
        if args.print:
            if args.openmetrics:
                from prometheus_client.openmetrics.exposition import generate_latest as om

                sys.stdout.write(om(metrics.registry).decode())
            else:
                sys.stdout.write(generate_latest(metrics.registry).decode())
            return 0
    udp = args.udp
    if not udp and not args.unix_dgram and not args.follow:
        udp = [DEFAULT_UDP]
    raise_nofile_limit()
    try:
        asyncio.run(serve(metrics, listen, udp, args.unix_dgram, args.follow))
    except (OSError, StartupError) as exc:
        print(f"chatmail-logmetrics: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
