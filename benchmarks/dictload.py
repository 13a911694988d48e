"""Load client for Dovecot dict services on a unix socket, shared by the dict benchmarks.

The client must cost much less than the server it measures, so it runs in separate
processes (forked), each a lean epoll loop over raw sockets with every request pre-built:
no asyncio, no per-request parsing beyond counting reply lines.

Two shapes, both blocking calls returning a `Load`:
- `conn_per_request`: `concurrency` connections always in flight, each sends one request
  (hello included) and is closed after its first reply line (Dovecot's usual pattern);
- `pipelined`: long-lived connections, each keeping up to `window` requests in flight.

Either runs until its requests are used up or `seconds` have passed; with `cycle=True` the
requests are reused round-robin, so the run is bounded by time alone. The server's CPU comes
from /proc/PID/stat, the clients' from getrusage in each client process, both over the
measured interval only (clients are started, then released together).
"""

import multiprocessing
import resource
import select
import socket
import time
from dataclasses import dataclass

from benchutil import percentile, proc_cpu_seconds

EPOLLIN = select.EPOLLIN
EPOLLOUT = select.EPOLLOUT


@dataclass
class Load:
    """What one load run did: successful replies, failures, wall time and CPU on both sides."""

    done: int
    errors: int
    seconds: float
    client_cpu_s: float
    server_cpu_s: float
    latencies: list  # sorted, seconds; conn-per-request only

    @property
    def rps(self) -> int:
        return round(self.done / self.seconds) if self.seconds else 0

    @property
    def server_cpu(self) -> float:
        """Server CPU as a share of one core over the run (1.0 = one core saturated)."""
        return self.server_cpu_s / self.seconds if self.seconds else 0.0

    @property
    def client_cpu(self) -> float:
        """Clients' CPU summed over their processes, as a share of one core."""
        return self.client_cpu_s / self.seconds if self.seconds else 0.0

    def latency_ms(self, q):
        value = percentile(self.latencies, q)
        return None if value is None else round(value * 1000, 3)


# -- reply accounting --------------------------------------------------------------------------


def _count_replies(chunk: bytes, at_line_start: bool, ok: bytes):
    """(complete reply lines, of which acceptable) in `chunk`."""
    lines = chunk.count(b"\n")
    if not lines:
        return 0, 0
    # line starts: the chunk start (if at a line start) and after every newline but a final one
    starts = chunk[:-1] if chunk.endswith(b"\n") else chunk
    good = sum(starts.count(b"\n" + bytes((p,))) for p in ok)
    if at_line_start and chunk[0] in ok:
        good += 1
    return lines, good


# -- workers (each in its own process) ---------------------------------------------------------


def _rusage_cpu():
    u = resource.getrusage(resource.RUSAGE_SELF)
    return u.ru_utime + u.ru_stime


def _conn_per_request_worker(path, requests, slots, seconds, cycle, ok, go, out):
    """Keep `slots` connections busy: connect, send one request, read one reply line, close."""
    AF_UNIX, SOCK_STREAM = socket.AF_UNIX, socket.SOCK_STREAM
    perf = time.perf_counter
    ep = select.epoll()
    conns = {}  # fd -> [socket, start time, partial reply]
    latencies = []
    errors = 0
    total = len(requests)
    next_index = 0
    out.send("ready")
    go.wait()
    cpu0 = _rusage_cpu()
    t0 = perf()
    deadline = t0 + seconds

    def start_one():
        nonlocal next_index, errors
        while next_index < total or (cycle and total):
            request = requests[next_index % total if cycle else next_index]
            next_index += 1
            s = socket.socket(AF_UNIX, SOCK_STREAM)
            try:
                s.connect(path)
                s.send(request)  # a few hundred bytes into an empty socket buffer: never short
            except OSError:
                s.close()
                errors += 1
                continue
            fd = s.fileno()
            conns[fd] = [s, perf(), b""]
            ep.register(fd, EPOLLIN)
            return

    for _ in range(slots):
        start_one()
    while conns:
        now = perf()
        if now > deadline:
            break
        for fd, _ in ep.poll(1.0):
            state = conns[fd]
            s = state[0]
            try:
                chunk = s.recv(65536)
            except OSError:
                chunk = b""
            if chunk and not chunk.endswith(b"\n"):
                state[2] += chunk
                continue
            reply = state[2] + chunk if state[2] else chunk
            if reply and reply[0] in ok:
                latencies.append(perf() - state[1])
            else:
                errors += 1
            del conns[fd]
            s.close()  # closing also removes it from the epoll set
            start_one()
    elapsed = perf() - t0
    cpu = _rusage_cpu() - cpu0
    for state in conns.values():
        state[0].close()
    out.send((latencies, errors, elapsed, cpu))
    out.close()


