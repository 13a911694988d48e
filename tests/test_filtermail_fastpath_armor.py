"""The lazy armor decoding (openpgp.LazyBase64) and the span-based MIME split.

The fast path must decide exactly as the general decoder: same bytes for every block it
takes, the general way for every block it declines, bad base64 anywhere refused, and the
SEIPD ending exactly at the last decoded byte. PGPy is the oracle for the messages.
"""

import random

import pytest
from filtermail_samples import (
    armor,
    crlf,
    decrypts,
    encrypt,
    encrypted_mail,
    reframe_seipd_partial,
)

from chatmaild.filtermail.checks import is_encrypted
from chatmaild.filtermail.mime import multipart_spans, split_multipart
from chatmaild.filtermail.openpgp import (
    LazyBase64,
    armored_payload,
    decode_armored_message,
    is_encrypted_armor,
    is_encrypted_packet_sequence,
)

MB = 1_000_000


def materialize(payload):
    if payload is None or isinstance(payload, bytes):
        return payload
    return payload[0 : len(payload)]


def both_ways(text: bytes, allow_armor_header=False):
    """(fast result as bytes, general result) for one armored text."""
    return (
        materialize(armored_payload(text, allow_armor_header)),
        decode_armored_message(text, allow_armor_header),
    )


@pytest.mark.parametrize("line_ends", ["lf", "crlf"])
@pytest.mark.parametrize("checksum", [True, False])
@pytest.mark.parametrize("line_length", [4, 63, 64, 65, 76])
@pytest.mark.parametrize("extra", [0, 1, 2])  # binary length mod 3: padding 0, 2, 1
def test_regular_layouts_are_decoded_lazily_and_exactly(line_ends, checksum, line_length, extra):
    binary = encrypt(("x25519",), 3000) + b"\x00" * extra
    text = armor(binary, checksum=checksum, line_length=line_length)
    if line_ends == "crlf":
        text = crlf(text)
    payload = armored_payload(text, allow_armor_header=False)
    assert isinstance(payload, LazyBase64)
    assert len(payload) == len(binary)
    assert materialize(payload) == binary == decode_armored_message(text, False)
    # the SEIPD must end at the last byte: extra trailing bytes are refused on this path too
    assert is_encrypted_armor(text, allow_armor_header=False) == (extra == 0)


def test_lazy_reads_match_the_bytes_with_any_window(monkeypatch):
    binary = encrypt(("x25519", "rsa"), 20_000)
    rng = random.Random(7)
    for line_length, window, max_windows in [(64, 16, 64), (76, 1, 10_000), (65, 1, 3), (4, 2, 0)]:
        monkeypatch.setattr(LazyBase64, "WINDOW_QUANTA", window)
        monkeypatch.setattr(LazyBase64, "MAX_WINDOWS", max_windows)
        lazy = armored_payload(armor(binary, line_length=line_length), False)
        assert isinstance(lazy, LazyBase64)
        for _ in range(300):
            a = rng.randrange(len(binary))
            b = min(len(binary), a + rng.randrange(1, 9))
            assert lazy[a:b] == binary[a:b]
            assert lazy[a] == binary[a]
        assert lazy[-1] == binary[-1]
        with pytest.raises(IndexError):
            lazy[len(binary)]


# Mutations around every structural spot of a small armored block; the fast path must give
# the same answer as the general decoder for each (it may decline, never disagree).
MUTANTS = [b"=", b"==", b"!", b" ", b"-", b"\r", b"\n", b"\r\n", b"A", b"\x00", b"\xff", b""]


def mutate(text: bytes, rng: random.Random) -> bytes:
    pos = rng.randrange(len(text) + 1)
    kind = rng.randrange(4)
    new = rng.choice(MUTANTS)
    if kind == 3 and 0 < pos < len(text) - 1:  # swap two bytes: may move a line break
        return text[:pos] + text[pos + 1 : pos + 2] + text[pos : pos + 1] + text[pos + 2 :]
    if kind == 0:  # replace one byte
        return text[:pos] + new + text[pos + 1 :]
    if kind == 1:  # insert
        return text[:pos] + new + text[pos:]
    return text[:pos] + text[pos + rng.randrange(1, 4) :]  # delete


