"""Properties of the protocol engine, checked with Hypothesis.

* However a valid client byte stream is split into chunks, the hub sees the
  same events and the client gets the same bytes back.
* Whatever bytes a peer sends, before or after the handshake, nothing is raised
  out of the server and the connection always ends cleanly: one
  ``CloseTransport``, the connection forgotten, the hub empty.
"""

from __future__ import annotations

import itertools
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pairing import Network, frame, record
from wsproto import ConnectionType, WSConnection
from wsproto.events import Request
from wsproto.extensions import PerMessageDeflate
from wsproto.frame_protocol import Opcode

from ikisocket_core import (
    EVENT_CLOSE,
    EVENT_CONNECT,
    EVENT_DISCONNECT,
    EVENT_MESSAGE,
    ConnectionClosed,
    EventPayload,
    Hub,
    RemoteProtocolError,
)
from ikisocket_core.protocol import CloseTransport

SETTINGS = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def make_hub() -> Hub:
    numbers = itertools.count(1)
    hub = Hub(uuid_factory=lambda: f"c{next(numbers)}")

    @hub.websocket("/ws/:room")
    def joined(kws: Any) -> None:
        kws.join(kws.params["room"])
        kws.emit("welcome")

    @hub.on(EVENT_MESSAGE)
    def echo(ep: EventPayload) -> None:
        if ep.data == b"close me":
            ep.kws.close(4000, "as asked")
        else:
            ep.kws.emit(ep.data, ep.kind)
            ep.kws.to(ep.kws.params["room"]).emit(b"seen")

    return hub


def handshake(path: str = "/ws/lobby", extensions: list[Any] | None = None) -> bytes:
    client = WSConnection(ConnectionType.CLIENT)
    return client.send(Request(host="localhost", target=path, extensions=extensions or []))


def summary(log: list[Any]) -> list[tuple[object, ...]]:
    out: list[tuple[object, ...]] = []
    for seen in log:
        error = seen.error
        code = getattr(error, "code", getattr(error, "close_code", None))
        out.append((seen.name, seen.uuid, seen.data, seen.kind, type(error).__name__, code))
    return out


# -- chunking does not matter ---------------------------------------------------------------

message = st.one_of(
    st.text(max_size=40).map(lambda t: [frame(Opcode.TEXT, t.encode())]),
    st.binary(max_size=40).map(lambda b: [frame(Opcode.BINARY, b)]),
    # A fragmented text message, maybe with a ping in the middle.
    st.tuples(st.text(min_size=1, max_size=20), st.booleans()).map(
        lambda a: [
            frame(Opcode.TEXT, a[0].encode()[:3], fin=False),
            *([frame(Opcode.PING, b"p")] if a[1] else []),
            frame(Opcode.CONTINUATION, a[0].encode()[3:]),
        ]
    ),
    st.binary(max_size=10).map(lambda b: [frame(Opcode.PING, b)]),
    st.binary(max_size=10).map(lambda b: [frame(Opcode.PONG, b)]),
)
stream = st.lists(message, max_size=8).map(
    lambda ms: handshake() + b"".join(b"".join(m) for m in ms) + frame(Opcode.CLOSE, b"\x03\xe8bye")
)


def run_stream(data: bytes, cuts: list[int]) -> tuple[list[tuple[object, ...]], bytes, int]:
    hub = make_hub()
    log = record(hub)
    net = Network(hub)
    p = net.attach(websocket=False)
    bounds = [0, *sorted(set(cuts)), len(data)]
    for start, end in itertools.pairwise(bounds):
        p.feed(data[start:end])
    assert p.transport_closed
    assert net.server.connections == ()
    assert len(hub) == 0
    return summary(log), bytes(p.received), net.server.stats.messages_in


