"""The opening handshake read without h11 (``read_head``) reads what h11 reads, or steps aside.

The engine reads the usual upgrade request itself, for the cost of a
connection; every request it takes must come out as h11 would make it
(method, target, headers, the bytes after the head), and everything else
must be left to h11, which then answers it as before (400, 431, ...).
"""

from __future__ import annotations

import h11
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ikisocket_core._http import Answer, Head, HTTPPhase, read_head

LIMIT = 16 * 1024

BROWSER = (
    b"GET /chat?room=1&x=%20 HTTP/1.1\r\n"
    b"Host: example.com:8000\r\n"
    b"Connection: Upgrade\r\n"
    b"Pragma: no-cache\r\n"
    b"User-Agent: Mozilla/5.0 (X11; Linux x86_64)  Chrome/131.0\r\n"
    b"Upgrade: websocket\r\n"
    b"Origin: http://example.com\r\n"
    b"Sec-WebSocket-Version: 13\r\n"
    b"Accept-Encoding: gzip, deflate, br\r\n"
    b"Cookie: a=1; b=\xe9\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
    b"X-Empty:\r\n"
    b"X-Spaces: \t padded \t \r\n"
    b"\r\n"
)


def by_h11(data: bytes) -> tuple[h11.Request, bytes] | None:
    """What h11 reads from ``data``: the request and the bytes after it, or None."""
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=LIMIT)
    conn.receive_data(data)
    try:
        event = conn.next_event()
    except h11.RemoteProtocolError:
        return None
    if not isinstance(event, h11.Request):
        return None
    return event, bytes(conn.trailing_data[0])


def assert_same_as_h11(data: bytes) -> bool:
    """Check ``read_head`` against h11 on ``data``; whether read_head took it."""
    read = read_head(data, LIMIT)
    if read is None:
        return False
    head, size = read
    parsed = by_h11(data)
    assert parsed is not None, data
    request, trailing = parsed
    assert head.method == request.method
    assert head.target == request.target
    assert head.headers == list(request.headers)
    assert data[size:] == trailing
    return True


def test_a_browser_handshake_is_read_as_h11_reads_it() -> None:
    assert assert_same_as_h11(BROWSER)
    assert assert_same_as_h11(BROWSER + b"\x81\x85first frame")


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"GET /ws HTTP/1.1\r\nHost: a\r\n", id="incomplete"),
        pytest.param(b"\r\nGET /ws HTTP/1.1\r\nHost: a\r\n\r\n", id="leading-blank-line"),
        pytest.param(b"GET /ws HTTP/1.0\r\nHost: a\r\n\r\n", id="http-1.0"),
        pytest.param(b"POST /ws HTTP/1.1\r\nHost: a\r\n\r\n", id="post"),
        pytest.param(b"GET http://a/ws HTTP/1.1\r\nHost: a\r\n\r\n", id="absolute-form"),
        pytest.param(b"GET /w s HTTP/1.1\r\nHost: a\r\n\r\n", id="space-in-target"),
        pytest.param(b"GET /ws HTTP/1.1\r\n\r\n", id="no-host"),
        pytest.param(b"GET /ws HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", id="two-hosts"),
        pytest.param(b"GET /ws HTTP/1.1\nHost: a\r\n\r\n", id="bare-lf"),
        pytest.param(b"GET /ws HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n", id="obs-fold"),
        pytest.param(b"GET /ws HTTP/1.1\r\nHost : a\r\n\r\n", id="space-before-colon"),
        pytest.param(b"GET /ws HTTP/1.1\r\nHost: a\x00b\r\n\r\n", id="nul-in-value"),
        pytest.param(b"GET /ws HTTP/1.1\r\nHost: a\rb\r\n\r\n", id="cr-in-value"),
        pytest.param(b"GET /ws HTTP/1.1\r\nHo(st: a\r\n\r\n", id="bad-name"),
        pytest.param(b"GET /ws HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n", id="length"),
        pytest.param(
            b"GET /ws HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n", id="chunked"
        ),
    ],
)
def test_what_h11_would_read_otherwise_or_refuse_is_left_to_h11(data: bytes) -> None:
    assert read_head(data, LIMIT) is None


def test_a_head_over_the_limit_is_left_to_h11_which_answers_431() -> None:
    data = b"GET /ws HTTP/1.1\r\nHost: a\r\nX-Big: " + b"x" * 200 + b"\r\n\r\n"
    assert read_head(data, 100) is None
    phase = HTTPPhase(100)
    answer = phase.receive(data)
    assert getattr(answer, "status", None) == 431


def test_after_a_head_read_without_h11_h11_answers_and_keeps_what_followed() -> None:
    # A request the engine answers (404, a poll) hands the exchange to h11, which reads the
    # same head again: the answer and the bytes after the head are as if h11 read them first.
    phase = HTTPPhase(LIMIT)
    head = phase.receive(b"GET /nothing HTTP/1.1\r\nHost: a\r\n\r\nGET /next")
    assert isinstance(head, Head)
    assert phase.trailing == b"GET /next"
    assert phase.buffered == len(b"GET /next")
    assert phase.trailing == b"GET /next"  # now from h11
    response = phase.respond(Answer(404, b"not found"))
    assert response.startswith(b"HTTP/1.1 404 Not Found\r\n")
    assert response.endswith(b"\r\n\r\nnot found")


def test_the_101_is_written_as_h11_writes_it() -> None:
    headers = [
        (b"upgrade", b"websocket"),
        (b"connection", b"Upgrade"),
        (b"sec-websocket-accept", b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
        (b"sec-websocket-protocol", b"chat"),
    ]
    server = h11.Connection(h11.SERVER)
    server.receive_data(BROWSER)
    assert isinstance(server.next_event(), h11.Request)
    expected = server.send(
        h11.InformationalResponse(status_code=101, headers=headers, reason=b"Switching Protocols")
    )
    phase = HTTPPhase(LIMIT)
    assert isinstance(phase.receive(BROWSER), Head)
    assert phase.switch(headers) == expected


_PIECES = st.sampled_from(
    [
        b"GET",
        b"POST",
        b" ",
        b"  ",
        b"\t",
        b"/",
        b"/ws",
        b"?a=b",
        b"*",
        b"HTTP/1.1",
        b"HTTP/1.0",
        b"\r\n",
        b"\n",
        b"\r",
        b":",
        b"Host",
        b"host",
        b"HOST",
        b"Upgrade",
        b"websocket",
        b"Content-Length",
        b"Transfer-Encoding",
        b"0",
        b"x",
        b"\x00",
        b"\x7f",
        b"\xe9",
        b"(",
        b",",
        b";",
    ]
)


@settings(max_examples=1500, deadline=None)
@given(
    st.lists(_PIECES, max_size=30).map(b"".join),
    st.lists(_PIECES, max_size=8).map(b"".join),
)
def test_any_head_read_without_h11_is_read_as_h11_reads_it(middle: bytes, tail: bytes) -> None:
    data = b"GET /ws HTTP/1.1\r\nHost: a\r\n" + middle + b"\r\n\r\n" + tail
    assert_same_as_h11(data)
    assert_same_as_h11(middle + b"\r\n\r\n" + tail)
    assert_same_as_h11(b"GET /ws HTTP/1.1\r\n" + middle + b"\r\n\r\n" + tail)
