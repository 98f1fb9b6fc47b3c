"""The engine's own framing of outgoing messages, checked against wsproto's parser.

For connections without extensions the server frames text and binary messages
itself (RFC 6455 section 5.2) instead of asking wsproto to, so UTF-8 text is
never decoded to ``str`` just to be encoded again. Whatever the length (7-bit,
16-bit and 64-bit length forms, and each boundary between them), a wsproto
client must read back exactly the message that was sent.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import itertools

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pairing import WAYS, Network, Way
from wsproto.frame_protocol import FrameProtocol, Opcode

from ikisocket_core import (
    BINARY,
    EVENT_ERROR,
    EVENT_MESSAGE,
    TEXT,
    EventPayload,
    Hub,
    Request,
    Send,
    Websocket,
)
from ikisocket_core._dispatch import _Handler
from ikisocket_core._frames import _frame
from ikisocket_core.protocol import Server, ServerConnection

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

#: Each length form of RFC 6455 5.2 and both sides of every boundary between them.
BOUNDARIES = (0, 1, 125, 126, 127, 65535, 65536, 65537)

lengths = st.one_of(st.sampled_from(BOUNDARIES), st.integers(min_value=0, max_value=70_000))


def payload_of(length: int, start: str) -> bytes:
    """Valid UTF-8 of at least ``length`` bytes: ``start`` then ASCII padding."""
    head = start.encode("utf-8")
    return head + b"x" * max(0, length - len(head))


def parse_as_client(data: bytes) -> list[tuple[Opcode, object, bool]]:
    """Every frame a wsproto client reads from ``data``: opcode, payload, FIN."""
    client = FrameProtocol(client=True, extensions=[])
    client.receive_bytes(data)
    return [(f.opcode, f.payload, f.frame_finished) for f in client.received_frames()]


@SETTINGS
@given(length=lengths, start=st.text(max_size=8), binary=st.booleans())
def test_any_length_frames_round_trip_through_wsproto(
    length: int, start: str, binary: bool
) -> None:
    payload = payload_of(length, start)
    kind = BINARY if binary else TEXT
    frames = parse_as_client(_frame(kind, payload))
    if binary:
        assert frames == [(Opcode.BINARY, payload, True)]
    else:
        assert frames == [(Opcode.TEXT, payload.decode("utf-8"), True)]


@pytest.mark.parametrize("length", BOUNDARIES)
def test_the_shortest_length_form_is_used(length: int) -> None:
    # RFC 6455 5.2: "the minimal number of bytes MUST be used to encode the length".
    header = len(_frame(TEXT, b"x" * length)) - length
    assert header == (2 if length < 126 else 4 if length < 65536 else 10)


def echo_and_relay_hub() -> Hub:
    numbers = itertools.count(1)
    hub = Hub(uuid_factory=lambda: f"c{next(numbers)}")
    hub.websocket("/ws", lambda kws: None)

    @hub.on(EVENT_MESSAGE)
    def echo(ep: EventPayload) -> None:
        ep.kws.emit(ep.data, ep.kind)
        ep.kws.broadcast(ep.data, kind=ep.kind)

    return hub


@SETTINGS
@given(length=lengths, start=st.text(max_size=8), binary=st.booleans())
def test_echo_and_broadcast_reach_wsproto_clients_intact(
    length: int, start: str, binary: bool
) -> None:
    net = Network(echo_and_relay_hub(), compression=False)
    sender, other = net.pair(), net.pair()
    payload = payload_of(length, start)
    if binary:
        sender.send_bytes(payload)
        expected: str | bytes = payload
    else:
        expected = payload.decode("utf-8")
        sender.send_text(expected)
    assert sender.messages == [expected]
    assert other.messages == [expected]


def test_a_broadcast_is_framed_once_for_every_uncompressed_target() -> None:
    hub = echo_and_relay_hub()
    net = Network(hub, compression=False)
    clients = [net.pair() for _ in range(4)]
    before = net.server.stats.broadcast_encodes
    clients[0].send_text("hi")
    assert net.server.stats.broadcast_encodes - before == 2  # the echo, then the broadcast
    assert [c.messages for c in clients] == [["hi"], ["hi"], ["hi"], ["hi"]]


def test_a_discarded_handler_closes_the_listeners_coroutine() -> None:
    # An adapter shutting down discards handlers it never ran: the listener's own
    # coroutine is closed too, so Python has no "never awaited" coroutine to warn about.
    hub = Hub()
    hub.websocket("/ws", lambda kws: None)
    ran: list[str] = []

    @hub.on(EVENT_MESSAGE)
    async def slow(ep: EventPayload) -> None:
        ran.append("ran")

    net = Network(hub)
    net.pair().send_text("x")
    (handler,) = net.handlers
    awaitable = handler.awaitable
    assert isinstance(awaitable, _Handler)
    coroutine = awaitable._awaitable
    assert inspect.getcoroutinestate(coroutine) == inspect.CORO_CREATED  # type: ignore[arg-type]
    awaitable.close()
    assert inspect.getcoroutinestate(coroutine) == inspect.CORO_CLOSED  # type: ignore[arg-type]
    assert ran == []


def test_a_discarded_handler_of_a_plain_awaitable_is_dropped() -> None:
    hub = Hub()
    hub.websocket("/ws", lambda kws: None)
    loop = asyncio.new_event_loop()
    try:
        future: asyncio.Future[None] = loop.create_future()
        hub.on(EVENT_MESSAGE, lambda ep: future)
        net = Network(hub)
        net.pair().send_text("x")
        (handler,) = net.handlers
        assert isinstance(handler.awaitable, _Handler)
        handler.awaitable.close()  # a future has no close(): nothing to do, nothing raised
        assert not future.done()
    finally:
        loop.close()


def test_the_hubs_payloads_and_sends_are_the_frozen_dataclasses_users_know() -> None:
    hub = Hub(uuid_factory=lambda: "c1")
    seen: list[EventPayload] = []

    @hub.websocket("/ws")
    def opened(kws: Websocket) -> None:
        kws.set_attribute("user", "ann")

    @hub.on(EVENT_MESSAGE)
    def reply(ep: EventPayload) -> None:
        seen.append(ep)
        ep.kws.emit(b"\x00", BINARY)

    kws = hub.open(Request.from_target(b"/ws"))
    assert isinstance(kws, Websocket)
    hub.receive_message(kws, "hi")
    (ep,) = seen
    assert ep == EventPayload(
        kws=kws,
        name=EVENT_MESSAGE,
        socket_uuid="c1",
        socket_attributes={"user": "ann"},
        data=b"hi",
        kind=TEXT,
    )
    assert type(ep) is EventPayload
    assert dataclasses.replace(ep, data=b"other").data == b"other"
    with pytest.raises(dataclasses.FrozenInstanceError):
        ep.data = b"changed"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        del ep.data
    # The attributes it carries stay those of when it fired.
    kws.set_attribute("user", "bob")
    kws.set_attribute("room", 1)
    assert ep.socket_attributes == {"user": "ann"}
    assert kws.attributes == {"user": "bob", "room": 1}
    (send,) = hub.drain_actions()
    assert type(send) is Send
    assert send == Send(targets=(kws,), data=b"\x00", kind=BINARY)
    assert repr(send) == repr(Send(targets=(kws,), data=b"\x00", kind=BINARY))
    with pytest.raises(dataclasses.FrozenInstanceError):
        send.data = b"changed"  # type: ignore[misc]


# -- a reply during the connection's own input goes onto it directly -------------------------


def replies_hub(log: list[bool], server_of: list[Server]) -> Hub:
    """Each message is answered twice around a broadcast; ``Server.receiving`` is logged."""
    numbers = itertools.count(1)
    hub = Hub(uuid_factory=lambda: f"c{next(numbers)}")
    hub.websocket("/ws", lambda kws: None)

    @hub.on(EVENT_MESSAGE)
    def reply(ep: EventPayload) -> None:
        receiving = server_of[0].receiving
        log.append(receiving is not None and receiving.kws is ep.kws)
        text = ep.data.decode()
        ep.kws.emit(f"{text}: first")
        hub.broadcast(f"{text}: to all")  # queued: everything after it keeps its place
        ep.kws.emit(f"{text}: last")

    return hub


@pytest.mark.parametrize("way", WAYS)
def test_replies_during_an_input_keep_their_order_around_queued_sends(way: Way) -> None:
    log: list[bool] = []
    servers: list[Server] = []
    net = Network(replies_hub(log, servers), compression=False)
    servers.append(net.server)
    sender, other = net.pair(way=way), net.pair()
    sender.send_text("a")
    sender.send_text("b")
    assert sender.messages == [
        *("a: first", "a: to all", "a: last"),
        *("b: first", "b: to all", "b: last"),
    ]
    assert other.messages == ["a: to all", "b: to all"]
    # The connection whose input ran, while it ran; nobody's outside an input.
    assert log == [True, True]
    assert net.server.receiving is None


def test_a_reply_outside_any_input_takes_the_queue_and_wakes_the_driver() -> None:
    net = Network(echo_and_relay_hub(), compression=False)
    woken: list[bool] = []
    net.server.set_wakeup(lambda: woken.append(True))
    client = net.pair()
    (uuid,) = net.hub.connections
    kws = net.hub.get(uuid)
    kws.emit("from a timer")
    assert woken == [True]  # nothing was written behind the driver's back
    assert client.messages == []
    net.drain()
    assert client.messages == ["from a timer"]


@pytest.mark.parametrize(
    ("backpressure", "received", "dropped"),
    [("drop", ["x" * 60], 1), ("close", [], 0)],
)
def test_replies_during_an_input_are_bound_by_max_queue(
    backpressure: str, received: list[str], dropped: int
) -> None:
    hub = Hub()
    hub.websocket("/ws", lambda kws: None)

    @hub.on(EVENT_MESSAGE)
    def twice(ep: EventPayload) -> None:
        ep.kws.emit("x" * 60)  # an empty buffer takes any message
        ep.kws.emit("y" * 60)  # past max_queue with the first

    net = Network(hub, compression=False, max_queue=100, backpressure=backpressure)
    client = net.pair()
    frames_out = net.server.stats.frames_out
    client.send_text("go")
    assert client.messages == received
    assert net.server.stats.dropped_messages == dropped
    assert net.server.stats.frames_out - frames_out == 2  # as a broadcast counts them
    if backpressure == "close":
        assert client.close_frames[0].code == 1013  # then the transport closes


def test_nothing_is_queued_after_the_close_frame() -> None:
    net = Network(echo_and_relay_hub(), compression=False)
    client = net.pair()
    (uuid,) = net.hub.connections
    kws = net.hub.get(uuid)
    conn = kws.conn
    assert isinstance(conn, ServerConnection)
    conn.close(1000, "bye")
    net.drain()
    conn.deliver_own(b"too late", TEXT)  # RFC 6455 5.5.1: nothing after a close frame
    assert conn.take() == []
    assert [c.code for c in client.close_frames] == [1000]


def test_replies_during_an_input_take_every_form_emit_takes() -> None:
    errors: list[BaseException | None] = []
    hub = Hub()
    hub.websocket("/ws", lambda kws: None)
    hub.on(EVENT_ERROR, lambda ep: errors.append(ep.error))

    @hub.on(EVENT_MESSAGE)
    def replies(ep: EventPayload) -> None:
        ep.kws.emit("héllo")  # text as str, not ASCII
        ep.kws.emit(b"\xff\x00", 2)  # type: ignore[arg-type]  # the seed's opcode
        ep.kws.emit(b"ok", TEXT)
        ep.kws.emit(b"\xff", TEXT)  # not UTF-8: refused, the listener fails

    net = Network(hub, compression=False)
    client = net.pair()
    client.send_text("go")
    assert client.messages == ["héllo", b"\xff\x00", "ok"]
    (error,) = errors
    assert isinstance(error, ValueError)  # as emit documents it
