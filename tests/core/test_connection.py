"""The per-connection object: its message entry (ASGI), the pong it waits for, bounded inflation."""

from __future__ import annotations

import gc
import weakref
import zlib
from typing import Any

import pytest
from pairing import Network, frame, names, record, run_to_completion
from wsproto.events import Ping, Pong
from wsproto.extensions import PerMessageDeflate
from wsproto.frame_protocol import Opcode

from ikisocket_core import (
    BINARY,
    EVENT_CLOSE,
    EVENT_CONNECT,
    EVENT_DISCONNECT,
    EVENT_ERROR,
    EVENT_MESSAGE,
    TEXT,
    ConnectionClosed,
    ConnectionState,
    EventPayload,
    Hub,
    LocalProtocolError,
    MessageKind,
    Reject,
    RemoteProtocolError,
    Request,
    SlowConsumer,
)
from ikisocket_core._timers import Deadlines
from ikisocket_core.protocol import (
    CloseTransport,
    Flush,
    RunHandler,
    Server,
    ServerConnection,
)


def echo_hub() -> Hub:
    hub = Hub()

    @hub.websocket("/ws")
    def on_open(kws: Any) -> None:
        kws.emit("welcome")

    @hub.on(EVENT_MESSAGE)
    def echo(ep: EventPayload) -> None:
        ep.kws.emit(ep.data, ep.kind)

    return hub


def request(path: str = "/ws") -> Request:
    return Request.from_target(path, [("host", "x")], client=("10.0.0.1", 4000), scheme="ws")


def accepted(server: Server, path: str = "/ws") -> ServerConnection:
    conn = server.accept(request(path), now=0.0, transport="asgi-send")
    assert isinstance(conn, ServerConnection)
    return conn


# -- the message entry ---------------------------------------------------------------------


def test_accept_starts_open_and_output_is_whole_messages() -> None:
    hub = echo_hub()
    server = Server(hub)
    conn = accepted(server)
    assert conn.state is ConnectionState.OPEN
    assert conn.message_level
    assert conn.transport == "asgi-send"
    assert conn.client == ("10.0.0.1", 4000)
    assert server.drain_actions() == [Flush((conn,))]
    assert conn.take() == [(TEXT, b"welcome")]
    conn.receive_message(b"\x00\x01", BINARY)
    assert server.drain_actions() == [Flush((conn,))]
    assert conn.take() == [(BINARY, b"\x00\x01")]
    assert server.stats.messages_in == 1
    assert server.next_deadline() is None  # no keepalive: the ASGI server owns the transport


@pytest.mark.parametrize("end", ["peer close", "transport lost", "server close"])
def test_an_ended_message_level_connection_lets_go_of_its_handle(end: str) -> None:
    # Behind an ASGI server too: at the end the handle (with its request) is freed by
    # reference counting, not left in a cycle with the engine's connection.
    server = Server(echo_hub())
    conn = accepted(server)
    assert conn.kws is not None
    handle = weakref.ref(conn.kws)
    server.drain_actions()
    conn.take()
    gc.disable()
    try:
        if end == "peer close":
            conn.receive_close(1000, "bye")
        elif end == "transport lost":
            conn.connection_lost()
        else:
            handle().close(1001, "going")  # type: ignore[union-attr]
            server.drain_actions()
            assert conn.close_code == 1001
            conn.receive_close(1001, "going")  # the driver sent it: the engine is done
        server.drain_actions()
        assert conn.state is ConnectionState.CLOSED
        assert conn.kws is None
        assert handle() is None
        assert conn.receive_message(b"late", TEXT, take=True) is None  # ignored, as before
    finally:
        gc.enable()


def test_take_hands_back_the_reply_when_it_is_all_there_is_to_do() -> None:
    hub = echo_hub()
    server = Server(hub)
    conn = accepted(server)
    other = accepted(server)
    server.drain_actions()
    conn.take(), other.take()
    # An echo: this connection's output alone, taken at once; nothing left to drain.
    assert conn.receive_message(b"hi", TEXT, take=True) == [(TEXT, b"hi")]
    assert server.drain_actions() == []
    assert conn.buffered == 0
    # Without take, the same as ever: drain, then take.
    assert conn.receive_message(b"again", TEXT) is None
    assert server.drain_actions() == [Flush((conn,))]
    assert conn.take() == [(TEXT, b"again")]

    @hub.on(EVENT_MESSAGE)
    def relay(ep: EventPayload) -> None:
        hub.broadcast(ep.data)

    # Output for another connection too: nothing is taken; the drain has both.
    assert conn.receive_message(b"all", TEXT, take=True) is None
    assert server.drain_actions() == [Flush((conn, other))]
    assert conn.take() == [(TEXT, b"all"), (TEXT, b"all")]
    assert other.take() == [(TEXT, b"all")]
    # A close to perform: not taken either.
    hub.on(EVENT_MESSAGE, lambda ep: ep.kws.close(4000, "bye"))
    assert conn.receive_message(b"last", TEXT, take=True) is None
    actions = server.drain_actions()
    assert actions[0] == Flush((conn, other))
    assert isinstance(actions[-1], CloseTransport)
    assert conn.close_code == 4000