def _pipelined_worker(path, hello, conn_blobs, window, seconds, cycle, ok, go, out):
    """Pipelined connections; each keeps up to `window` requests in flight.

    `conn_blobs` holds, per connection, a list of (bytes, request count) batches."""
    conns = {}
    ep = select.epoll()
    for blobs in conn_blobs:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(path)
        s.sendall(hello)
        s.setblocking(False)
        # [socket, blobs, next blob, in flight, pending bytes, at line start, done]
        conns[s.fileno()] = [s, blobs, 0, 0, b"", True, False]
    out.send("ready")
    go.wait()
    cpu0 = _rusage_cpu()
    t0 = time.perf_counter()
    deadline = t0 + seconds
    received = errors = 0
    for fd in conns:
        ep.register(fd, EPOLLIN | EPOLLOUT)
    active = len(conns)
    while active and time.perf_counter() < deadline:
        for fd, mask in ep.poll(1.0):
            c = conns[fd]
            s = c[0]
            if mask & EPOLLIN:
                chunk = s.recv(1 << 20)
                if not chunk:
                    raise RuntimeError("server closed the connection")
                lines, good = _count_replies(chunk, c[5], ok)
                c[5] = chunk.endswith(b"\n")
                received += good
                errors += lines - good
                c[3] -= lines
            blobs = c[1]
            if not c[4]:
                nb = len(blobs)
                if c[2] < nb or cycle:
                    data, count = blobs[c[2] % nb]
                    if c[3] + count <= window:
                        c[4] = data
                        c[3] += count
                        c[2] += 1
            if c[4]:
                try:
                    n = s.send(c[4])
                    c[4] = c[4][n:]
                except BlockingIOError:
                    pass
            want = EPOLLIN
            if c[4] or ((c[2] < len(blobs) or cycle) and c[3] < window):
                want |= EPOLLOUT
            elif not c[3] and not cycle and c[2] >= len(blobs):
                active -= 1
                ep.unregister(fd)
                continue
            ep.modify(fd, want)
    elapsed = time.perf_counter() - t0
    cpu = _rusage_cpu() - cpu0
    for c in conns.values():
        c[0].close()
    out.send((received, errors, elapsed, cpu))
    out.close()


# -- drivers ---------------------------------------------------------------------------------


def _run(target, per_process_args, server_pid):
    """Start one process per args tuple, release them together, collect their results."""
    ctx = multiprocessing.get_context("fork")
    go = ctx.Event()
    pipes, procs = [], []
    for args in per_process_args:
        parent, child = ctx.Pipe(duplex=False)
        p = ctx.Process(target=target, args=(*args, go, child), daemon=True)
        p.start()
        child.close()
        pipes.append(parent)
        procs.append(p)
    for pipe in pipes:
        if pipe.recv() != "ready":
            raise RuntimeError("load client did not start")
    cpu0 = proc_cpu_seconds(server_pid)
    go.set()
    results = [pipe.recv() for pipe in pipes]
    server_cpu = proc_cpu_seconds(server_pid) - cpu0
    for p in procs:
        p.join()
    return results, server_cpu


def conn_per_request(
    path, requests, concurrency, seconds, server_pid, processes=2, cycle=False, ok=b"O"
) -> Load:
    """`concurrency` connections in flight, one request each; requests include the hello."""
    procs = max(1, min(concurrency, processes))
    shares = [requests[i::procs] for i in range(procs)]
    slots = [concurrency // procs + (1 if i < concurrency % procs else 0) for i in range(procs)]
    args = [
        (str(path), share, n, seconds, cycle, ok)
        for share, n in zip(shares, slots, strict=True)
        if n
    ]
    results, server_cpu = _run(_conn_per_request_worker, args, server_pid)
    latencies = sorted(lat for r in results for lat in r[0])
    return Load(
        done=len(latencies),
        errors=sum(r[1] for r in results),
        seconds=max(r[2] for r in results),
        client_cpu_s=sum(r[3] for r in results),
        server_cpu_s=server_cpu,
        latencies=latencies,
    )


def pipelined(
    path,
    hello,
    conn_lines,
    seconds,
    server_pid,
    window=20000,
    batch=500,
    processes=1,
    cycle=False,
    ok=b"O",
) -> Load:
    """One pipelined connection per list of request lines in `conn_lines`.

    With `cycle=True`, give each connection more lines than `window` so that a reused
    transaction id has been committed before it is sent again."""
    batch = max(1, min(batch, window))
    conn_blobs = [
        [
            (b"".join(lines[i : i + batch]), len(lines[i : i + batch]))
            for i in range(0, len(lines), batch)
        ]
        for lines in conn_lines
    ]
    procs = max(1, min(len(conn_blobs), processes))
    args = [
        (str(path), hello, conn_blobs[i::procs], window, seconds, cycle, ok) for i in range(procs)
    ]
    results, server_cpu = _run(_pipelined_worker, args, server_pid)
    return Load(
        done=sum(r[0] for r in results),
        errors=sum(r[1] for r in results),
        seconds=max(r[2] for r in results),
        client_cpu_s=sum(r[3] for r in results),
        server_cpu_s=server_cpu,
        latencies=[],
    )
