"""The TestClient users unit-test their handlers with."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Generator

import pytest

from ikisocket_core import (
    BINARY,
    EVENT_CLOSE,
    EVENT_DISCONNECT,
    EVENT_ERROR,
    EVENT_MESSAGE,
    TEXT,
    ConnectionClosed,
    EventPayload,
    Hub,
    IkisocketError,
    RemoteProtocolError,
    Request,
    SlowConsumer,
    Websocket,
)
from ikisocket_core.testing import (
    NothingReceived,
    TestClient,
    WebSocketDisconnect,
    WebSocketRejected,
)


def make_hub() -> Hub:
    numbers = itertools.count(1)
    hub = Hub(uuid_factory=lambda: f"c{next(numbers)}")
    hub.websocket("/ws", lambda kws: None)
    hub.on(EVENT_MESSAGE, lambda ep: ep.kws.emit(ep.data, ep.kind))  # echo
    return hub


def terminal_errors(hub: Hub) -> list[tuple[str, int]]:
    seen: list[tuple[str, int]] = []

    def log(ep: EventPayload) -> None:
        assert isinstance(ep.error, ConnectionClosed)
        seen.append((ep.name, ep.error.code))

    hub.on(EVENT_CLOSE, log)
    hub.on(EVENT_DISCONNECT, log)
    return seen


def test_receive_raises_nothing_received_when_nothing_waits() -> None:
    with TestClient(make_hub()).websocket_connect("/ws") as ws:
        for receive in (ws.receive, ws.receive_text, ws.receive_bytes, ws.receive_json):
            with pytest.raises(NothingReceived):
                receive()
    assert issubclass(NothingReceived, AssertionError)  # reads as a failed expectation
    assert issubclass(NothingReceived, IkisocketError)


def test_receive_of_the_other_kind_raises_and_leaves_the_message_queued() -> None:
    with TestClient(make_hub()).websocket_connect("/ws") as ws:
        ws.send_bytes(b"\x01")
        with pytest.raises(NothingReceived, match="TEXT"):
            ws.receive_text()
        with pytest.raises(NothingReceived):
            ws.receive_json()
        assert ws.pending == 1
        assert ws.receive_bytes() == b"\x01"
        ws.send_text("t")
        with pytest.raises(NothingReceived, match="BINARY"):
            ws.receive_bytes()
        assert ws.receive() == (TEXT, b"t")


def test_messages_are_received_in_order_with_their_kind() -> None:
    with TestClient(make_hub()).websocket_connect("/ws") as ws:
        ws.send_text("one")
        ws.send_bytes(bytearray(b"two"))  # type: ignore[arg-type]
        ws.send_text("three")
        assert ws.pending == 3
        assert [ws.receive() for _ in range(3)] == [
            (TEXT, b"one"),
            (BINARY, b"two"),
            (TEXT, b"three"),
        ]
        assert ws.pending == 0


def test_send_json_and_receive_json_in_text_and_binary() -> None:
    with TestClient(make_hub()).websocket_connect("/ws") as ws:
        ws.send_json({"a": [1, "é"]})
        # Like Starlette's TestClient: UTF-8 on the wire, not \u escapes.
        assert ws.receive() == (TEXT, '{"a":[1,"é"]}'.encode())
        ws.send_json({"a": 1})
        assert ws.receive_json() == {"a": 1}
        ws.send_json([None], mode="binary")
        assert ws.receive_json(mode="binary") == [None]


def test_server_close_raises_websocket_disconnect_after_the_queued_messages() -> None:
    hub = make_hub()
    client = TestClient(hub)
    ws = client.websocket_connect("/ws")
    ws.kws.emit("last words")
    ws.kws.close(4000, "bye")
    assert ws.receive_text() == "last words"
    with pytest.raises(WebSocketDisconnect) as info:
        ws.receive_text()
    assert (info.value.code, info.value.reason) == (4000, "bye")
    assert str(info.value) == "server closed the connection with 4000: bye"
    assert str(WebSocketDisconnect(1000)) == "server closed the connection with 1000"
    assert ws.closed
    assert (ws.close_code, ws.close_reason) == (4000, "bye")
    senders: list[Callable[[], None]] = [
        lambda: ws.send_text("x"),
        lambda: ws.send_bytes(b"x"),
        ws.ping,
        ws.pong,
    ]
    for send in senders:
        with pytest.raises(WebSocketDisconnect):
            send()
    ws.close()  # already closed: nothing happens
    with ws:
        pass


def test_context_manager_closes_with_1000_and_client_close_is_a_disconnect() -> None:
    hub = make_hub()
    seen = terminal_errors(hub)
    client = TestClient(hub)
    with client.websocket_connect("/ws") as ws:
        assert not ws.closed
    assert ws.closed
    other = client.websocket_connect("/ws")
    other.close(4001, "done")
    with pytest.raises(WebSocketDisconnect):
        other.send_text("after close")
    with pytest.raises(NothingReceived):
        other.receive()
    assert seen == [(EVENT_DISCONNECT, 1000), (EVENT_DISCONNECT, 4001)]
    assert hub.connections == ()


def test_abort_and_eof_are_seen_as_1006() -> None:
    hub = make_hub()
    seen = terminal_errors(hub)
    client = TestClient(hub)
    ws = client.websocket_connect("/ws")
    ws.abort()
    ws.abort()  # already gone: nothing happens
    half = client.websocket_connect("/ws")
    half.send_eof()
    half.send_eof()
    assert seen == [(EVENT_DISCONNECT, 1006), (EVENT_DISCONNECT, 1006)]
    assert half.closed


def test_messages_to_a_closed_client_are_dropped() -> None:
    hub = make_hub()
    client = TestClient(hub)
    with client.websocket_connect("/ws") as a:
        b = client.websocket_connect("/ws")
        hub.broadcast("before")
        b.close()
        hub.broadcast("after")
        assert [a.receive_text() for _ in range(2)] == ["before", "after"]
        # "before" reached b while it was open; nothing after its close does.
        assert b.pending == 1
        assert b.receive_text() == "before"
        assert b.pending == 0


def test_uuid_follows_rekeying() -> None:
    with TestClient(make_hub()).websocket_connect("/ws") as ws:
        assert ws.uuid == "c1"
        ws.kws.uuid = "renamed"
        assert ws.uuid == "renamed"


def test_rejection_raises_with_the_status_and_reason() -> None:
    hub = make_hub()
    with pytest.raises(WebSocketRejected) as info:
        TestClient(hub).websocket_connect("/missing")
    assert info.value.status == 404
    assert str(info.value).startswith("connection rejected with HTTP 404: ")
    assert str(WebSocketRejected(403)) == "connection rejected with HTTP 403"


def test_advance_moves_the_fake_clock() -> None:
    hub = make_hub()
    client = TestClient(hub, start_time=50.0)
    assert client.now == 50.0
    client.advance(2.5)
    assert client.now == 52.5
    client.advance(0)
    assert client.now == 52.5
    with pytest.raises(ValueError):
        client.advance(-1)


class Suspend:
    """An awaitable that suspends to its event loop, as a future does."""

    def __await__(self) -> Generator[str, None, None]:
        yield "a loop's future"


def test_the_loop_free_runner_refuses_awaits_that_need_a_loop() -> None:
    hub = make_hub()

    @hub.on("NEEDS_LOOP")
    async def needs_loop(ep: EventPayload) -> None:
        await Suspend()

    client = TestClient(hub)
    with client.websocket_connect("/ws") as ws:
        ws.kws.fire("NEEDS_LOOP")
        with pytest.raises(RuntimeError, match="run_async"):
            client.pump()


def test_connections_opened_by_another_driver_are_left_alone() -> None:
    hub = make_hub()
    client = TestClient(hub)
    stranger = hub.open(Request.from_target("/ws"))
    assert isinstance(stranger, Websocket)
    with client.websocket_connect("/ws") as ws:
        hub.broadcast("all")
        stranger.close()
        assert ws.receive_text() == "all"
    # The engine leaves a connection it did not make alone: the stranger stays closing.
    assert not stranger.is_alive
    assert stranger.state.value == "closing"
    assert hub.connections == ()


# -- over the real engine: what a socket client would see ------------------------------------


def errors_of(hub: Hub) -> list[BaseException | None]:
    seen: list[BaseException | None] = []
    hub.on(EVENT_ERROR, lambda ep: seen.append(ep.error))
    return seen


def test_advance_drives_keepalive_pings_that_the_client_answers() -> None:
    hub = make_hub()
    client = TestClient(hub, ping_interval=20, ping_timeout=10)
    with client.websocket_connect("/ws") as ws:
        client.advance(100)  # five pings, each answered
        assert not ws.closed
        assert client.server.stats.keepalive_timeouts == 0
        assert client.now == 100


def test_a_client_that_does_not_answer_pings_is_closed_with_1011() -> None:
    hub = make_hub()
    seen = terminal_errors(hub)
    client = TestClient(hub, ping_interval=20, ping_timeout=10)
    ws = client.websocket_connect("/ws")
    ws.auto_pong = False
    client.advance(29.9)
    assert not ws.closed
    client.advance(0.1)
    with pytest.raises(WebSocketDisconnect) as info:
        ws.receive()
    assert info.value.code == 1011
    assert seen == [(EVENT_DISCONNECT, 1011)]


def test_a_message_over_the_limit_is_closed_with_1009() -> None:
    hub = make_hub()
    errors = errors_of(hub)
    client = TestClient(hub, max_message_size=16)
    ws = client.websocket_connect("/ws")
    ws.send_text("x" * 17)
    assert ws.close_code == 1009
    assert isinstance(errors[0], RemoteProtocolError)


def test_a_slow_client_is_closed_with_1013_or_loses_messages() -> None:
    hub = make_hub()
    errors = errors_of(hub)
    client = TestClient(hub, max_queue=1000, backpressure="close")
    ws = client.websocket_connect("/ws")
    ws.stop_reading()
    hub.broadcast("x" * 600)
    hub.broadcast("y" * 600)  # over max_queue
    assert ws.close_code == 1013
    assert isinstance(errors[0], SlowConsumer)
    dropping = TestClient(make_hub(), max_queue=1000)
    slow = dropping.websocket_connect("/ws")
    slow.stop_reading()
    for n in range(3):
        dropping.hub.broadcast(str(n) * 600)
    assert slow.pending == 0  # waiting in the server, unread
    slow.resume_reading()
    assert slow.receive_text() == "0" * 600
    assert slow.pending == 0  # the other two were dropped
    assert dropping.server.stats.dropped_messages == 2
    slow.resume_reading()  # nothing waits: nothing happens


def test_pings_are_answered_with_pongs_and_garbage_is_a_protocol_error() -> None:
    hub = make_hub()
    client = TestClient(hub)
    ws = client.websocket_connect("/ws")
    ws.ping(b"are you there")
    assert ws.pongs == [b"are you there"]
    ws.send_raw(b"\x8f\x80\x00\x00\x00\x00")  # a reserved opcode (RFC 6455 5.2)
    assert ws.close_code == 1002


def test_compression_can_be_offered() -> None:
    client = TestClient(make_hub())
    with client.websocket_connect("/ws", compression=True) as ws:
        assert ws.conn.compressed
        ws.send_text("squeeze " * 100)
        assert ws.receive_text() == "squeeze " * 100


def test_plain_http_requests_get_what_a_browser_would() -> None:
    hub = make_hub()
    client = TestClient(hub, static={"/": ("text/html", b"<h1>hi</h1>")})
    page = client.request("GET", "/")
    assert (page.status, page.text) == (200, "<h1>hi</h1>")
    assert ("content-type", "text/html") in page.headers
    assert client.request("HEAD", "/").body == b""
    assert client.request("GET", "/ws").status == 426
    assert client.request("GET", "/nothing", headers={"accept": "*/*"}).status == 404


def test_an_oversized_request_head_is_refused_with_431() -> None:
    client = TestClient(make_hub(), max_request_size=1024)
    with pytest.raises(WebSocketRejected) as info:
        client.websocket_connect("/ws", headers={"x-big": "b" * 2000})
    assert info.value.status == 431
