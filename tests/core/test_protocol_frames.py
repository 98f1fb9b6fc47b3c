"""The protocol engine's frames: messages, fragments, limits, pings and every failure code."""

from __future__ import annotations

import itertools
import random

import pytest
from pairing import WAYS, Pair, Seen, Way, frame, names, pair, record
from wsproto.events import BytesMessage, CloseConnection, Ping, Pong, TextMessage
from wsproto.extensions import PerMessageDeflate
from wsproto.frame_protocol import Opcode

from ikisocket_core import (
    BINARY,
    EVENT_CONNECT,
    EVENT_DISCONNECT,
    EVENT_ERROR,
    EVENT_MESSAGE,
    EVENT_PING,
    EVENT_PONG,
    TEXT,
    ConnectionClosed,
    EventPayload,
    Hub,
    RemoteProtocolError,
)

CONT, TXT, BIN = Opcode.CONTINUATION, Opcode.TEXT, Opcode.BINARY
CLOSE, PING, PONG = Opcode.CLOSE, Opcode.PING, Opcode.PONG


def echo_hub() -> tuple[Hub, list[Seen]]:
    numbers = itertools.count(1)
    hub = Hub(uuid_factory=lambda: f"c{next(numbers)}")
    hub.websocket("/ws", lambda kws: None)
    log = record(hub)
    hub.on(EVENT_MESSAGE, lambda ep: ep.kws.emit(ep.data, ep.kind))
    return hub, log


def messages(log: list[Seen]) -> list[tuple[bytes, object]]:
    return [(s.data, s.kind) for s in log if s.name == EVENT_MESSAGE]


def assert_failed(p: Pair, log: list[Seen], code: int) -> RemoteProtocolError:
    """The server failed the connection with ``code``, cleanly, and told the hub once."""
    assert p.close_frames[0].code == code
    assert p.transport_closed
    assert p.net.lingers(p.conn)  # the peer may still be sending
    assert p.conn not in p.net.server.connections
    assert names(log)[-2:] == [EVENT_ERROR, EVENT_DISCONNECT]
    assert names(log).count(EVENT_DISCONNECT) == 1
    error = log[-2].error
    assert isinstance(error, RemoteProtocolError)
    assert error.close_code == code
    closed = log[-1].error
    assert isinstance(closed, ConnectionClosed)
    assert closed.code == code
    assert closed.cause is error
    assert len(p.net.hub) == 0
    assert p.net.server.stats.protocol_errors == 1
    return error


# -- messages -------------------------------------------------------------------------------


@pytest.mark.parametrize("way", WAYS)
def test_text_and_binary_round_trip_with_their_kind(way: Way) -> None:
    hub, log = echo_hub()
    p = pair(hub, way=way)
    p.send_text("héllo")
    p.send_bytes(b"\x00\xff")
    p.send_text("")
    assert messages(log) == [("héllo".encode(), TEXT), (b"\x00\xff", BINARY), (b"", TEXT)]
    assert p.messages == ["héllo", b"\x00\xff", ""]
    assert p.net.server.stats.messages_in == 3
    assert p.net.server.stats.frames_out == 3
    assert p.net.server.stats.bytes_in == p.sent


@pytest.mark.parametrize("way", WAYS)
def test_many_frames_in_one_chunk_are_dispatched_in_order(way: Way) -> None:
    hub, log = echo_hub()
    p = pair(hub, way=way)
    p.feed(b"".join(frame(TXT, str(i).encode()) for i in range(20)))
    assert [d for d, _ in messages(log)] == [str(i).encode() for i in range(20)]
    assert p.messages == [str(i) for i in range(20)]


@pytest.mark.parametrize("way", WAYS)
def test_fragmented_text_and_binary_are_reassembled(way: Way) -> None:
    hub, log = echo_hub()
    p = pair(hub, way=way)
    p.send_text("frag", finished=False)
    p.send_text("men", finished=False)
    p.send_text("ted")
    p.send_bytes(b"\x01", finished=False)
    p.send_bytes(b"\x02")
    # A code point split across two frames is still valid UTF-8.
    p.feed(frame(TXT, b"caf\xc3", fin=False) + frame(CONT, b"\xa9"))
    assert messages(log) == [(b"fragmented", TEXT), (b"\x01\x02", BINARY), ("café".encode(), TEXT)]
    assert p.messages == ["fragmented", b"\x01\x02", "café"]


@pytest.mark.parametrize("way", WAYS)
def test_ping_inside_a_fragmented_message(way: Way) -> None:
    hub, log = echo_hub()
    p = pair(hub, way=way)
    p.feed(frame(TXT, b"one ", fin=False) + frame(PING, b"mid") + frame(CONT, b"two"))
    assert [(s.name, s.data) for s in log[1:]] == [
        (EVENT_PING, b"mid"),
        (EVENT_MESSAGE, b"one two"),
    ]
    assert [e.payload for e in p.of(Pong)] == [b"mid"]
    assert p.messages == ["one two"]


