"""Small helpers shared by the benchmark scripts (importable: benchmarks/ is on sys.path)."""

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    """A loopback TCP port nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 15.0) -> None:
    """Return once something accepts connections on 127.0.0.1:port."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port}")


def proc_cpu_seconds(pid: int) -> float:
    """utime + stime of process `pid` (all its threads), in seconds (/proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_status_kb(pid: int, key: str):
    """A kB figure of /proc/PID/status (`VmRSS`, `VmHWM`, ...); None where it has none."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return None


def stop_process(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    """SIGTERM, then SIGKILL if it has not exited after `timeout` seconds; reaped either way."""
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


async def smtp_reply_code(reader) -> int:
    """The code of the next (possibly multi-line) SMTP reply on an asyncio StreamReader."""
    while True:
        line = await reader.readline()
        if not line:
            raise ConnectionError("closed")
        if line[3:4] != b"-":
            return int(line[:3])


def percentile(sorted_values, q):
    """Nearest-rank percentile `q` (0..1) of an ascending list; None for an empty one."""
    if not sorted_values:
        return None
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def p50_p99_ms(sorted_seconds):
    """(p50, p99) in ms of ascending latencies in seconds; (None, None) for none."""
    if not sorted_seconds:
        return None, None
    return 1000 * statistics.median(sorted_seconds), 1000 * percentile(sorted_seconds, 0.99)


def time_calls(func, seconds: float) -> tuple[int, float]:
    """Run func repeatedly (in growing batches) for about `seconds`; return (calls, elapsed)."""
    calls, batch = 0, 1
    start = time.perf_counter()
    while True:
        for _ in range(batch):
            func()
        calls += batch
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return calls, elapsed
        batch = min(batch * 2, 10_000)


def unlimited_relay_pair(name):
    """(state dir, RelayPair not yet up) for a two-relay benchmark: a fresh state dir under
    /tmp, namespaces `<name>-<pid>`, the per-user send limits out of the way."""
    from chatmaild.relay.federation import RelayPair

    state = Path(tempfile.mkdtemp(prefix=f"{name}-", dir="/tmp"))
    os.chmod(state, 0o755)
    pair = RelayPair(
        state,
        f"{name}-{os.getpid()}",
        ini_extra={"max_user_send_per_minute": 1000000, "max_user_send_burst_size": 1000000},
        log=lambda m: 0,
    )
    return state, pair


def relay_bench_args(doc, **more_ints):
    """Arguments of a whole-relay benchmark: --messages, --sessions, `more_ints` (name ->
    default), --json; exits unless run as root (Postfix, Dovecot, namespaces)."""
    p = argparse.ArgumentParser(description=doc.splitlines()[0])
    p.add_argument("--messages", type=int, default=300)
    p.add_argument("--sessions", type=int, default=10)
    for name, default in more_ints.items():
        p.add_argument(f"--{name}", type=int, default=default)
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root (Postfix, Dovecot, network namespaces)")
    return args