@pytest.mark.parametrize("line_ends", ["lf", "crlf"])
@pytest.mark.parametrize("extra", [0, 1, 2])
def test_fast_and_general_decoding_agree_on_mutated_blocks(line_ends, extra):
    binary = encrypt(("x25519",), 300) + b"\x01" * extra
    rng = random.Random(f"{line_ends}{extra}")
    for checksum in (True, False):
        text = armor(binary, checksum=checksum, line_length=16)
        if line_ends == "crlf":
            text = crlf(text)
        block_start = text.index(b"\n\n" if line_ends == "lf" else b"\r\n\r\n")
        fast_taken = 0
        for _ in range(1500):
            mutant = mutate(text, rng)
            # keep most mutations inside the base64 block, where the fast path decides
            if rng.random() < 0.8 and not mutant.startswith(text[: block_start + 2]):
                continue
            fast, general = both_ways(mutant)
            assert fast == general, mutant
            fast_taken += isinstance(armored_payload(mutant, False), LazyBase64)
            assert is_encrypted_armor(mutant, False) == (
                general is not None and is_encrypted_packet_sequence(general)
            )
        assert fast_taken > 50  # the shortcut itself was exercised, not only the fallback


@pytest.mark.parametrize("line_ends", ["lf", "crlf"])
def test_uneven_lines_go_the_general_way(line_ends):
    # same characters, one line break moved: lines of 63 and 65 digits
    binary = encrypt(("x25519",), 3000)
    text = armor(binary)
    first = text.index(b"\n\n") + 2
    moved = text[: first + 63] + b"\n" + text[first + 63 : first + 64] + text[first + 65 :]
    if line_ends == "crlf":
        text, moved = crlf(text), crlf(moved)
    assert decode_armored_message(moved, False) == binary
    assert not isinstance(armored_payload(moved, False), LazyBase64)
    assert materialize(armored_payload(moved, False)) == binary
    assert is_encrypted_armor(moved, False)


@pytest.fixture(scope="module")
def big_binary():
    return encrypt(("x25519", "rsa"), MB)


