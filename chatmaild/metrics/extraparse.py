"""Pure parsers for the outputs chatmail-extra-metrics reads. No I/O, no clock.

Each raises ValueError on output it does not understand, so the caller can drop just that
metric family.
"""

import json
import math


def fail2ban_jails(status_output: str) -> list[str]:
    """`fail2ban-client status` -> jail names."""
    for line in status_output.splitlines():
        _, sep, value = line.partition("Jail list:")
        if sep:
            return [j.strip() for j in value.replace(",", " ").split() if j.strip()]
    raise ValueError("no 'Jail list:' line")


def fail2ban_jail_counts(jail_output: str) -> tuple[int, int]:
    """`fail2ban-client status JAIL` -> (currently banned, total banned)."""
    found = {}
    for line in jail_output.splitlines():
        for key in ("Currently banned:", "Total banned:"):
            _, sep, value = line.partition(key)
            if sep:
                found[key] = int(value.strip())
    if len(found) != 2:
        raise ValueError("missing 'Currently banned' or 'Total banned'")
    return found["Currently banned:"], found["Total banned:"]


def wireguard_peers(dump: str, now: float) -> list[dict]:
    """`wg show all dump` -> one dict per peer: interface, peer, handshake_age, rx, tx.

    Interface lines have 5 tab-separated fields, peer lines 9. A peer that never completed a
    handshake (latest-handshake 0) gets an age of +Inf.
    """
    peers = []
    for line in dump.splitlines():
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) == 5:
            continue
        if len(fields) != 9:
            raise ValueError(f"unexpected wg dump line with {len(fields)} fields")
        handshake = int(fields[5])
        peers.append(
            {
                "interface": fields[0],
                "peer": fields[1],
                "handshake_age": max(0.0, now - handshake) if handshake else math.inf,
                "rx": int(fields[6]),
                "tx": int(fields[7]),
            }
        )
    return peers


def postqueue_depth(json_lines: str) -> int:
    """`postqueue -j` -> number of queued messages (one JSON object per line)."""
    n = 0
    for line in json_lines.splitlines():
        if not line.strip():
            continue
        obj = json.loads(line)
        if not isinstance(obj, dict) or "queue_id" not in obj:
            raise ValueError("postqueue -j line without queue_id")
        n += 1
    return n


def doveadm_who_users(output: str) -> int:
    """`doveadm who -1` -> number of distinct connected users (header line skipped)."""
    users = set()
    for i, line in enumerate(output.splitlines()):
        fields = line.split()
        if not fields:
            continue
        if i == 0 and fields[0] == "username":
            continue
        users.add(fields[0])
    return len(users)
