"""chatmail-logmetrics over real UDP and unix datagram sockets, scraped over HTTP."""

import asyncio
import signal
import socket
import subprocess
import time
from pathlib import Path

from chatmaild.metrics.exporter import bound_address
from chatmaild.metrics.logmetrics import LogMetrics, main, start
from chatmaild.metrics.scrape import samples, scrape

from conftest import daemon_argv, daemon_env

DATA = Path(__file__).parent / "data" / "metrics"
PROG = (("prog", "delivered_mail.mtail"),)


def mtail(got, name):
    return got[(name, PROG)]


async def wait_for_lines(metrics, n):
    for _ in range(500):
        if metrics.counters.counts["lines"] + metrics.counters.counts["malformed"] >= n:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"only {metrics.counters.counts} arrived")


def send_samples(udp_addr, unix_path, garbage):
    """Send the sample logs the way forwarders do; returns the number of good datagrams."""
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    ux = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sent = 0
    # Postfix lines as rsyslog forwards them over UDP, chatmaild lines as journald does to a
    # unix socket (RFC 3164 without host), Dovecot lines bare as in a log file.
    for line in (DATA / "postfix.log").read_text().splitlines():
        udp.sendto(b"<22>" + line.encode(), udp_addr)
        sent += 1
    for line in (DATA / "chatmaild.log").read_text().splitlines():
        date, rest = line[:15], line[16:].split(" ", 1)[1]  # drop the host
        ux.sendto(f"<30>{date} {rest}".encode(), str(unix_path))
        sent += 1
    for line in (DATA / "dovecot.log").read_text().splitlines():
        ux.sendto(line.encode() + b"\n", str(unix_path))
        sent += 1
    for g in garbage:
        udp.sendto(g, udp_addr)
    udp.sendto(b"<22>Nov 30 06:41:00 eijo doveauth[1]: Created address: late@eijo.im", udp_addr)
    sent += 1
    udp.close()
    ux.close()
    return sent


async def test_udp_and_unix_dgram_feed_counters(tmp_path):
    metrics = LogMetrics()
    unix_path = tmp_path / "syslog.sock"
    running = await start(metrics, "127.0.0.1:0", ["127.0.0.1:0"], [unix_path])
    try:
        udp_addr = running.streams[0].sockname
        http_addr = bound_address(running.server)
        garbage = [b"\xff\xfe\xfd", b"", b"<999>x", b"a\x00b", bytes(range(256))]
        # a unix datagram queue holds only a few datagrams (net.unix.max_dgram_qlen): send
        # from a thread so the service's loop keeps draining, as with a real forwarder
        sent = await asyncio.to_thread(send_samples, udp_addr, unix_path, garbage)
        await wait_for_lines(metrics, sent + len(garbage))
        got = await asyncio.to_thread(samples, http_addr)
        assert mtail(got, "delivered_mail") == 2
        assert mtail(got, "created_accounts") == 3
        assert mtail(got, "postfix_noqueue") == 2
        assert mtail(got, "incoming_rejected_unencrypted_mail_count") == 1
        assert mtail(got, "quota_expire_removed_files") == 12
        assert got[("chatmail_deliveries_total", (("kind", "local"),))] == 1
        assert got[("chatmail_delivery_errors_total", (("status", "bounced"),))] == 2
        assert got[("chatmail_dkim_signed_total", ())] == 1
        assert got[("chatmail_encrypted_ratio", ())] == 0.5
        assert got[("chatmail_logmetrics_lines_total", ())] == sent
        assert got[("chatmail_logmetrics_malformed_total", ())] == len(garbage)
        # text 0.0.4 keeps the mtail exposition: plain names, no _total
        _, text = await asyncio.to_thread(scrape, http_addr, "text/plain")
        assert b'\ndelivered_mail{prog="delivered_mail.mtail"} 2.0\n' in text
    finally:
        await running.close()
    assert not unix_path.exists()


def test_replay_print(capsys):
    assert main(["--replay", str(DATA / "postfix.log"), "--print"]) == 0
    out = capsys.readouterr().out
    assert 'postfix_noqueue{prog="delivered_mail.mtail"} 2.0' in out
    assert 'chatmail_deliveries_total{kind="remote"} 1.0' in out
    assert main(["--replay", str(DATA / "missing.log"), "--print"]) == 1


def test_replay_survives_binary_lines(tmp_path, capsys):
    log = tmp_path / "mixed.log"
    log.write_bytes(
        (DATA / "dovecot.log").read_bytes() + b"\xff\xfe broken\n\x00\x01\n" + b"tail line\n"
    )
    assert main(["--replay", str(log), "--print", "--openmetrics"]) == 0
    out = capsys.readouterr().out
    assert "chatmail_logmetrics_malformed_total 2.0" in out
    assert 'delivered_mail{prog="delivered_mail.mtail"} 2.0' in out
    assert out.endswith("# EOF\n")


def _free_udp_port():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_cli_process_replay_then_serve(tmp_path):
    """The console entry point as a process: replay, then keep counting from datagrams."""
    listen = tmp_path / "metrics.sock"
    dgram = tmp_path / "log.sock"
    port = _free_udp_port()
    argv = daemon_argv(
        "chatmaild.metrics",
        "--listen", f"unix:{listen}",
        "--udp", f"127.0.0.1:{port}",
        "--unix-dgram", dgram,
        "--replay", DATA / "chatmaild.log",
    )  # fmt: skip
    proc = subprocess.Popen(argv, env=daemon_env(), stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 20
        while not (listen.exists() and dgram.exists()):
            assert proc.poll() is None, proc.stderr.read()
            assert time.monotonic() < deadline, "logmetrics did not start"
            time.sleep(0.05)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.sendto(
                b"<22>Nov 30 06:41:00 eijo doveauth[1]: Created address: x@eijo.im",
                ("127.0.0.1", port),
            )
            s.sendto(b"\xc3\x28 invalid utf-8", ("127.0.0.1", port))
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.sendto(
                b"<22>Nov 30 06:41:00 filtermail[9]: Outgoing: Filtering encrypted mail.",
                str(dgram),
            )
        while True:
            got = samples(f"unix:{listen}")
            if (
                got[("chatmail_logmetrics_lines_total", ())] >= 15
                and got[("chatmail_logmetrics_malformed_total", ())]
            ):
                break
            assert time.monotonic() < deadline, got
            time.sleep(0.05)
        assert mtail(got, "created_accounts") == 3  # 2 replayed + 1 over UDP
        assert mtail(got, "outgoing_encrypted_mail_count") == 3
        assert got[("chatmail_logmetrics_malformed_total", ())] == 1
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    assert not dgram.exists()


def test_listen_from_option_config_or_default(tmp_path, ini_path):
    from chatmaild.metrics.logmetrics import resolve_listen

    assert resolve_listen(None, None) == "127.0.0.1:3903"
    assert resolve_listen(None, str(ini_path)) == "127.0.0.1:3903"
    with open(ini_path, "a") as f:
        f.write(f"metrics_logmetrics = unix:{tmp_path}/lm.sock\n")
    assert resolve_listen(None, str(ini_path)) == f"unix:{tmp_path}/lm.sock"
    assert resolve_listen("127.0.0.1:9999", str(ini_path)) == "127.0.0.1:9999"


def test_bad_listen_spec_exits_2(capsys):
    assert main(["--listen", "nonsense", "--replay", str(DATA / "postfix.log")]) == 2
    assert "expected HOST:PORT" in capsys.readouterr().err