def test_take_at_the_byte_entry_hands_back_the_frames_when_they_are_all_to_do() -> None:
    hub = echo_hub()
    net = Network(hub)
    p, other = net.pair(), net.pair()
    server, conn = net.server, p.conn
    echoed = len(p.messages)
    # An echo: the frame back, taken at once (as the socket adapters write it); no drain.
    out = server.receive_data(conn, frame(0x1, b"hi"), take=True)
    assert out == [b"\x81\x02hi"]
    assert server.drain_actions() == []
    assert conn.buffered == 0
    # A ping's pong is this connection's output alone too; several frames in one read
    # come back in order.
    out = server.receive_data(conn, frame(0x9, b"p") + frame(0x2, b"\x00"), take=True)
    assert out == [b"\x8a\x01p", b"\x82\x01\x00"]
    # Nothing to write: nothing taken, nothing to drain.
    hub.off(EVENT_MESSAGE)
    assert server.receive_data(conn, frame(0x1, b"quiet"), take=True) is None
    assert server.drain_actions() == []

    @hub.on(EVENT_MESSAGE)
    def relay(ep: EventPayload) -> None:
        ep.kws.emit(ep.data)
        hub.broadcast(ep.data, exclude=ep.kws)

    # Output for another connection too: nothing is taken; the drain has both.
    assert server.receive_data(conn, frame(0x1, b"all"), take=True) is None
    assert server.drain_actions() == [Flush((conn, other.conn))]
    assert conn.take() == [b"\x81\x03all"]
    assert other.conn.take() == [b"\x81\x03all"]
    # The server's close: its close frame is this connection's output alone (the closing
    # handshake goes on); the peer's answer ends it with an action to perform: not taken.
    hub.off(EVENT_MESSAGE)
    hub.on(EVENT_MESSAGE, lambda ep: ep.kws.close(4000, "bye"))
    assert server.receive_data(conn, frame(0x1, b"last"), take=True) == [b"\x88\x05\x0f\xa0bye"]
    assert server.receive_data(conn, frame(0x8, b"\x0f\xa0"), take=True) is None
    assert [type(a) for a in server.drain_actions()] == [CloseTransport]
    assert len(p.messages) == echoed  # everything above was taken here, not delivered
    # An async listener to run as well: its RunHandler must reach the driver, so the
    # echo is not taken either (a driver would skip the drain).
    hub.off(EVENT_MESSAGE)
    hub.on(EVENT_MESSAGE, lambda ep: ep.kws.emit(ep.data))

    async def later(ep: EventPayload) -> None:
        return None

    hub.on(EVENT_MESSAGE, later)
    assert server.receive_data(other.conn, frame(0x1, b"a"), take=True) is None
    flush, handler = server.drain_actions()
    assert flush == Flush((other.conn,))
    assert isinstance(handler, RunHandler)
    assert other.conn.take() == [b"\x81\x01a"]
    run_to_completion(handler.awaitable)


def test_a_message_after_the_server_closed_runs_no_listener() -> None:
    hub = echo_hub()
    server = Server(hub)
    conn = accepted(server)
    server.drain_actions()
    conn.take()
    (uuid,) = hub.connections
    hub.close(uuid, 4000, "bye")
    assert isinstance(server.drain_actions()[0], CloseTransport)
    assert conn.state is ConnectionState.CLOSING  # the ASGI server sends the close
    # Still counted, as frames after a close frame are; no listener runs, nothing is sent.
    assert conn.receive_message(b"late", TEXT, take=True) is None
    assert server.drain_actions() == []
    assert conn.take() == []
    assert server.stats.messages_in == 1


def test_accept_returns_the_rejection_and_keeps_nothing() -> None:
    hub = echo_hub()
    server = Server(hub)
    result = server.accept(request("/nowhere"), now=0.0)
    assert isinstance(result, Reject)
    assert result.status == 404
    assert server.connections == ()
    assert server.stats.rejected == 1


