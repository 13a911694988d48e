"""The /mxdeliv wire form (chatmaild.filtermail.mxdeliv): envelope headers, the dot-stuffed
body and its inverse, and the HTTP answer of an SMTP reply."""

import random

import pytest

from chatmaild.filtermail import mxdeliv
from chatmaild.filtermail.mxdeliv import (
    Refused,
    http_reply,
    is_delivered,
    parse_envelope,
    request_headers,
    stuff_body,
    unstuff_body,
)
from chatmaild.smtp.reinject import dot_stuff


def refusal(fn, *args):
    with pytest.raises(Refused) as info:
        fn(*args)
    return info.value.code, info.value.text


def test_envelope_sender_and_recipients():
    env = parse_envelope(["alice@a.example"], ["bob@b.example", "<carol@b.example>"])
    assert env.mail_from == "alice@a.example"
    assert env.rcpt_tos == ["bob@b.example", "carol@b.example"]


@pytest.mark.parametrize("senders", [[], [""], ["<>"], [" "]])
def test_absent_or_empty_sender_is_the_null_sender(senders):
    assert parse_envelope(senders, ["bob@b.example"]).mail_from == ""


def test_missing_recipient_is_refused():
    assert refusal(parse_envelope, ["alice@a.example"], []) == mxdeliv.NO_RECIPIENTS


@pytest.mark.parametrize(
    "senders, recipients",
    [
        (["a@a.example"], [""]),
        (["a@a.example"], ["bob@b.example", "x y@b.example"]),
        (["a@a.example"], ["bob@b.example>"]),
        (["a@a.example"], ["bob@b.example\r\nRCPT TO:<evil@b.example>"]),
        (["a b@a.example"], ["bob@b.example"]),
        (["a@a.example\x00"], ["bob@b.example"]),
    ],
)
def test_anything_but_one_bare_address_is_refused(senders, recipients):
    assert refusal(parse_envelope, senders, recipients) == mxdeliv.BAD_ADDRESS


def test_two_senders_and_too_many_recipients_are_refused():
    assert refusal(parse_envelope, ["a@x", "b@x"], ["c@x"]) == mxdeliv.MANY_SENDERS
    many = [f"r{i}@b.example" for i in range(11)]
    assert refusal(parse_envelope, [], many, 10) == mxdeliv.TOO_MANY_RECIPIENTS
    assert len(parse_envelope([], many[:10], 10).rcpt_tos) == 10


def test_unstuffing():
    assert unstuff_body(b"a\r\nb\r\n") == (b"a\r\nb\r\n", 0)
    assert unstuff_body(b"..a\r\n..\r\nb\r\n...\r\n") == (b".a\r\n.\r\nb\r\n..\r\n", 3)
    # a single leading dot on a longer line is dropped, as an SMTP server does
    assert unstuff_body(b"x\r\n.y\r\n") == (b"x\r\ny\r\n", 1)


@pytest.mark.parametrize(
    "body",
    [
        b"",  # not ending in CRLF
        b"a\r\nb",  # not ending in CRLF
        b"a\nb\r\n",  # bare LF
        b"a\rb\r\n",  # bare CR
        b"a\r\n\n",  # bare LF at the end
        b"a\r\r\n",  # bare CR before the end
        b".\r\n",  # a lone dot first
        b"a\r\n.\r\nb\r\n",  # a lone dot inside
        b"a\r\n.\r\n",  # the final dot line, which the form leaves out
    ],
)
def test_invalid_data_is_refused(body):
    assert refusal(unstuff_body, body) == mxdeliv.INVALID_DATA
    assert mxdeliv.INVALID_DATA == (500, "Invalid DATA")


def test_stuffing_is_the_smtp_data_form_without_the_final_dot():
    message = b".a\r\nb\r\n..c\r\n.\r\n"
    assert stuff_body(message) == b"..a\r\nb\r\n...c\r\n..\r\n"
    assert stuff_body(message) + b".\r\n" == dot_stuff(message)
    assert stuff_body(b"no final line end") == b"no final line end\r\n"
    assert stuff_body(b"bare\nlf\rcr\r\n.x") == b"bare\r\nlf\r\ncr\r\n..x\r\n"


def test_stuffing_and_unstuffing_are_inverse():
    rng = random.Random(20)
    pieces = [b".", b"..", b"a", b"\r\n", b" ", b"\xff", b"From x"]
    for _ in range(2000):
        message = b"".join(rng.choice(pieces) for _ in range(rng.randrange(0, 30)))
        if not message.endswith(b"\r\n"):
            message += b"\r\n"
        body = stuff_body(message)
        assert unstuff_body(body) == (message, body.count(b"\r\n.") + body.startswith(b"."))
        assert body + b".\r\n" == dot_stuff(message)


def test_request_headers_are_a_multi_dict():
    assert request_headers("", ["a@x", "b@y"]) == [
        ("X-MAIL-FROM", ""),
        ("X-MAIL-TO", "a@x"),
        ("X-MAIL-TO", "b@y"),
    ]
    env = parse_envelope(
        [v for k, v in request_headers("s@x", ["a@x", "b@y"]) if k == "X-MAIL-FROM"],
        [v for k, v in request_headers("s@x", ["a@x", "b@y"]) if k == "X-MAIL-TO"],
    )
    assert (env.mail_from, env.rcpt_tos) == ("s@x", ["a@x", "b@y"])


def test_http_answers():
    assert http_reply(250, "2.0.0 Ok: queued as X") == (200, "250 OK")
    assert http_reply(523, "Encryption Needed: Invalid Unencrypted Mail") == (
        400,
        "523 Encryption Needed: Invalid Unencrypted Mail",
    )
    assert http_reply(451, "4.3.0 Error:\nqueue file write error") == (
        400,
        "451 4.3.0 Error: queue file write error",
    )
    assert http_reply(550, "5.1.1 <x\x01@y>: unknown") == (400, "550 5.1.1 <x?@y>: unknown")
    assert mxdeliv.METHOD_NOT_ALLOWED == (405, "Method Not Allowed")
    assert mxdeliv.TOO_LARGE == (413, "552 Message exceeds maximum size")
    assert is_delivered(200) and is_delivered(201) and not is_delivered(400)
    assert not is_delivered(302) and not is_delivered(502)
