"""The iroh relay's routing core and its HTTP front, without sockets."""

import pytest

from chatmaild.irohrelay import core, httpfront
from chatmaild.irohrelay.core import Client, Router

A, B, C = (bytes([n]) * 32 for n in (1, 2, 3))


class Woken(Client):
    __slots__ = ("woken",)


def make(key):
    woken = []
    c = Woken(key, lambda: woken.append(1))
    c.woken = woken
    return c


def test_forward_both_ways_and_wake_once_per_batch():
    router = Router()
    a, b = make(A), make(B)
    router.register(a)
    router.register(b)
    assert router.forward(a, B, b"one") == core.FORWARDED
    assert router.forward(a, B, b"two") == core.FORWARDED
    assert router.forward(b, A, b"back") == core.FORWARDED
    assert router.take(b) == [(A, b"one"), (A, b"two")] and len(b.woken) == 1
    assert router.take(a) == [(B, b"back")]
    assert router.stats.packets_in == 3 and router.stats.bytes_in == 10


def test_unknown_key_is_dropped():
    router = Router()
    a = make(A)
    router.register(a)
    assert router.forward(a, C, b"lost") == core.NO_PEER
    assert router.stats.dropped_no_peer == 1 and router.stats.dropped_bytes == 4


def test_full_queue_drops_by_count_and_by_bytes():
    router = Router(queue_depth=3, queue_bytes=100)
    a, b = make(A), make(B)
    router.register(a)
    router.register(b)
    assert [router.forward(a, B, b"x") for _ in range(4)] == [0, 0, 0, core.QUEUE_FULL]
    router.take(b)
    assert router.forward(a, B, bytes(60)) == core.FORWARDED
    assert router.forward(a, B, bytes(60)) == core.QUEUE_FULL
    assert router.stats.dropped_queue_full == 2


def test_all_queues_together_are_bounded():
    router = Router(total_bytes=100)
    a, b, c = make(A), make(B), make(C)
    for x in (a, b, c):
        router.register(x)
    assert router.forward(a, B, bytes(60)) == core.FORWARDED
    assert router.forward(a, C, bytes(60)) == core.QUEUE_FULL
    router.take(b)
    assert router.forward(a, C, bytes(60)) == core.FORWARDED
    router.unregister(c)
    assert router.queued_total == 0


def test_disco_packets_have_their_own_budget():
    router = Router(queue_depth=3, disco_depth=2)
    a, b = make(A), make(B)
    router.register(a)
    router.register(b)
    disco = b"\x40\x00" + core.DISCO_MAGIC + bytes(58)  # one datagram of 64 bytes
    assert [router.forward(a, B, b"data") for _ in range(4)] == [0, 0, 0, core.QUEUE_FULL]
    assert [router.forward(a, B, disco) for _ in range(3)] == [0, 0, core.QUEUE_FULL]
    big = b"\x00\x10" + core.DISCO_MAGIC + bytes(core.DISCO_MAX_LEN)  # too big: data
    assert router.forward(a, B, big) == core.QUEUE_FULL
    assert len(router.take(b)) == 5 and b.disco == 0
    assert router.forward(a, B, disco) == core.FORWARDED
    assert router.stats.disco_in == 4


def test_duplicate_key_replaces_and_the_old_one_leaves_quietly():
    router = Router()
    a1, a2, b = make(A), make(A), make(B)
    router.register(b)
    assert router.register(a1) is None
    router.forward(a1, B, b"x")
    assert router.register(a2) is a1 and a1.closed
    router.unregister(a1)  # the replaced connection closes later: no effect
    assert router.clients[A] is a2
    router.take(b)
    assert not b.queue  # no NodeGone for a replaced key
    assert router.stats.replaced == 1


def test_node_gone_to_those_it_sent_to():
    router = Router()
    a, b, c = make(A), make(B), make(C)
    for x in (a, b, c):
        router.register(x)
    router.forward(a, B, b"x")
    router.take(b)
    router.unregister(a)
    assert router.take(b) == [(None, A)]
    assert not c.queue
    assert A not in router.clients


def test_queued_packets_of_a_leaving_client_are_counted_as_dropped():
    router = Router()
    a, b = make(A), make(B)
    router.register(a)
    router.register(b)
    router.forward(a, B, b"x")
    router.forward(a, B, b"y")
    router.unregister(b)
    assert router.stats.dropped_closed == 2