def test_compressed_messages_round_trip_both_ways() -> None:
    hub, log = echo_hub()
    p = pair(hub, extensions=[PerMessageDeflate()])
    assert p.conn.compressed
    big = "compress me " * 10_000  # 120 kB: inflated in slices by the engine
    p.send_text(big)
    p.send_bytes(b"\x00" * 70_000)
    p.send_text("x", finished=False)
    p.send_text("y")
    assert messages(log) == [
        (big.encode(), TEXT),
        (b"\x00" * 70_000, BINARY),
        (b"xy", TEXT),
    ]
    assert p.messages == [big, b"\x00" * 70_000, "xy"]


# -- 1009: too big --------------------------------------------------------------------------


@pytest.mark.parametrize("way", WAYS)
def test_message_at_the_limit_passes(way: Way) -> None:
    hub, log = echo_hub()
    p = pair(hub, way=way, max_message_size=100)
    p.send_bytes(b"a" * 100)
    p.send_text("b" * 50, finished=False)
    p.send_text("c" * 50)
    assert [len(d) for d, _ in messages(log)] == [100, 100]


@pytest.mark.parametrize("way", WAYS)
def test_1009_for_a_whole_message_above_the_limit(way: Way) -> None:
    hub, log = echo_hub()
    p = pair(hub, way=way, max_message_size=100)
    p.send_bytes(b"a" * 101)
    assert_failed(p, log, 1009)
    assert messages(log) == []


@pytest.mark.parametrize("way", WAYS)
def test_1009_for_a_fragmented_message_above_the_limit(way: Way) -> None:
    hub, log = echo_hub()
    p = pair(hub, way=way, max_message_size=100)
    p.send_text("a" * 60, finished=False)
    p.send_text("b" * 41)
    assert_failed(p, log, 1009)
    assert messages(log) == []


@pytest.mark.parametrize("way", WAYS)
def test_1009_before_the_whole_oversized_frame_arrived(way: Way) -> None:
    hub, log = echo_hub()
    p = pair(hub, way=way, max_message_size=100)
    # The header announces 1 MB; the server gives up after 101 payload bytes.
    p.feed(frame(BIN, b"z" * 101, length=1_000_000))
    assert_failed(p, log, 1009)


def test_1009_for_a_compressed_message_that_inflates_above_the_limit() -> None:
    hub, log = echo_hub()
    p = pair(hub, extensions=[PerMessageDeflate()], max_message_size=10_000)
    before = len(p.received)
    p.send_bytes(bytes(1_000_000))  # about 1 kB on the wire
    assert_failed(p, log, 1009)
    assert len(p.received) - before < 200


def test_no_limit_when_max_message_size_is_none() -> None:
    hub, log = echo_hub()
    p = pair(hub, max_message_size=None)
    p.send_bytes(bytes(3 * 1024 * 1024))
    assert messages(log) == [(bytes(3 * 1024 * 1024), BINARY)]


# -- 1007: invalid UTF-8 ---------------------------------------------------------------------


@pytest.mark.parametrize("way", WAYS)
def test_1007_for_invalid_utf8_in_a_whole_text_message(way: Way) -> None:
    hub, log = echo_hub()
    p = pair(hub, way=way)
    p.feed(frame(TXT, b"ok \xff\xfe"))
    assert_failed(p, log, 1007)
    assert messages(log) == []


@pytest.mark.parametrize("way", WAYS)
def test_1007_for_invalid_utf8_in_a_fragmented_text_message(way: Way) -> None:
    hub, log = echo_hub()
    p = pair(hub, way=way)
    p.feed(frame(TXT, b"fine", fin=False) + frame(CONT, b"\xc3", fin=False) + frame(CONT, b"("))
    assert_failed(p, log, 1007)
    assert messages(log) == []


def test_1007_for_invalid_utf8_in_a_close_reason() -> None:
    hub, log = echo_hub()
    p = pair(hub)
    p.feed(frame(CLOSE, b"\x03\xe8\xff"))
    assert_failed(p, log, 1007)


# -- 1002: protocol errors ---------------------------------------------------------------------

PROTOCOL_ERRORS = {
    "unmasked": frame(TXT, b"hi", mask=False),
    "reserved-bits": frame(TXT, b"hi", rsv=2),
    "rsv1-without-deflate": frame(TXT, b"hi", rsv=4),
    "bad-data-opcode": frame(0x3, b"hi"),
    "bad-control-opcode": frame(0xB, b""),
    "continuation-without-start": frame(CONT, b"hi"),
    "new-message-inside-fragmented": frame(TXT, b"a", fin=False) + frame(BIN, b"b"),
    "fragmented-ping": frame(PING, b"x", fin=False),
    "ping-too-long": frame(PING, b"x" * 126),
    "close-one-byte": frame(CLOSE, b"\x03"),
    "close-code-999": frame(CLOSE, b"\x03\xe7"),
}


