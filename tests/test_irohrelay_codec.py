"""The iroh 0.35 relay codec against the vectors of iroh's `test_frame_snapshot`
(n0-computer/iroh v0.35.0, iroh-relay/src/protos/relay.rs), the ClientInfo handshake, and the
WebSocket framing. No sockets."""

import os

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from chatmaild.irohrelay import frames as fr
from chatmaild.irohrelay import handshake as hs
from chatmaild.irohrelay import websocket as ws

SECRET = bytes([42] * 32)
KEY42 = Ed25519PrivateKey.from_private_bytes(SECRET)
PUBLIC = bytes.fromhex("197f6b23e16c8532c6abc838facd5ea789be0c76b2920334039bfa8b3d368d61")

# (what, type byte + payload as in `encode_for_ws_msg`), copied from the snapshot test
SNAPSHOT = [
    (
        "ClientInfo",
        """02 52 45 4c 41 59 f0 9f 94 91 19 7f 6b 23 e1 6c
        85 32 c6 ab c8 38 fa cd 5e a7 89 be 0c 76 b2 92
        03 34 03 9b fa 8b 3d 36 8d 61 88 e7 7b 22 f2 92
        ab 37 43 5d a8 de 0b c8 cb 84 e2 88 f4 e7 3b 35
        82 a5 27 31 e9 ff 98 65 46 5c 87 e0 5e 8d 42 7d
        f4 22 bb 6e 85 e1 c0 5f 6f 74 98 37 ba a4 a5 c7
        eb a3 23 0d 77 56 99 10 43 0e 03""",
    ),
    (
        "Health",
        """0e 48 65 6c 6c 6f 3f 20 59 65 73 20 74 68 69 73
        20 69 73 20 64 6f 67 2e""",
    ),
    ("KeepAlive", "06"),
    ("NotePreferred", "07 01"),
    (
        "NodeGone",
        """08 19 7f 6b 23 e1 6c 85 32 c6 ab c8 38 fa cd 5e
        a7 89 be 0c 76 b2 92 03 34 03 9b fa 8b 3d 36 8d
        61""",
    ),
    ("Ping", "0c 2a 2a 2a 2a 2a 2a 2a 2a"),
    ("Pong", "0d 2a 2a 2a 2a 2a 2a 2a 2a"),
    (
        "RecvPacket",
        """05 19 7f 6b 23 e1 6c 85 32 c6 ab c8 38 fa cd 5e
        a7 89 be 0c 76 b2 92 03 34 03 9b fa 8b 3d 36 8d
        61 48 65 6c 6c 6f 20 57 6f 72 6c 64 21""",
    ),
    (
        "SendPacket",
        """04 19 7f 6b 23 e1 6c 85 32 c6 ab c8 38 fa cd 5e
        a7 89 be 0c 76 b2 92 03 34 03 9b fa 8b 3d 36 8d
        61 47 6f 6f 64 62 79 65 21""",
    ),
    ("Restarting", "0f 00 00 00 0a 00 00 00 14"),
]


def vector(name):
    return bytes.fromhex("".join(dict(SNAPSHOT)[name].split()))


def ours(name):
    """Our encoding of the snapshot's frame, as (type, payload)."""
    return {
        "ClientInfo": (fr.CLIENT_INFO, hs.client_info_payload(KEY42)),
        "Health": (fr.HEALTH, b"Hello? Yes this is dog."),
        "KeepAlive": (fr.KEEP_ALIVE, b""),
        "NotePreferred": (fr.NOTE_PREFERRED, b"\x01"),
        "NodeGone": (fr.NODE_GONE, PUBLIC),
        "Ping": (fr.PING, bytes([42] * 8)),
        "Pong": (fr.PONG, bytes([42] * 8)),
        "RecvPacket": (fr.RECV_PACKET, PUBLIC + b"Hello World!"),
        "SendPacket": (fr.SEND_PACKET, PUBLIC + b"Goodbye!"),
        "Restarting": (fr.RESTARTING, fr.restarting(10, 20)[fr.HEADER_LEN :]),
    }[name]


def stream_form(name):
    raw = vector(name)
    return bytes([raw[0]]) + len(raw[1:]).to_bytes(4, "big") + raw[1:]


def test_the_secret_key_of_42s_has_the_snapshots_public_key():
    assert hs.public_key(KEY42) == PUBLIC


