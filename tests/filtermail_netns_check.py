"""Run inside a private network namespace by test_filtermail_server_daemon.py.

`python filtermail_netns_check.py INI REPO_ROOT`: starts aiosmtpd sinks on the reinjection
ports 10025/10026, the real `python -m chatmaild.filtermail INI outgoing|incoming` daemons on
the configured ports 10080/10081 (and incoming's HTTP listener on 10082), sends mail through
all three, opens 500 connections at once,
stops the daemons with SIGTERM, and prints one JSON object with what it saw.
"""

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time

import aiohttp
from filtermail_samples import SENDER, armor, encrypt, encrypted_mail, plain_mail
from filtermail_server_helpers import Client, RecordingSink

from chatmaild.filtermail.mxdeliv import request_headers, stuff_body

INI, ROOT = sys.argv[1], sys.argv[2]
SIMULTANEOUS = 500


def wait_port(port, deadline):
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return True
        time.sleep(0.05)
    return False


async def simultaneous_connects(port, count):
    conns = await asyncio.gather(
        *(asyncio.open_connection("127.0.0.1", port) for _ in range(count)),
        return_exceptions=True,
    )
    banners = 0
    for conn in conns:
        if isinstance(conn, BaseException):
            continue
        reader, writer = conn
        try:
            line = await asyncio.wait_for(reader.readline(), 20)
            banners += line.startswith(b"220 ")
        except (TimeoutError, OSError):
            pass
    for conn in conns:
        if not isinstance(conn, BaseException):
            conn[1].close()
    return banners


async def main():
    result = {}
    out_sink = await RecordingSink().start(10025)
    in_sink = await RecordingSink().start(10026)
    env = dict(os.environ, PYTHONPATH=ROOT)
    procs = {
        mode: subprocess.Popen(
            [sys.executable, "-m", "chatmaild.filtermail", INI, mode],
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        for mode in ("outgoing", "incoming")
    }
    try:
        deadline = time.monotonic() + 20
        ready = [await asyncio.to_thread(wait_port, p, deadline) for p in (10080, 10081)]
        result["listening"] = ready
        message = encrypted_mail(
            armor(encrypt(("x25519",), 3000)), sender="alice@eijo.im", to="carol@other.test"
        )
        client = await Client.connect(10080)
        result["outgoing"] = await client.send_mail("alice@eijo.im", ["carol@other.test"], message)
        result["outgoing_plain"] = await client.send_mail(
            "alice@eijo.im", ["carol@other.test"], plain_mail(sender="alice@eijo.im")
        )
        await client.close()
        client = await Client.connect(10081)
        # DKIM verification is on by default; no resolver answers inside the namespace,
        # so: unsigned mail is refused without DNS, an IP-literal sender is exempt when
        # Postfix forwards that address as the client's (XFORWARD ADDR).
        result["incoming_unsigned"] = await client.send_mail(
            SENDER, ["bob@eijo.im"], plain_mail(to="bob@eijo.im")
        )
        result["incoming"] = await client.send_mail(
            "alice@[192.0.2.1]",
            ["bob@eijo.im"],
            plain_mail("alice@[192.0.2.1]", "bob@eijo.im"),
            xforward=b"ADDR=192.0.2.1",
        )
        await client.close()
        # the same filter over HTTP (/mxdeliv, the default port 10082), as nginx forwards it
        async with aiohttp.ClientSession() as session:
            literal = plain_mail("alice@[192.0.2.1]", "bob@eijo.im")
            async with session.post(
                "http://127.0.0.1:10082/mxdeliv",
                data=stuff_body(literal),
                headers=[
                    *request_headers("alice@[192.0.2.1]", ["bob@eijo.im"]),
                    ("X-Real-IP", "192.0.2.1"),
                ],
            ) as resp:
                result["http"] = [resp.status, await resp.text()]
        result["outgoing_identical"] = [m.data for m in out_sink.messages] == [message]
        result["incoming_count"] = len(in_sink.messages)
        result["simultaneous_banners"] = await simultaneous_connects(10080, SIMULTANEOUS)
    finally:
        for proc in procs.values():
            proc.send_signal(signal.SIGTERM)
        codes = {}
        logs = {}
        for mode, proc in procs.items():
            try:
                _, err = await asyncio.to_thread(proc.communicate, timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                _, err = proc.communicate()
            codes[mode] = proc.returncode
            logs[mode] = err.splitlines()
        result["exit_codes"] = codes
        result["logs"] = logs
        await out_sink.stop()
        await in_sink.stop()
    print(json.dumps(result))


asyncio.run(main())