@pytest.mark.parametrize("way", WAYS)
@pytest.mark.parametrize("data", PROTOCOL_ERRORS.values(), ids=PROTOCOL_ERRORS.keys())
def test_1002_for_protocol_errors(data: bytes, way: Way) -> None:
    hub, log = echo_hub()
    p = pair(hub, way=way)
    p.feed(data)
    assert_failed(p, log, 1002)
    assert messages(log) == []


def test_frames_after_a_failure_are_ignored() -> None:
    hub, log = echo_hub()
    p = pair(hub)
    p.feed(frame(0x3, b"") + frame(TXT, b"late"))
    assert_failed(p, log, 1002)
    p.feed(frame(TXT, b"later still"))
    assert messages(log) == []


def test_failure_after_a_message_in_the_same_chunk_sends_the_reply_first() -> None:
    hub, log = echo_hub()
    p = pair(hub)
    p.feed(frame(TXT, b"first") + frame(TXT, b"\xff"))
    assert p.messages == ["first"]
    assert_failed(p, log, 1007)


# -- pings and pongs -------------------------------------------------------------------------


@pytest.mark.parametrize("way", WAYS)
def test_ping_is_answered_and_reported(way: Way) -> None:
    hub, log = echo_hub()
    p = pair(hub, way=way)
    p.send(Ping(payload=b"are you there"))
    assert [e.payload for e in p.of(Pong)] == [b"are you there"]
    assert [(s.name, s.data) for s in log[1:]] == [(EVENT_PING, b"are you there")]


@pytest.mark.parametrize("way", WAYS)
def test_pong_is_reported(way: Way) -> None:
    hub, log = echo_hub()
    p = pair(hub, way=way)
    p.send(Pong(payload=b"unsolicited"))
    assert [(s.name, s.data) for s in log] == [(EVENT_CONNECT, b""), (EVENT_PONG, b"unsolicited")]
    assert p.of(Ping) == []


def test_listener_emits_from_ping_and_pong() -> None:
    hub, _ = echo_hub()
    hub.on(EVENT_PING, lambda ep: ep.kws.emit(b"got ping " + ep.data, BINARY))
    hub.on(EVENT_PONG, lambda ep: ep.kws.emit("got pong"))
    p = pair(hub)
    p.ping(b"1")
    p.send(Pong(payload=b"2"))
    assert p.messages == [b"got ping 1", "got pong"]
    assert [type(e) for e in p.events[1:]] == [Pong, BytesMessage, TextMessage]


# -- compressed input arrives in big chunks ---------------------------------------------------

NOISE = random.Random(7).randbytes(40_000)  # incompressible: frames stay about this big


def test_big_compressed_chunks_are_inflated_in_slices() -> None:
    hub, log = echo_hub()
    p = pair(hub, extensions=[PerMessageDeflate()])
    assert p.ws is not None
    p.feed(p.ws.send(BytesMessage(data=NOISE)) + p.ws.send(TextMessage(data="after")))
    assert messages(log) == [(NOISE, BINARY), (b"after", TEXT)]
    assert p.messages == [NOISE, "after"]


def test_a_close_frame_inside_a_big_compressed_chunk_ends_reading() -> None:
    hub, log = echo_hub()
    p = pair(hub, extensions=[PerMessageDeflate()])
    assert p.ws is not None
    data = p.ws.send(TextMessage(data="hi")) + p.ws.send(CloseConnection(code=1000))
    p.feed(data + NOISE)  # whatever follows the close frame is never parsed
    assert names(log) == [EVENT_CONNECT, EVENT_MESSAGE, EVENT_DISCONNECT]
    assert p.transport_closed


def test_an_async_listener_inside_a_big_compressed_chunk_holds_back_the_rest() -> None:
    hub = Hub()
    hub.websocket("/ws", lambda kws: None)
    seen: list[int] = []

    @hub.on(EVENT_MESSAGE)
    async def slow(ep: EventPayload) -> None:
        seen.append(len(ep.data))

    p = pair(hub, extensions=[PerMessageDeflate()])
    assert p.ws is not None
    parts = [NOISE[i * 10_000 : i * 10_000 + 9_000 + i] for i in range(4)]  # 4 big frames
    p.feed(b"".join(p.ws.send(BytesMessage(data=part)) for part in parts))
    assert p.conn.blocked == 1
    assert len(p.net.handlers) == 1
    p.feed(p.ws.send(BytesMessage(data=NOISE)))  # a big chunk while blocked waits as well
    assert len(p.net.handlers) == 1
    assert p.net.run_handlers() == 5
    assert seen == [9_000, 9_001, 9_002, 9_003, 40_000]