@pytest.mark.parametrize("name", [name for name, _ in SNAPSHOT])
def test_encoding_matches_the_snapshot(name):
    frame_type, payload = ours(name)
    assert fr.encode_ws(frame_type, payload) == vector(name)
    assert fr.encode(frame_type, payload) == stream_form(name)


def test_helpers_match_the_snapshot():
    assert fr.recv_packet(PUBLIC, b"Hello World!") == stream_form("RecvPacket")
    assert fr.send_packet(PUBLIC, b"Goodbye!") == stream_form("SendPacket")
    assert fr.ping(bytes([42] * 8)) == stream_form("Ping")
    assert fr.pong(bytes([42] * 8)) == stream_form("Pong")
    assert fr.node_gone(PUBLIC) == stream_form("NodeGone")
    assert fr.health("Hello? Yes this is dog.") == stream_form("Health")
    assert hs.client_info(KEY42) == stream_form("ClientInfo")
    assert fr.parse_restarting(vector("Restarting")[1:]) == (10, 20)


ALL = b"".join(stream_form(name) for name, _ in SNAPSHOT)
EXPECTED = [(vector(name)[0], vector(name)[1:]) for name, _ in SNAPSHOT]


def test_decoder_whole():
    assert fr.FrameDecoder().feed(ALL) == EXPECTED


def test_decoder_byte_by_byte():
    decoder = fr.FrameDecoder()
    got = []
    for i in range(len(ALL)):
        got += decoder.feed(ALL[i : i + 1])
    assert got == EXPECTED and decoder.buffered() == 0


def test_decoder_with_trailing_partial_frame():
    decoder = fr.FrameDecoder()
    tail = stream_form("Ping")[:7]
    assert decoder.feed(ALL + tail) == EXPECTED
    assert decoder.buffered() == 7
    assert decoder.feed(stream_form("Ping")[7:]) == [(fr.PING, bytes([42] * 8))]


def test_decoder_in_odd_chunks():
    big = fr.send_packet(PUBLIC, os.urandom(fr.MAX_PACKET_SIZE))
    data = ALL + big + ALL
    decoder = fr.FrameDecoder()
    got = []
    for i in range(0, len(data), 999):
        got += decoder.feed(data[i : i + 999])
    assert got == EXPECTED + [(fr.SEND_PACKET, big[5:])] + EXPECTED


def test_oversized_frame_is_an_error_before_its_payload_arrives():
    decoder = fr.FrameDecoder()
    header = bytes([fr.SEND_PACKET]) + (fr.MAX_FRAME_SIZE + 1).to_bytes(4, "big")
    with pytest.raises(fr.FrameError, match="limit"):
        decoder.feed(header)
    at_limit = bytes([fr.HEALTH]) + (fr.MAX_FRAME_SIZE).to_bytes(4, "big")
    assert fr.FrameDecoder().feed(at_limit) == []  # accepted, waiting for the payload
    assert len(fr.FrameDecoder().feed(fr.encode(fr.HEALTH, bytes(fr.MAX_FRAME_SIZE)))) == 1


def test_encode_refuses_an_oversized_frame():
    with pytest.raises(ValueError):
        fr.encode(fr.HEALTH, bytes(fr.MAX_FRAME_SIZE + 1))


def test_decode_all_refuses_a_truncated_stream():
    with pytest.raises(fr.FrameError):
        fr.decode_all(ALL[:-1])


# -- handshake ------------------------------------------------------------------------------


def test_snapshot_client_info_is_accepted():
    assert hs.parse_client_info(vector("ClientInfo")[1:]) == PUBLIC


def test_fresh_key_is_accepted():
    key = Ed25519PrivateKey.generate()
    assert hs.parse_client_info(hs.client_info_payload(key)) == hs.public_key(key)


def _flip(data, index):
    data = bytearray(data)
    data[index] ^= 1
    return bytes(data)


GOOD = vector("ClientInfo")[1:]


