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
from pairing import Network
from wsproto.frame_protocol import FrameProtocol, Opcode

from ikisocket_core import (
    BINARY,
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
