"""Logging hygiene on the "ikisocket" logger (docs/explanation/errors.md, "What is logged").

* The happy path (connect, messages, pings, clean closes, a static page) logs
  nothing at INFO.
* A refused request and a failed connection each log exactly one line at
  INFO or WARNING, with the peer's address and the reason, and no traceback
  for what the peer did.
* No message body and no cookie value ever appears in a record at INFO or above.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from pairing import Network, Pair, pair

from ikisocket_core import EVENT_ERROR, EVENT_MESSAGE, EventPayload, Hub, Reject, Request
from ikisocket_core._log import peer_name
from ikisocket_core.protocol import Server

PEER = "127.0.0.1:40000"
SECRET_COOKIE = "session=cookie-value-7f3a9b"
SECRET_BODY = "body-secret-51c2e8"


def make_hub(**options: Any) -> Hub:
    hub = Hub(**options)

    @hub.websocket("/ws")
    def joined(kws: Any) -> None:
        kws.join("all")

    @hub.on(EVENT_MESSAGE)
    def echo(ep: EventPayload) -> None:
        if ep.data == b"raise":
            raise RuntimeError("a listener bug")
        ep.kws.emit(ep.data, ep.kind)
        ep.kws.to("all").emit(ep.data, ep.kind)

    return hub


@pytest.fixture
def log(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """Every "ikisocket" record at DEBUG and above (``log.records``)."""
    with caplog.at_level(logging.DEBUG, logger="ikisocket"):
        yield caplog


def shown(records: list[logging.LogRecord]) -> list[logging.LogRecord]:
    """The records the default level (INFO) shows."""
    return [r for r in records if r.name == "ikisocket" and r.levelno >= logging.INFO]


def assert_no_secrets(records: list[logging.LogRecord]) -> None:
    for record in shown(records):
        text = record.getMessage() + (
            logging.Formatter().formatException(record.exc_info) if record.exc_info else ""
        )
        assert "cookie-value" not in text
        assert SECRET_BODY not in text


def the_one_line(records: list[logging.LogRecord], peer: str = PEER) -> logging.LogRecord:
    """The single INFO/WARNING line of a refusal or failure (ERROR records are tracebacks)."""
    lines = [r for r in shown(records) if r.levelno < logging.ERROR]
    assert len(lines) == 1, [r.getMessage() for r in lines]
    (line,) = lines
    assert peer in line.getMessage()
    assert "\n" not in line.getMessage()
    assert line.exc_info is None
    return line


def cookie_pair(hub: Hub, path: str = "/ws", **options: Any) -> Pair:
    return pair(hub, path, headers=[("cookie", SECRET_COOKIE)], **options)


# -- the happy path --------------------------------------------------------------------


def test_a_happy_session_logs_nothing_at_info(log: pytest.LogCaptureFixture) -> None:
    hub = make_hub()
    p = cookie_pair(hub)
    other = p.net.pair("/ws", headers=[("cookie", SECRET_COOKIE)])
    p.send_text(SECRET_BODY)
    p.send_bytes(SECRET_BODY.encode())
    p.ping(b"are you there")
    p.close(1000, "bye")
    hub.close(other.conn.kws.uuid, 1000, "done")  # type: ignore[union-attr]
    other.net.drain()
    other.close()
    assert p.messages == [SECRET_BODY, SECRET_BODY.encode()]
    assert not p.net.server.connections
    raw = p.net.attach(websocket=False)  # a static page
    raw.feed(b"GET / HTTP/1.1\r\nHost: x\r\nCookie: " + SECRET_COOKIE.encode() + b"\r\n\r\n")
    assert raw.http_response()[0] == 404  # no static pages: a refusal, logged below
    assert [r.getMessage() for r in shown(log.records)] == [
        "refused 127.0.0.1:40002: 404 not found"
    ]
    assert_no_secrets(log.records)


def test_a_static_page_logs_nothing(log: pytest.LogCaptureFixture) -> None:
    net = Network(make_hub(), static={"/": ("text/plain", b"hi")})
    raw = net.attach(websocket=False)
    raw.feed(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert raw.http_response()[0] == 200
    assert shown(log.records) == []


# -- refusals ----------------------------------------------------------------------------

REFUSALS: dict[str, tuple[Callable[[Hub], object], bytes, int, str]] = {
    "no route": (lambda hub: None, b"GET /nowhere", 404, "no WebSocket route for this path"),
    "not an upgrade": (lambda hub: None, b"POST /ws", 426, "upgrade required"),
    "forbidden": (lambda hub: hub.before_upgrade(lambda r: False), b"GET /ws", 403, "forbidden"),
    "draining": (lambda hub: hub.stop_accepting(), b"GET /ws", 503, "not accepting"),
    "hook bug": (
        lambda hub: hub.before_upgrade(lambda r: 1 / 0),  # type: ignore[arg-type,return-value]
        b"GET /ws",
        500,
        "internal server error",
    ),
}


def upgrade_request(start: bytes, *, key: bytes = b"dGhlIHNhbXBsZSBub25jZQ==") -> bytes:
    return (
        start + b" HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: " + key + b"\r\nSec-WebSocket-Version: 13\r\n"
        b"Cookie: " + SECRET_COOKIE.encode() + b"\r\n\r\n"
    )


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_a_refused_upgrade_logs_one_line(log: pytest.LogCaptureFixture, case: str) -> None:
    setup, start, status, reason = REFUSALS[case]
    hub = make_hub()
    setup(hub)
    net = Network(hub)
    p = net.attach(websocket=False)
    p.feed(upgrade_request(start))
    assert p.http_response()[0] == status
    line = the_one_line(log.records)
    assert f"{status} " in line.getMessage()
    assert reason in line.getMessage()
    assert line.levelno == (logging.WARNING if status >= 500 else logging.INFO)
    # Only the application's own fault adds its traceback, at ERROR.
    tracebacks = [r for r in shown(log.records) if r.levelno >= logging.ERROR]
    assert [r.exc_info is not None for r in tracebacks] == ([True] if status == 500 else [])
    assert_no_secrets(log.records)


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (upgrade_request(b"GET /ws", key=b"short"), 400),
        (b"GET /ws HTTP/1.1\r\nHost: x\r\n\x00 bad\r\n\r\n", 400),
        (upgrade_request(b"GET /ws" + b"x" * 20_000), 431),
    ],
)
def test_a_malformed_request_logs_one_line(
    log: pytest.LogCaptureFixture, request_bytes: bytes, status: int
) -> None:
    p = Network(make_hub()).attach(websocket=False)
    p.feed(request_bytes)
    assert p.http_response()[0] == status
    assert f": {status} " in the_one_line(log.records).getMessage()
    assert_no_secrets(log.records)


def test_a_taken_uuid_logs_one_line(log: pytest.LogCaptureFixture) -> None:
    hub = make_hub(uuid_factory=lambda: "same")
    first = cookie_pair(hub)
    log.clear()
    first.net.attach(websocket=False).feed(upgrade_request(b"GET /ws"))
    line = the_one_line(log.records, "127.0.0.1:40001")
    assert line.getMessage() == "refused 127.0.0.1:40001: 409 this uuid is already connected"


def test_a_refusal_at_the_message_entry_logs_one_line(log: pytest.LogCaptureFixture) -> None:
    server = Server(make_hub())
    request = Request.from_target(
        "/nowhere", [("cookie", SECRET_COOKIE)], client=("127.0.0.1", 40000)
    )
    assert isinstance(server.accept(request, now=0.0), Reject)
    assert the_one_line(log.records).getMessage() == (
        "refused 127.0.0.1:40000: 404 no WebSocket route for this path"
    )


def test_a_handshake_timeout_logs_one_line(log: pytest.LogCaptureFixture) -> None:
    net = Network(make_hub())
    net.attach(websocket=False).feed(b"GET /ws HTTP/1.1\r\nCookie: " + SECRET_COOKIE.encode())
    net.tick(60.0)
    assert the_one_line(log.records).getMessage() == f"failed {PEER}: handshake timeout"
    assert_no_secrets(log.records)


# -- failures ----------------------------------------------------------------------------


def too_big(p: Pair) -> None:
    p.send_text(SECRET_BODY * 10)


def bad_utf8(p: Pair) -> None:
    p.feed(b"\x81\x94\x00\x00\x00\x00" + SECRET_BODY.encode() + b"\xff\xfe")


def unmasked(p: Pair) -> None:
    p.feed(b"\x81\x12" + SECRET_BODY.encode())


def no_pong(p: Pair) -> None:
    p.auto_pong = False
    for now in (100.0, 200.0, 300.0):  # the ping is scheduled, goes out, is not answered
        p.net.tick(now)


def listener_bug(p: Pair) -> None:
    p.send_text("raise")


FAILURES: dict[str, tuple[Callable[[Pair], None], int]] = {
    "too big": (too_big, 1009),
    "invalid utf-8": (bad_utf8, 1007),
    "unmasked": (unmasked, 1002),
    "keepalive": (no_pong, 1011),
    "listener bug": (listener_bug, 1011),
}


@pytest.mark.parametrize("error_listener", [False, True])
@pytest.mark.parametrize("case", sorted(FAILURES))
def test_a_failed_connection_logs_one_line(
    log: pytest.LogCaptureFixture, case: str, error_listener: bool
) -> None:
    fail, code = FAILURES[case]
    hub = make_hub(on_listener_error="close")
    if error_listener:
        hub.on(EVENT_ERROR, lambda ep: None)
    p = cookie_pair(hub, max_message_size=100, ping_interval=50, ping_timeout=50)
    assert p.accepted is not None
    fail(p)
    assert [c.code for c in p.close_frames][:1] == [code]
    line = the_one_line(log.records)
    assert line.getMessage().startswith(f"failed {PEER} (")
    assert f": {code} " in line.getMessage()
    # A listener bug is the application's: its traceback, unless an error listener took it.
    tracebacks = [r for r in shown(log.records) if r.levelno >= logging.ERROR]
    assert len(tracebacks) == (case == "listener bug" and not error_listener)
    assert_no_secrets(log.records)


def test_a_slow_reader_closed_by_backpressure_logs_one_line(
    log: pytest.LogCaptureFixture,
) -> None:
    hub = make_hub()
    p = cookie_pair(hub, max_queue=50, backpressure="close")
    p.paused = True  # the peer stops reading
    p.send_text(SECRET_BODY * 2)
    p.send_text(SECRET_BODY * 2)
    assert p.net.server.stats.overflow_closes == 1
    assert ": 1013 outbound buffer" in the_one_line(log.records).getMessage()
    assert_no_secrets(log.records)


def test_dropping_for_a_slow_reader_logs_one_line_per_episode(
    log: pytest.LogCaptureFixture,
) -> None:
    hub = make_hub()
    p = cookie_pair(hub, max_queue=50)
    p.paused = True
    for _ in range(3):
        p.send_text(SECRET_BODY * 2)  # the first fits the empty buffer, the others drop
    assert p.net.server.stats.dropped_messages >= 2
    assert "dropping messages to 127.0.0.1:40000" in the_one_line(log.records).getMessage()
    assert_no_secrets(log.records)


def test_a_server_close_with_1011_logs_one_line(log: pytest.LogCaptureFixture) -> None:
    hub = make_hub()
    p = cookie_pair(hub)
    hub.close(p.conn.kws.uuid, 1011, "the database is gone")  # type: ignore[union-attr]
    p.net.drain()
    assert the_one_line(log.records).getMessage().endswith(": 1011 the database is gone")


def test_a_peer_without_address_and_an_ipv6_peer() -> None:
    assert peer_name(None) == "unknown peer"
    assert peer_name(("::1", 8000)) == "[::1]:8000"
    assert peer_name(("10.0.0.1", 8000)) == "10.0.0.1:8000"


def test_a_connection_limit_refusal_logs_one_line_on_both_entries(
    log: pytest.LogCaptureFixture,
) -> None:
    hub = make_hub()
    server = Server(hub, max_handshakes=1, max_connections=1)
    server.connect(now=0.0, client=("127.0.0.1", 40000))
    server.connect(now=0.0, client=("127.0.0.1", 40001))  # past max_handshakes: 503 at once
    server.drain_actions()
    request = Request.from_target("/ws", [("host", "x")], client=("10.0.0.9", 5000))
    assert not isinstance(server.accept(request, now=0.0), Reject)
    refused = server.accept(request, now=0.0)  # past max_connections
    assert isinstance(refused, Reject)
    lines = [r.getMessage() for r in shown(log.records)]
    assert len(lines) == 2
    assert lines[0].startswith("refused 127.0.0.1:40001: 503 ")
    assert lines[1].startswith("refused 10.0.0.9:5000: 503 ")