@pytest.mark.parametrize(
    "payload, reason",
    [
        (GOOD[:-2], "ClientInfo frame of"),
        (_flip(GOOD, 0), "magic"),
        (_flip(GOOD, 20), "invalid signature"),  # key changed
        (_flip(GOOD, 60), "invalid signature"),  # signature changed
        (GOOD[:-1] + b"\x04", "invalid signature"),  # message changed after signing
        (hs.client_info_payload(KEY42, version=2), "unexpected client version 2"),
        (hs.client_info_payload(KEY42, version=300), "unexpected client version 300"),
        (hs.MAGIC + PUBLIC + bytes(64), "invalid signature"),
    ],
    ids=["short", "magic", "key", "signature", "message", "v2", "v300", "zero-signature"],
)
def test_refused_client_info(payload, reason):
    with pytest.raises(hs.HandshakeError, match=reason):
        hs.parse_client_info(payload)


def test_varints():
    for value in (0, 1, 3, 127, 128, 300, 2**32, 2**63):
        assert hs.decode_varint(hs.encode_varint(value)) == value
    assert hs.encode_varint(3) == b"\x03" and hs.encode_varint(300) == b"\xac\x02"
    with pytest.raises(hs.HandshakeError):
        hs.decode_varint(b"\x80\x80")
    with pytest.raises(hs.HandshakeError):
        hs.decode_varint(b"")


# -- WebSocket framing ----------------------------------------------------------------------

MASK = b"\x01\x02\x03\x04"


def test_ws_message_carries_the_snapshot_frames():
    framing = ws.WsFraming()
    data = b"".join(ws.mask_frame(ws.OP_BINARY, vector(name), MASK) for name, _ in SNAPSHOT)
    got = []
    for i in range(len(data)):
        got += framing.feed(data[i : i + 1])
    assert got == EXPECTED
    assert framing.feed(data) == EXPECTED


def test_ws_encode_is_a_binary_message_of_the_ws_form():
    framing = ws.WsFraming()
    out = framing.encode(fr.PONG, bytes([42] * 8))
    assert out == bytes([0x82, 9]) + vector("Pong")
    head, data = framing.packet_parts(PUBLIC, b"Hello World!")
    assert head + data == bytes([0x82, len(vector("RecvPacket"))]) + vector("RecvPacket")


def test_ws_lengths_16_and_64_bit():
    payload = os.urandom(70000)
    framing = ws.WsFraming()
    msg = bytes([fr.SEND_PACKET]) + PUBLIC + payload
    assert framing.feed(ws.mask_frame(ws.OP_BINARY, msg, MASK)) == [(fr.SEND_PACKET, msg[1:])]
    msg = msg[:300]
    assert framing.feed(ws.mask_frame(ws.OP_BINARY, msg, MASK)) == [(fr.SEND_PACKET, msg[1:])]
    assert ws.ws_header(ws.OP_BINARY, 300)[1] == 126
    assert ws.ws_header(ws.OP_BINARY, 70000)[1] == 127


def test_ws_fragments_ping_text_and_close():
    framing = ws.WsFraming()
    msg = vector("SendPacket")
    first = bytearray(ws.mask_frame(ws.OP_BINARY, msg[:10], MASK))
    first[0] &= 0x7F  # not FIN
    data = (
        bytes(first)
        + ws.mask_frame(ws.OP_PING, b"hi", MASK)
        + ws.mask_frame(ws.OP_CONT, msg[10:], MASK)
        + ws.mask_frame(ws.OP_TEXT, b"ignored", MASK)
        + ws.mask_frame(ws.OP_CLOSE, b"\x03\xe8", MASK)
        + ws.mask_frame(ws.OP_BINARY, vector("Ping"), MASK)
    )
    assert framing.feed(data) == [(msg[0], msg[1:])]
    assert framing.outgoing.startswith(bytes([0x8A, 2]) + b"hi")
    assert framing.closed


@pytest.mark.parametrize(
    "data, reason",
    [
        (bytes([0x82, 1, 5]), "unmasked"),
        (bytes([0xC2, 0x81]) + MASK + b"\x05", "reserved"),
        (ws.mask_frame(ws.OP_BINARY, b"", MASK), "empty"),
        (ws.mask_frame(ws.OP_CONT, b"x", MASK), "continuation"),
        (ws.mask_frame(ws.OP_PING, bytes(126), MASK), "limit"),
        (bytes([0x82, 0xFF]) + (2**40).to_bytes(8, "big"), "limit"),
        (ws.mask_frame(0x3, b"x", MASK), "opcode"),
    ],
)
def test_ws_bad_frames(data, reason):
    with pytest.raises(fr.FrameError, match=reason):
        ws.WsFraming().feed(data)