def test_a_message_level_connection_refuses_bytes() -> None:
    server = Server(echo_hub())
    conn = accepted(server)
    with pytest.raises(LocalProtocolError, match="takes messages"):
        server.receive_data(conn, b"GET / HTTP/1.1\r\n")


def test_the_message_limit_applies_at_the_message_entry_too() -> None:
    hub = echo_hub()
    log = record(hub)
    server = Server(hub, max_message_size=10)
    conn = accepted(server)
    server.drain_actions()
    conn.take()
    conn.receive_message(b"x" * 11, TEXT)
    actions = server.drain_actions()
    assert actions == [CloseTransport(conn)]
    assert (conn.close_code, conn.close_reason) == (1009, "message of 11+ bytes exceeds 10")
    assert names(log) == [EVENT_CONNECT, EVENT_ERROR, EVENT_DISCONNECT]
    assert isinstance(log[1].error, RemoteProtocolError)
    conn.receive_message(b"late", TEXT)  # ignored once it ended
    assert server.drain_actions() == []


def test_a_server_close_is_handed_to_the_driver_after_the_queued_messages() -> None:
    hub = echo_hub()
    log = record(hub)
    server = Server(hub)
    conn = accepted(server)
    assert conn.kws is not None
    conn.kws.emit("bye")
    conn.kws.close(4000, "done")
    conn.kws.close(4001, "twice")  # a no-op
    assert server.drain_actions() == [Flush((conn,)), CloseTransport(conn)]
    assert conn.take() == [(TEXT, b"welcome"), (TEXT, b"bye")]
    assert (conn.close_code, conn.close_reason) == (4000, "done")
    assert conn.state.value == "closing"
    hub.emit_to_list([conn.kws.uuid], "after")  # nothing follows a close
    assert server.drain_actions() == []
    conn.receive_close(4000, "done")  # the ASGI server finished the handshake
    assert conn.state is ConnectionState.CLOSED
    assert names(log)[-1] == EVENT_CLOSE


def test_a_peer_close_at_the_message_entry_is_a_disconnect() -> None:
    hub = echo_hub()
    log = record(hub)
    server = Server(hub)
    conn = accepted(server)
    conn.receive_close(1001, "tab closed")
    assert server.drain_actions()[-1] == CloseTransport(conn)
    assert conn.close_code is None  # nothing to send back
    closed = log[-1].error
    assert isinstance(closed, ConnectionClosed)
    assert (log[-1].name, closed.code, closed.reason) == (EVENT_DISCONNECT, 1001, "tab closed")


def test_messages_wait_while_an_async_listener_runs() -> None:
    hub = Hub()
    hub.websocket("/ws", lambda kws: None)
    seen: list[bytes] = []

    @hub.on(EVENT_MESSAGE)
    async def slow(ep: EventPayload) -> None:
        seen.append(ep.data)

    server = Server(hub)
    conn = accepted(server)
    conn.receive_message(b"1", TEXT)
    [handler] = server.drain_actions()
    assert isinstance(handler, RunHandler)
    assert not conn.can_read
    conn.receive_message(b"2", TEXT)  # a driver that kept reading: held, in order
    conn.receive_message(b"3", TEXT)
    assert server.drain_actions() == []
    for _ in range(3):
        run(handler.awaitable)
        server.handler_done(conn)
        actions = server.drain_actions()
        if actions:
            [handler] = actions
            assert isinstance(handler, RunHandler)
    server.handler_done(conn)  # one too many: ignored
    assert seen == [b"1", b"2", b"3"]
    assert conn.can_read


def test_handler_done_after_the_end_parses_nothing() -> None:
    hub = Hub()
    hub.websocket("/ws", lambda kws: None)
    hub.on(EVENT_MESSAGE, lambda ep: noop())
    server = Server(hub)
    conn = accepted(server)
    conn.receive_message(b"1", TEXT)
    conn.receive_message(b"2", TEXT)
    [handler] = server.drain_actions()
    assert isinstance(handler, RunHandler)
    conn.receive_close(1000)
    run(handler.awaitable)
    server.handler_done(conn)
    assert conn.blocked == 0


async def noop() -> None:
    return None


def run(awaitable: Any) -> None:
    try:
        awaitable.__await__().send(None)
    except StopIteration:
        return
    raise AssertionError("suspended")  # pragma: no cover