def _digit_positions(text: bytes) -> list[int]:
    """Offsets of the first, a middle and the last base64 digit before any padding."""
    start = text.index(b"\n\n") + 2
    end = text.rindex(b"\n=")  # checksum line
    last = end - 1
    while text[last] in b"=\n":
        last -= 1
    return [start, (start + end) // 2, last]


@pytest.mark.parametrize("bad", [b"!", b"*", b"=", b" ", b"\xc3"])
def test_bad_base64_anywhere_in_a_large_message_is_refused(big_binary, bad):
    text = armor(big_binary)
    assert is_encrypted_armor(text, False)
    positions = _digit_positions(text)
    if bad != b"=":  # "=XXX=" is a well-formed checksum line (the CRC is not verified)
        positions.append(len(text) - len(b"-----END PGP MESSAGE-----\n") - 2)
    for pos in positions:
        broken = text[:pos] + bad + text[pos + 1 :]
        assert not is_encrypted_armor(broken, False), pos
        assert not is_encrypted_armor(crlf(broken), False), pos
        assert not is_encrypted(encrypted_mail(broken), allow_armor_header=False), pos


def test_large_message_must_end_exactly_with_the_seipd(big_binary):
    assert is_encrypted_armor(armor(big_binary), False)
    for changed in (big_binary + b"\x00", big_binary[:-1], big_binary + b"\x00" * 3):
        assert isinstance(armored_payload(armor(changed), False), LazyBase64)
        assert not is_encrypted_armor(armor(changed), False)
        assert not is_encrypted(encrypted_mail(armor(changed)), allow_armor_header=False)


def packets_with_partials(binary: bytes):
    """(tag, [offsets of length octets]) per packet, following partial body lengths."""
    pos = 0
    while pos < len(binary):
        tag = binary[pos] & 0x3F
        pos += 1
        heads = []
        while True:
            heads.append(pos)
            octet = binary[pos]
            if 224 <= octet < 255:
                pos += 1 + (1 << (octet & 0x1F))
                continue
            if octet < 192:
                pos += 1 + octet
            elif octet < 224:
                pos += 2 + ((octet - 192) << 8) + binary[pos + 1] + 192
            else:
                pos += 5 + int.from_bytes(binary[pos + 1 : pos + 5], "big")
            break
        yield tag, heads


@pytest.mark.parametrize("line_ends", ["lf", "crlf"])
@pytest.mark.parametrize(
    "kinds, size, chunk_exponent, first_exponent",
    [
        (("x25519",), 9000, 10, None),  # 1025-byte steps: headers at every offset mod 3
        (("rsa", "x25519"), 9000, 10, 11),
        (("p256",), 40_000, 12, 9),
    ],
)
def test_partial_chunk_headers_across_base64_quanta(
    line_ends, kinds, size, chunk_exponent, first_exponent
):
    binary = reframe_seipd_partial(encrypt(kinds, size), chunk_exponent, first_exponent)
    assert decrypts(binary, size, kinds)  # PGPy, the oracle
    heads = [pos for tag, offsets in packets_with_partials(binary) if tag == 18 for pos in offsets]
    assert {pos % 3 for pos in heads} == {0, 1, 2}  # length octets in every quantum position
    text = armor(binary)
    if line_ends == "crlf":
        text = crlf(text)
    assert isinstance(armored_payload(text, False), LazyBase64)
    assert is_encrypted_armor(text, False)
    for changed in (binary + b"\x00", binary[:-1]):
        assert not is_encrypted_armor(armor(changed), False)
    # a chunk length octet changed to another partial length: the walk must see it
    seipd_head = heads[1]
    broken = bytearray(binary)
    broken[seipd_head] = 224 + chunk_exponent + 1
    assert not is_encrypted_armor(armor(bytes(broken)), False)


def test_many_small_chunks_in_a_large_message(big_binary):
    # 512-byte chunks: ~2000 chunk headers, more than LazyBase64.MAX_WINDOWS windows
    binary = reframe_seipd_partial(big_binary, 9)
    assert is_encrypted_packet_sequence(binary)
    assert is_encrypted_armor(armor(binary), False)
    assert is_encrypted_armor(crlf(armor(binary)), False)
    assert not is_encrypted_armor(armor(binary + b"\x00"), False)
    assert not is_encrypted_armor(armor(binary[:-1]), False)


def test_pgpy_messages_take_the_lazy_path():
    # PGPy's own armor (64-column lines, checksum) has the usual layout
    from pgpy import PGPMessage

    binary = encrypt(("rsa",), 5000)
    text = str(PGPMessage.from_blob(binary)).encode()
    assert isinstance(armored_payload(text, False), LazyBase64)
    assert is_encrypted_armor(text, False)


def test_armor_inside_a_larger_buffer():
    binary = encrypt(("x25519",), 2000)
    text = armor(binary)
    buffer = b"prefix--" + text + b"--suffix"
    start, end = 8, 8 + len(text)
    assert is_encrypted_armor(buffer, False, start, end)
    assert materialize(armored_payload(buffer, False, start, end)) == binary
    assert decode_armored_message(buffer, False, start, end) == binary
    assert not is_encrypted_armor(buffer, False, start, end - 5)  # END line cut
    assert not is_encrypted_armor(buffer, False, start + 1, end)


@pytest.mark.parametrize(
    "body, boundary",
    [
        (b"pre --b x\r\n--b\r\nA: 1\r\n\r\none\r\n--bb\r\n--b \t\r\n\r\ntwo\r\n--b--\r\nepi", "b"),
        (b"--b--\n", "b"),
        (b"--b\n\nx\n--b--", "b"),
        (b"--b\n--b--\n", "b"),
        (b"--b\r\nx\r\n--b\r\ny\r\n", "b"),  # unterminated
        (b"x--b\r\ny\r\nx--b--\r\n", "b"),
    ],
)
def test_multipart_spans_inside_a_larger_buffer(body, boundary):
    # a delimiter right outside the span must neither start nor close the split
    for before, after in [(b"", b""), (b"--b\r\n", b"\r\n--b--\r\n"), (b"x\n", b"--b--")]:
        data = before + body + after
        spans = multipart_spans(data, len(before), len(before) + len(body), boundary)
        expected = split_multipart(body, boundary)
        if expected is None:
            assert spans is None
        else:
            assert [data[s:e] for s, e in spans] == expected