def test_sent_to_is_bounded():
    router = Router(sent_to_limit=2)
    a = make(A)
    router.register(a)
    for n in range(5):
        key = bytes([n + 10]) * 32
        router.register(make(key))
        router.forward(a, key, b"x")
    assert len(a.sent_to) == 2


# -- HTTP front -----------------------------------------------------------------------------


def req(text):
    return httpfront.parse_head(text.replace("\n", "\r\n").encode() + b"\r\n")


def test_relay_upgrade():
    for path in ("/relay", "/derp"):
        reply = httpfront.answer(req(f"GET {path} HTTP/1.1\nUpgrade: iroh derp http\n"))
        assert reply.status == 101 and reply.upgrade == httpfront.RELAY
        assert b"Upgrade: iroh derp http\r\n" in reply.response


def test_relay_without_or_with_unknown_upgrade_is_400():
    for extra in ("", "Upgrade: h2c\n"):
        reply = httpfront.answer(req(f"GET /relay HTTP/1.1\n{extra}"))
        assert reply.status == 400 and reply.upgrade is None


def test_relay_full_is_503():
    reply = httpfront.answer(req("GET /relay HTTP/1.1\nUpgrade: iroh derp http\n"), full=True)
    assert reply.status == 503 and reply.close


def test_websocket_upgrade_rfc6455_example():
    reply = httpfront.answer(
        req(
            "GET /relay HTTP/1.1\nUpgrade: websocket\nConnection: Upgrade\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\nSec-WebSocket-Version: 13\n"
        )
    )
    assert reply.status == 101 and reply.upgrade == httpfront.WEBSOCKET
    assert b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n" in reply.response
    bad = httpfront.answer(req("GET /relay HTTP/1.1\nUpgrade: websocket\nSec-WebSocket-Key: x\n"))
    assert bad.status == 400 and b"Sec-WebSocket-Version: 13" in bad.response


@pytest.mark.parametrize(
    "challenge, echoed",
    [("abc-1.2_3", True), ("", False), ("x" * 63, True), ("x" * 64, False), ("a b", False)],
)
def test_generate_204(challenge, echoed):
    reply = httpfront.answer(
        req(f"GET /generate_204 HTTP/1.1\nX-Tailscale-Challenge: {challenge}\n")
    )
    assert reply.status == 204
    assert (f"X-Tailscale-Response: response {challenge}\r\n".encode() in reply.response) == echoed
    assert b"Content-Length" not in reply.response


def test_ping_index_robots_404_405_head():
    ping = httpfront.answer(req("GET /ping HTTP/1.1\n"))
    assert ping.status == 200 and b"Access-Control-Allow-Origin: *" in ping.response
    assert ping.response.endswith(b"Content-Length: 0\r\n\r\n")
    assert httpfront.answer(req("GET / HTTP/1.1\n")).response.endswith(httpfront.INDEX)
    assert httpfront.answer(req("GET /robots.txt HTTP/1.1\n")).response.endswith(httpfront.ROBOTS)
    assert httpfront.answer(req("GET /nope HTTP/1.1\n")).status == 404
    assert httpfront.answer(req("POST /ping HTTP/1.1\n")).status == 405
    head = httpfront.answer(req("HEAD / HTTP/1.1\n"))
    assert head.status == 200 and head.response.endswith(b"\r\n\r\n")
    assert httpfront.answer(req("GET /ping HTTP/1.0\n")).close
    assert httpfront.answer(req("GET /ping HTTP/1.1\nConnection: close\n")).close


@pytest.mark.parametrize(
    "head",
    [
        b"GET /\r\n\r\n",
        b"GET / HTTP/2\r\n\r\n",
        b"GET / HTTP/1.1\r\nno colon\r\n\r\n",
        b"GET / HTTP/1.1\r\nContent-Length: 5\r\n\r\n",
        b"GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
    ],
)
def test_bad_heads(head):
    with pytest.raises(httpfront.HttpError) as e:
        httpfront.parse_head(head)
    assert e.value.status == 400


def test_split_head_bounds():
    assert httpfront.split_head(b"GET / HTTP/1.1\r\n") == 0
    assert httpfront.split_head(b"GET / HTTP/1.1\r\n\r\nxx") == 18
    with pytest.raises(httpfront.HttpError) as e:
        httpfront.split_head(b"x" * (httpfront.MAX_HEAD + 10))
    assert e.value.status == 431