@pytest.mark.parametrize("policy", ["drop", "close"])
def test_the_output_bound_and_its_policy_are_the_same_at_the_message_entry(policy: str) -> None:
    hub = echo_hub()
    log = record(hub)
    server = Server(hub, max_queue=100, backpressure=policy)
    conn = accepted(server)
    assert conn.kws is not None
    hub.emit_to(conn.kws.uuid, "x" * 95)  # welcome (7) + 95 > 100
    server.drain_actions()
    assert isinstance(log[-2 if policy == "close" else -1].error, SlowConsumer)
    if policy == "drop":
        assert conn.take() == [(TEXT, b"welcome")]
        assert server.stats.dropped_messages == 1
    else:
        assert conn.take() == []
        assert conn.close_code == 1013
        assert log[-1].name == EVENT_DISCONNECT
        assert server.stats.overflow_closes == 1


def test_a_broadcast_encodes_once_for_every_message_level_target() -> None:
    hub = echo_hub()
    made: list[tuple[MessageKind, bytes]] = []

    def encode(kind: MessageKind, data: bytes) -> dict[str, Any]:
        made.append((kind, data))
        return {"type": "websocket.send", "text": data.decode()}

    server = Server(hub, encode_message=encode)
    conns = [accepted(server) for _ in range(3)]
    server.drain_actions()
    for conn in conns:
        conn.take()
    made.clear()
    hub.broadcast("all")
    server.drain_actions()
    taken = [conn.take() for conn in conns]
    assert made == [(TEXT, b"all")]
    assert all(t[0] is taken[0][0] for t in taken)


def test_messages_nobody_answers_queue_nothing() -> None:
    hub = Hub()
    hub.websocket("/ws", lambda kws: None)
    log = record(hub)
    server = Server(hub)
    conn = accepted(server)
    conn.receive_message(b"quiet", TEXT)
    assert server.drain_actions() == []
    assert names(log) == [EVENT_CONNECT, EVENT_MESSAGE]


def test_a_close_from_an_error_listener_during_a_failure_writes_one_close() -> None:
    hub = echo_hub()
    hub.on(EVENT_ERROR, lambda ep: ep.kws.close(4000))
    net = Network(hub, max_message_size=10)
    p = net.pair()
    p.feed(frame(Opcode.TEXT, b"x" * 11))
    assert [f.code for f in p.close_frames if f.code != 1006] == [1009]
    assert p.transport_closed


def test_next_deadline_is_the_earlier_of_the_hubs_and_the_connections() -> None:
    hub = Hub(idle_timeout=100)
    hub.websocket("/ws", lambda kws: None)
    net = Network(hub, ping_interval=20)
    net.pair()
    net.tick(0)
    assert net.server.next_deadline() == 20
    net.server.receive_data(net.server.connections[0], frame(Opcode.PING), now=1.0)
    hub_only = Network(Hub(), ping_interval=None)
    hub_only.hub.websocket("/ws", lambda kws: None)
    conn = hub_only.pair().conn
    hub_only.server.receive_data(conn, frame(Opcode.PING), now=2.0)  # no idle timeout
    assert hub_only.server.next_deadline() is None


# -- keepalive: only the answer to our ping counts -------------------------------------------


def test_a_pong_that_does_not_answer_our_ping_keeps_the_deadline() -> None:
    hub = echo_hub()
    net = Network(hub, ping_interval=20, ping_timeout=10)
    p = net.pair()
    p.auto_pong = False
    net.tick(0)
    net.tick(20)
    [ping] = p.of(Ping)
    p.send(Pong(payload=b"not yours"))  # unsolicited pongs are allowed (RFC 6455 5.5.3)
    assert net.server.next_deadline() == 30
    net.tick(30)
    assert p.close_frames[0].code == 1011
    p2 = net.pair()
    p2.auto_pong = False
    net.tick(31)
    net.tick(51)
    [ping2] = p2.of(Ping)
    p2.send(Pong(payload=ping2.payload))
    assert net.server.next_deadline() == 51  # answered: the next ping is scheduled afresh
    assert ping.payload != ping2.payload


# -- permessage-deflate: the inflater never goes past the limit ------------------------------


def deflated(payload: bytes) -> bytes:
    compressor = zlib.compressobj(wbits=-15)
    data = compressor.compress(payload) + compressor.flush(zlib.Z_SYNC_FLUSH)
    return data[:-4]  # RFC 7692 7.2.1: drop the 00 00 ff ff tail


