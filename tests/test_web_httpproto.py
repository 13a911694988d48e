"""chatmaild.web.httpproto: requests whole, byte by byte, pipelined; bounds and errors."""

import pytest

from chatmaild.web.httpproto import MAX_BODY, MAX_HEAD, HttpError, RequestParser, response

POST = b"POST /new HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
GET = b"GET /cgi-bin/newemail.py?x=1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"


def feed_all(chunks):
    parser = RequestParser()
    out = []
    for chunk in chunks:
        out += parser.feed(chunk)
    return out


@pytest.mark.parametrize("split", ["whole", "bytewise"])
def test_pipelined_requests_whole_and_byte_by_byte(split):
    data = POST + GET
    chunks = [data] if split == "whole" else [data[i : i + 1] for i in range(len(data))]
    first, second = feed_all(chunks)
    assert (first.method, first.path, first.body, first.keep_alive) == (
        "POST",
        "/new",
        b"abc",
        True,
    )
    assert first.headers["content-length"] == "3"
    assert (second.method, second.path) == ("GET", "/cgi-bin/newemail.py")
    assert not second.keep_alive
    assert second.target == "/cgi-bin/newemail.py?x=1"


def test_incomplete_body_waits_then_trailing_data_starts_the_next_request():
    parser = RequestParser()
    assert parser.feed(POST[:-1]) == []
    (req,) = parser.feed(POST[-1:] + GET[:10])
    assert req.body == b"abc"
    assert [r.method for r in parser.feed(GET[10:])] == ["GET"]


def test_http10_keep_alive_only_when_asked():
    (req,) = RequestParser().feed(b"GET / HTTP/1.0\r\n\r\n")
    assert not req.keep_alive
    (req,) = RequestParser().feed(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    assert req.keep_alive


@pytest.mark.parametrize(
    "data, status",
    [
        (b"GET /\r\n\r\n", 400),
        (b"GET / HTTP/2.0\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nno colon\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\n folded: x\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", 501),
        (f"POST / HTTP/1.1\r\nContent-Length: {MAX_BODY + 1}\r\n\r\n".encode(), 413),
        (b"GET / HTTP/1.1\r\nX: " + b"a" * MAX_HEAD + b"\r\n\r\n", 431),
    ],
)
def test_malformed_or_oversized_requests(data, status):
    with pytest.raises(HttpError) as err:
        RequestParser().feed(data)
    assert err.value.status == status


def test_a_head_without_end_is_refused_once_over_the_cap():
    parser = RequestParser()
    parser.feed(b"GET / HTTP/1.1\r\n")
    with pytest.raises(HttpError) as err:
        for _ in range(MAX_HEAD // 1000 + 1):
            parser.feed(b"X: " + b"a" * 1000 + b"\r\n")
    assert err.value.status == 431


def test_response_bytes():
    data = response(
        429, b'{"reason": "x"}', "application/json", keep_alive=False, headers=[("Allow", "POST")]
    )
    head, body = data.split(b"\r\n\r\n")
    assert head.split(b"\r\n") == [
        b"HTTP/1.1 429 Too Many Requests",
        b"Content-Type: application/json",
        b"Content-Length: 15",
        b"Cache-Control: no-store",
        b"Allow: POST",
        b"Connection: close",
    ]
    assert body == b'{"reason": "x"}'