@SETTINGS
@given(data=stream, cuts=st.lists(st.integers(min_value=1, max_value=1000), max_size=12))
def test_any_split_gives_the_same_events(data: bytes, cuts: list[int]) -> None:
    whole = run_stream(data, [])
    assert whole[0][0][0] == EVENT_CONNECT
    assert whole[0][-1][0] == EVENT_DISCONNECT
    assert run_stream(data, [c for c in cuts if c < len(data)]) == whole
    assert run_stream(data, list(range(1, len(data)))) == whole  # one byte at a time


# -- garbage never breaks the server ----------------------------------------------------------

junk_frame = st.builds(
    frame,
    opcode=st.integers(min_value=0, max_value=15),
    payload=st.binary(max_size=30),
    fin=st.booleans(),
    rsv=st.sampled_from([0, 0, 0, 4, 2, 1]),
    mask=st.sampled_from([True, True, True, False]),
)
junk = st.lists(st.one_of(st.binary(min_size=1, max_size=40), junk_frame), max_size=10)
cuts = st.lists(st.integers(min_value=1, max_value=400), max_size=6)


def end_cleanly(net: Network, hub: Hub, log: list[Any]) -> None:
    """Let every timer run out and the peer go away; check nothing is left."""
    conn = next(iter(net.pairs))
    p = net.pairs[conn]
    for now in (1_000.0, 2_000.0, 3_000.0):
        net.tick(now)
    net.server.receive_eof(conn)
    net.drain()
    assert net.closed.count(conn) == 1
    assert sum(isinstance(a, CloseTransport) and a.connection is conn for a in net.actions) == 1
    assert conn not in net.server.connections
    assert p.transport_closed
    assert len(hub) == 0
    assert hub.rooms == {}
    terminal = [s for s in log if s.name in (EVENT_DISCONNECT, EVENT_CLOSE)]
    connected = [s for s in log if s.name == EVENT_CONNECT]
    assert len(terminal) == len(connected) <= 1
    for seen in terminal:
        assert isinstance(seen.error, ConnectionClosed)


def feed_in_pieces(net: Network, blob: bytes, cuts: list[int]) -> None:
    p = next(iter(net.pairs.values()))
    bounds = [0, *sorted({c for c in cuts if c < len(blob)}), len(blob)]
    for start, end in itertools.pairwise(bounds):
        p.feed(blob[start:end])


@SETTINGS
@given(chunks=junk, cuts=cuts, static=st.booleans())
def test_garbage_before_the_handshake(chunks: list[bytes], cuts: list[int], static: bool) -> None:
    hub = make_hub()
    log = record(hub)
    net = Network(hub, static={"/": ("text/plain", b"hi")} if static else {})
    net.attach(websocket=False)
    feed_in_pieces(net, b"".join(chunks), cuts)
    end_cleanly(net, hub, log)
    assert log == []


@SETTINGS
@given(
    chunks=junk,
    cuts=cuts,
    compressed=st.booleans(),
    prefix=st.lists(st.sampled_from([b"hello", b"close me", b"\x00"]), max_size=3),
)
def test_garbage_after_the_handshake(
    chunks: list[bytes], cuts: list[int], compressed: bool, prefix: list[bytes]
) -> None:
    hub = make_hub()
    log = record(hub)
    net = Network(hub, max_message_size=64, ping_interval=5, ping_timeout=5, close_timeout=5)
    p = net.attach(websocket=False)
    p.feed(handshake(extensions=[PerMessageDeflate()] if compressed else []))
    assert p.received.startswith(b"HTTP/1.1 101 ")
    assert p.conn.compressed is compressed
    blob = b"".join(frame(Opcode.BINARY, text) for text in prefix) + b"".join(chunks)
    feed_in_pieces(net, blob, cuts)
    end_cleanly(net, hub, log)
    for seen in log:
        if seen.name == "error":
            assert isinstance(seen.error, RemoteProtocolError)
            assert seen.error.close_code in (1002, 1007, 1009, 1011)
        if seen.name == EVENT_MESSAGE:
            assert len(seen.data) <= 64