def test_a_deflate_bomb_fails_with_1009_without_inflating_it() -> None:
    hub = echo_hub()
    log = record(hub)
    net = Network(hub, max_message_size=64 * 1024)
    p = net.pair(extensions=[PerMessageDeflate()])
    bomb = deflated(b"\x00" * (16 * 1024 * 1024))
    assert len(bomb) < 20 * 1024
    conn = p.conn
    net.server.receive_data(conn, frame(Opcode.BINARY, bomb, rsv=4))
    net.drain()
    assert p.close_frames[0].code == 1009
    assert names(log) == [EVENT_CONNECT, EVENT_ERROR, EVENT_DISCONNECT]


def test_a_compressed_message_exactly_at_the_limit_passes_and_the_count_restarts() -> None:
    hub = echo_hub()
    net = Network(hub, max_message_size=1000, compression=True)
    p = net.pair(extensions=[PerMessageDeflate()])
    for _ in range(3):
        p.feed(frame(Opcode.BINARY, deflated(b"a" * 1000), rsv=4))
    assert p.messages[1:] == [b"a" * 1000] * 3


def test_invalid_deflate_data_is_1007() -> None:
    hub = echo_hub()
    net = Network(hub, max_message_size=1000)
    p = net.pair(extensions=[PerMessageDeflate()])
    p.feed(frame(Opcode.BINARY, b"\xff\xff\xff\xff", rsv=4))
    assert p.close_frames[0].code == 1007


# -- the deadline heap ---------------------------------------------------------------------


class Item:
    def __init__(self) -> None:
        self.due: float | None = None


def test_deadlines_rearm_and_disarm_lazily() -> None:
    d: Deadlines[Item] = Deadlines()
    a, b = Item(), Item()
    d.arm(a, 5)
    d.arm(b, 3)
    d.arm(b, 7)  # re-armed: the old entry is stale
    assert len(d) == 2
    assert d.next() == 5
    d.disarm(a)
    d.disarm(a)
    assert d.next() == 7
    assert d.expired(6) == []
    assert d.expired(7) == [b]
    assert d.next() is None
    assert len(d) == 0


def test_deadlines_compact_their_stale_entries() -> None:
    d: Deadlines[Item] = Deadlines()
    item = Item()
    for when in range(1000):
        d.arm(item, float(when))
    assert len(d._heap) < 200
    assert d.expired(10_000) == [item]


def test_the_old_name_of_the_connection_class_warns() -> None:
    import ikisocket_core.protocol as protocol  # noqa: PLC0415

    with pytest.warns(DeprecationWarning, match="ServerConnection"):
        assert protocol.Connection is ServerConnection
    with pytest.raises(AttributeError):
        protocol.Nothing  # noqa: B018


def test_a_broadcast_to_mixed_connections_encodes_each_shared_form_once() -> None:
    hub = echo_hub()
    made: list[bytes] = []

    def encode(kind: MessageKind, data: bytes) -> dict[str, Any]:
        made.append(data)
        return {"type": "websocket.send", "text": data.decode()}

    net = Network(hub, compression=True, encode_message=encode)
    # In routing order: plain, compressed, message level, plain, message level.
    plain = net.pair()
    squeezed = net.pair(extensions=[PerMessageDeflate()])
    first = accepted(net.server)
    other = net.pair()
    second = accepted(net.server)
    net.drain()
    first.take()
    second.take()
    made.clear()
    encodes = net.server.stats.broadcast_encodes
    hub.broadcast("all")
    net.drain()
    assert [p.messages[-1] for p in (plain, squeezed, other)] == ["all"] * 3
    assert made == [b"all"]
    [a], [b] = first.take(), second.take()
    assert a is b
    assert net.server.stats.broadcast_encodes == encodes + 1  # the plain frame, once


def test_held_messages_meet_the_limit_and_may_queue_nothing() -> None:
    hub = Hub()
    hub.websocket("/ws", lambda kws: None)
    log = record(hub)

    @hub.on(EVENT_MESSAGE)
    def first_async(ep: EventPayload) -> Any:
        return noop() if ep.data == b"1" else None

    server = Server(hub, max_message_size=10)
    conn = accepted(server)
    conn.receive_message(b"1", TEXT)
    [handler] = server.drain_actions()
    assert isinstance(handler, RunHandler)
    conn.receive_message(b"quiet", TEXT)  # held; its listener queues nothing
    conn.receive_message(b"x" * 11, TEXT)  # held; too big once its turn comes
    run(handler.awaitable)
    server.handler_done(conn)
    assert server.drain_actions() == [CloseTransport(conn)]
    assert conn.close_code == 1009
    assert names(log) == [
        EVENT_CONNECT,
        EVENT_MESSAGE,
        EVENT_MESSAGE,
        EVENT_ERROR,
        EVENT_DISCONNECT,
    ]
