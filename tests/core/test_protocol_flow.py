"""The protocol engine over time: closing handshakes, keepalive, backpressure, handlers."""

from __future__ import annotations

import itertools
from collections.abc import Generator
from typing import Any

import pytest
from pairing import WAYS, Network, Pair, Seen, Way, frame, names, pair, record
from wsproto.events import CloseConnection, Ping, Pong, TextMessage
from wsproto.extensions import PerMessageDeflate
from wsproto.frame_protocol import Opcode

from ikisocket_core import (
    BINARY,
    EVENT_CLOSE,
    EVENT_CONNECT,
    EVENT_DISCONNECT,
    EVENT_ERROR,
    EVENT_MESSAGE,
    ConnectionClosed,
    ConnectionState,
    EventPayload,
    HandlerTimeout,
    Hub,
    LocalProtocolError,
    Request,
    SlowConsumer,
    Websocket,
)
from ikisocket_core.protocol import (
    CloseTransport,
    Flush,
    KeepaliveTimeout,
    RunHandler,
    Server,
    ServerConfig,
)


def make_hub() -> tuple[Hub, list[Seen]]:
    numbers = itertools.count(1)
    hub = Hub(uuid_factory=lambda: f"c{next(numbers)}")
    hub.websocket("/ws", lambda kws: None)
    log = record(hub)

    @hub.on(EVENT_MESSAGE)
    def commands(ep: EventPayload) -> None:
        if ep.data == b"bye":
            ep.kws.close(4000, "bye")
        else:
            ep.kws.emit(ep.data, ep.kind)

    return hub, log


def terminal(log: list[Seen]) -> list[tuple[str, int]]:
    out = []
    for seen in log:
        if seen.name in (EVENT_CLOSE, EVENT_DISCONNECT):
            assert isinstance(seen.error, ConnectionClosed)
            out.append((seen.name, seen.error.code))
    return out


# -- closing handshake, started by the client ------------------------------------------------


@pytest.mark.parametrize("way", WAYS)
def test_client_close_is_echoed_then_transport_closed(way: Way) -> None:
    hub, log = make_hub()
    p = pair(hub, way=way)
    p.send_text("last words")
    p.close(4001, "done")
    assert p.messages == ["last words"]
    assert p.close_frames[0].code == 4001  # the echo (RFC 6455 5.5.1)
    assert p.transport_closed
    assert p.net.closed == [p.conn]
    assert not p.net.lingers(p.conn)  # the peer sends nothing after its close frame
    assert p.conn.state is ConnectionState.CLOSED
    assert p.net.server.connections == ()
    assert names(log) == [EVENT_CONNECT, EVENT_MESSAGE, EVENT_DISCONNECT]
    closed = log[-1].error
    assert isinstance(closed, ConnectionClosed)
    assert (closed.code, closed.reason, closed.cause) == (4001, "done", None)
    assert len(hub) == 0


def test_client_close_without_a_code_reports_1005() -> None:
    hub, log = make_hub()
    p = pair(hub)
    p.feed(frame(Opcode.CLOSE))
    assert p.transport_closed
    assert p.close_frames[0].code == 1005  # an empty close frame back
    assert terminal(log) == [(EVENT_DISCONNECT, 1005)]


def test_bytes_after_the_close_frame_are_ignored() -> None:
    hub, log = make_hub()
    p = pair(hub)
    p.feed(frame(Opcode.CLOSE, b"\x03\xe8") + frame(Opcode.TEXT, b"ghost"))
    p.feed(frame(Opcode.TEXT, b"ghost 2"))
    assert names(log) == [EVENT_CONNECT, EVENT_DISCONNECT]


# -- closing handshake, started by the server ------------------------------------------------


@pytest.mark.parametrize("way", WAYS)
def test_server_close_waits_for_the_client_reply(way: Way) -> None:
    hub, log = make_hub()
    p = pair(hub, way=way)
    p.send_text("bye")
    assert [(e.code, e.reason) for e in p.close_frames] == [(4000, "bye")]
    assert terminal(log) == [(EVENT_CLOSE, 4000)]
    assert p.conn.state is ConnectionState.CLOSING
    assert not p.transport_closed  # RFC 6455 7.1.1: wait for the client's close frame
    p.feed(frame(Opcode.TEXT, b"too late"))  # not dispatched: the connection is closing
    assert [s.data for s in log if s.name == EVENT_MESSAGE] == [b"bye"]
    assert p.ws is not None
    p.send(CloseConnection(code=4000, reason="bye"))  # the client's reply
    assert p.transport_closed
    assert not p.net.lingers(p.conn)
    assert p.conn.state is ConnectionState.CLOSED
    assert p.net.server.connections == ()
    assert terminal(log) == [(EVENT_CLOSE, 4000)]  # no disconnect after close
    assert len(hub) == 0


def test_ping_while_closing_is_reported_nowhere_and_not_answered() -> None:
    hub, log = make_hub()
    p = pair(hub)
    p.send_text("bye")
    p.feed(frame(Opcode.PING, b"late"))
    assert p.of(Pong) == []
    assert "ping" not in names(log)


def test_close_timeout_when_the_client_never_answers() -> None:
    hub, log = make_hub()
    net = Network(hub, close_timeout=3, ping_interval=None)
    p = net.pair()
    net.tick(10)
    p.send_text("bye")
    assert net.server.next_deadline() == 10  # the deadline is stamped at the next tick
    net.tick(11)
    assert net.server.next_deadline() == 14
    net.tick(13.9)
    assert not p.transport_closed
    net.tick(14)
    assert p.transport_closed
    assert not net.lingers(p.conn)  # close_timeout was waited already
    assert net.server.stats.close_timeouts == 1
    assert net.server.connections == ()
    assert net.server.next_deadline() is None
    assert terminal(log) == [(EVENT_CLOSE, 4000)]


def test_garbage_while_closing_drops_the_transport_without_an_error_event() -> None:
    hub, log = make_hub()
    p = pair(hub)
    p.send_text("bye")
    p.feed(frame(Opcode.TEXT, b"x", mask=False))
    assert p.transport_closed
    assert names(log) == [EVENT_CONNECT, EVENT_MESSAGE, EVENT_CLOSE]
    assert len(p.close_frames) == 2  # ours, then the dropped transport (1006): no second frame
    assert p.close_frames[1].code == 1006


def test_hub_close_all_closes_every_connection() -> None:
    hub, log = make_hub()
    net = Network(hub)
    pairs = [net.pair() for _ in range(3)]
    hub.close_all()
    net.drain()
    assert [p.close_frames[0].code for p in pairs] == [1001, 1001, 1001]
    for p in pairs:
        p.send(CloseConnection(code=1001))
    assert all(p.transport_closed for p in pairs)
    assert terminal(log) == [(EVENT_CLOSE, 1001)] * 3


# -- the transport ending ---------------------------------------------------------------------


def test_eof_is_a_1006_disconnect() -> None:
    hub, log = make_hub()
    p = pair(hub)
    p.net.server.receive_eof(p.conn)
    p.net.drain()
    assert p.transport_closed
    assert not p.net.lingers(p.conn)
    assert terminal(log) == [(EVENT_DISCONNECT, 1006)]
    p.net.server.receive_eof(p.conn)  # a second time changes nothing
    assert p.net.server.drain_actions() == []


def test_connection_lost_is_a_1006_disconnect_with_the_error() -> None:
    hub, log = make_hub()
    p = pair(hub)
    error = ConnectionResetError("reset by peer")
    p.net.server.connection_lost(p.conn, error)
    assert p.net.server.drain_actions() == []
    assert p.net.server.connections == ()
    closed = log[-1].error
    assert isinstance(closed, ConnectionClosed)
    assert (closed.code, closed.cause) == (1006, error)
    p.net.server.receive_data(p.conn, frame(Opcode.TEXT, b"late"))
    assert p.net.server.drain_actions() == []


def test_connection_lost_after_close_transport_is_quiet() -> None:
    hub, log = make_hub()
    p = pair(hub)
    p.close()
    p.net.server.connection_lost(p.conn)
    assert names(log) == [EVENT_CONNECT, EVENT_DISCONNECT]
    assert p.net.server.drain_actions() == []


# -- keepalive --------------------------------------------------------------------------------


def test_keepalive_ping_after_interval_and_pong_keeps_it_open() -> None:
    hub, log = make_hub()
    net = Network(hub, ping_interval=20, ping_timeout=10)
    p = net.pair()
    assert net.server.next_deadline() == 0  # not armed yet: tick now
    net.tick(0)
    assert net.server.next_deadline() == 20
    net.tick(19.9)
    assert p.of(Ping) == []
    net.tick(20)
    assert len(p.of(Ping)) == 1  # the client answered it (auto_pong)
    assert names(log) == [EVENT_CONNECT, "pong"]
    net.tick(30)
    net.tick(45)
    assert not p.transport_closed
    net.tick(50)
    assert len(p.of(Ping)) == 2
    assert len({bytes(e.payload) for e in p.of(Ping)}) == 2  # each ping is distinct


def test_keepalive_timeout_closes_with_1011() -> None:
    hub, log = make_hub()
    net = Network(hub, ping_interval=20, ping_timeout=10)
    p = net.pair()
    p.auto_pong = False
    net.tick(0)
    net.tick(20)
    assert len(p.of(Ping)) == 1
    assert net.server.next_deadline() == 30
    net.tick(29.9)
    assert not p.transport_closed
    net.tick(30)
    assert p.close_frames[0].code == 1011
    assert p.transport_closed
    assert names(log) == [EVENT_CONNECT, EVENT_ERROR, EVENT_DISCONNECT]
    assert isinstance(log[1].error, KeepaliveTimeout)
    closed = log[2].error
    assert isinstance(closed, ConnectionClosed)
    assert closed.code == 1011
    assert isinstance(closed.cause, KeepaliveTimeout)
    assert str(closed.cause) == "no pong within 10 s"
    assert net.server.stats.keepalive_timeouts == 1


def test_keepalive_disabled() -> None:
    hub, _ = make_hub()
    net = Network(hub, ping_interval=None)
    p = net.pair()
    assert net.server.next_deadline() is None
    net.tick(10_000)
    assert p.of(Ping) == []


def test_next_deadline_includes_the_hubs_timers() -> None:
    numbers = itertools.count(1)
    hub = Hub(uuid_factory=lambda: f"c{next(numbers)}", idle_timeout=50)
    hub.websocket("/ws", lambda kws: None)
    net = Network(hub, ping_interval=None)
    p = net.pair()
    assert net.server.next_deadline() == 50
    net.tick(50)
    assert p.close_frames[0].code == 1001  # the hub's idle timeout, run by server.tick


def test_deadlines_armed_grows_whenever_a_deadline_may_have_moved_earlier() -> None:
    # Drivers ask next_deadline() again only when this count moved: every kind of arming
    # (a connection's timer, the hub's idle timer) must move it, and plain traffic not.
    hub = Hub(idle_timeout=50)
    hub.websocket("/ws", lambda kws: None)
    hub.on(EVENT_MESSAGE, lambda ep: ep.kws.emit(ep.data))
    net = Network(hub, ping_interval=None)
    before = net.server.deadlines_armed
    p = net.pair()  # its handshake deadline, then its idle deadline
    opened = net.server.deadlines_armed
    assert opened > before
    p.send_text("echo")
    assert p.messages == ["echo"]
    assert net.server.deadlines_armed == opened  # an echo arms nothing
    net.tick(50)  # the idle deadline re-arms from the last activity
    assert net.server.deadlines_armed > opened


# -- backpressure -----------------------------------------------------------------------------


def slow_and_fast(policy: str) -> tuple[Hub, list[Seen], Network, Pair, list[Pair]]:
    hub, log = make_hub()
    net = Network(hub, max_queue=1000, backpressure=policy, ping_interval=None)
    slow = net.pair()
    fast = [net.pair() for _ in range(2)]
    slow.paused = True
    return hub, log, net, slow, fast


def test_drop_policy_drops_for_the_slow_connection_only() -> None:
    hub, log, net, slow, fast = slow_and_fast("drop")
    message = "m" * 98  # a 100-byte frame
    slow.conn.take()  # the 101 was never written: start from an empty buffer
    for _ in range(30):
        hub.broadcast(message)
        net.drain()
        assert slow.conn.buffered <= 1000
    assert slow.conn.buffered == 1000
    assert all(p.messages == [message] * 30 for p in fast)
    assert net.server.stats.dropped_messages == 20
    errors = [s for s in log if s.name == EVENT_ERROR]
    assert len(errors) == 1  # one report per overflow episode
    assert isinstance(errors[0].error, SlowConsumer)
    assert errors[0].uuid == "c1"
    # The transport drains: the queued messages arrive and a new episode can begin.
    slow.paused = False
    slow.deliver(b"".join(slow.conn.take()))
    assert slow.messages == [message] * 10
    slow.paused = True
    for _ in range(11):
        hub.broadcast(message)
        net.drain()
    assert net.server.stats.dropped_messages == 21
    assert len([s for s in log if s.name == EVENT_ERROR]) == 2
    assert slow.conn.state is ConnectionState.OPEN


def test_buffer_takes_one_message_larger_than_max_queue_when_empty() -> None:
    hub, _, net, slow, _ = slow_and_fast("drop")
    slow.conn.take()
    hub.broadcast("x" * 5000)
    net.drain()
    hub.broadcast("y")
    net.drain()
    assert 5000 < slow.conn.buffered <= 1000 + 5004  # memory bound: max_queue + one message
    assert net.server.stats.dropped_messages == 1


def test_close_policy_closes_the_slow_connection_with_1013() -> None:
    hub, log, net, slow, fast = slow_and_fast("close")
    slow.conn.take()
    for _ in range(30):
        hub.broadcast("m" * 98)
        net.drain()
    assert slow.transport_closed
    assert net.lingers(slow.conn)  # it may still be sending: its 1013 must not be reset away
    assert slow.conn.state is ConnectionState.CLOSED
    assert net.server.stats.overflow_closes == 1
    assert net.server.stats.dropped_messages == 0
    assert all(len(p.messages) == 30 and not p.transport_closed for p in fast)
    assert [(s.name, s.uuid) for s in log if s.name in (EVENT_ERROR, EVENT_DISCONNECT)] == [
        (EVENT_ERROR, "c1"),
        (EVENT_DISCONNECT, "c1"),
    ]
    closed = log[-1].error
    assert isinstance(closed, ConnectionClosed)
    assert closed.code == 1013
    assert isinstance(closed.cause, SlowConsumer)
    # What was queued is dropped; only the 1013 close frame is left to write.
    chunks = slow.conn.take()
    assert len(chunks) == 1
    assert chunks[0][:4] == b"\x88\x18" + (1013).to_bytes(2, "big")
    assert hub.connections == ("c2", "c3")


@pytest.mark.parametrize("policy", ["close", "drop"])
def test_a_server_close_frame_is_queued_even_on_a_full_buffer(policy: str) -> None:
    hub, log, net, slow, _ = slow_and_fast(policy)
    slow.conn.take()
    hub.broadcast("m" * 998)  # exactly fills the buffer
    net.drain()
    assert slow.conn.kws is not None
    slow.conn.kws.close(4000)
    net.drain()
    # Control frames are never subject to max_queue: the close goes out behind the backlog.
    assert slow.conn.state is ConnectionState.CLOSING
    assert net.server.stats.overflow_closes == 0
    assert net.server.stats.dropped_messages == 0
    assert [s.name for s in log if s.name == EVENT_ERROR] == []
    slow.paused = False
    slow.deliver(b"".join(slow.conn.take()))
    assert slow.messages[-1] == "m" * 998
    assert slow.ws is not None
    slow.feed(slow.ws.send(CloseConnection(code=4000)))  # the client answers the close
    assert slow.transport_closed
    assert terminal(log) == [(EVENT_CLOSE, 4000)]


@pytest.mark.parametrize("policy", ["close", "drop"])
def test_the_close_echo_is_queued_even_on_a_full_buffer(policy: str) -> None:
    hub, log, net, slow, _ = slow_and_fast(policy)
    slow.conn.take()
    hub.broadcast("m" * 998)
    net.drain()
    slow.close(1000)
    assert slow.transport_closed
    assert net.server.stats.overflow_closes == 0
    assert terminal(log) == [(EVENT_DISCONNECT, 1000)]  # the client's own code, not 1013
    assert slow.conn.take()[-1][:2] == b"\x88\x02"  # the echo is the last thing queued


# -- broadcast: encode once --------------------------------------------------------------------


def test_broadcast_encodes_once_and_shares_the_bytes() -> None:
    hub, _ = make_hub()
    net = Network(hub)
    pairs = [net.pair() for _ in range(4)]
    for p in pairs:
        p.paused = True
        p.conn.take()
    encodes = net.server.stats.broadcast_encodes
    hub.broadcast("to everyone")
    actions = net.server.drain_actions()
    assert actions == [Flush(tuple(p.conn for p in pairs))]
    chunks = [p.conn.take() for p in pairs]
    assert all(len(c) == 1 for c in chunks)
    first = chunks[0][0]
    assert all(c[0] is first for c in chunks)  # the very same object, not equal copies
    assert net.server.stats.broadcast_encodes == encodes + 1
    assert net.server.stats.frames_out == 4


def test_compressed_connections_get_their_own_frames() -> None:
    hub, _ = make_hub()
    net = Network(hub)
    plain = [net.pair(), net.pair()]
    deflated = [net.pair(extensions=[PerMessageDeflate()]) for _ in range(2)]
    hub.broadcast(b"\x00" * 1000, BINARY)
    net.drain()
    assert all(p.messages == [b"\x00" * 1000] for p in plain + deflated)
    assert net.server.stats.broadcast_encodes == 1


def test_emits_from_listeners_go_out_before_the_close_echo() -> None:
    hub, log = make_hub()
    p = pair(hub, extensions=[PerMessageDeflate()])
    assert p.ws is not None
    # One chunk: the echo is queued while the message is handled, before the close.
    p.feed(p.ws.send(TextMessage(data="hello")) + p.ws.send(CloseConnection(code=1000)))
    assert p.messages == ["hello"]
    assert p.transport_closed
    assert terminal(log) == [(EVENT_DISCONNECT, 1000)]


def test_route_emit_and_an_immediate_close_with_compression() -> None:
    numbers = itertools.count(1)
    hub = Hub(uuid_factory=lambda: f"c{next(numbers)}")
    hub.websocket("/ws", lambda kws: kws.emit("welcome"))
    p = pair(hub, way="trailing", extensions=[PerMessageDeflate()])
    p.close()  # the request and the close frame arrive together
    assert p.messages == ["welcome"]
    assert p.close_frames[0].code == 1000
    assert p.transport_closed


# -- async listeners ---------------------------------------------------------------------------


def async_hub() -> tuple[Hub, list[str]]:
    hub = Hub()
    hub.websocket("/ws", lambda kws: None)
    order: list[str] = []

    @hub.on(EVENT_MESSAGE)
    async def slow(ep: EventPayload) -> None:
        order.append(ep.data.decode())
        ep.kws.emit(b"done " + ep.data)

    return hub, order


@pytest.mark.parametrize("way", WAYS)
def test_async_listener_holds_back_later_frames(way: Way) -> None:
    hub, order = async_hub()
    p = pair(hub, way=way)
    p.feed(b"".join(frame(Opcode.TEXT, n) for n in (b"1", b"2", b"3")))
    assert order == []  # the coroutine was handed out, not run
    assert len(p.net.handlers) == 1
    assert isinstance(p.net.handlers[0], RunHandler)
    assert p.net.handlers[0].connection is p.conn
    assert p.conn.blocked == 1
    p.feed(frame(Opcode.TEXT, b"4"))  # more input while blocked waits too
    assert len(p.net.handlers) == 1
    assert p.net.run_handlers() == 4
    assert order == ["1", "2", "3", "4"]
    assert p.messages == ["done 1", "done 2", "done 3", "done 4"]
    assert p.conn.blocked == 0


def test_can_read_is_false_while_blocked_or_over_max_queue() -> None:
    hub, _ = async_hub()
    net = Network(hub, max_queue=1024)
    p = net.pair()
    assert p.conn.can_read
    p.feed(frame(Opcode.TEXT, b"1"))
    assert not p.conn.can_read  # an async listener runs
    net.run_handlers()
    assert p.conn.can_read
    p.paused = True
    hub.emit_to(p.conn.kws.uuid, b"x" * 2000)
    net.drain()
    assert not p.conn.can_read  # more than max_queue waits unwritten
    p.conn.take()
    assert p.conn.can_read


def test_activity_is_stamped_with_the_clock_the_driver_gives() -> None:
    hub = Hub(idle_timeout=10)
    hub.websocket("/ws", lambda kws: None)
    net = Network(hub, ping_interval=None)
    p = net.pair()
    net.server.receive_data(p.conn, frame(Opcode.TEXT, b"hi"), now=5.0)
    net.drain()
    net.server.tick(10.0)  # the first deadline finds the activity at 5 and moves on
    assert net.server.next_deadline() == 15.0
    net.server.tick(14.9)
    assert p.conn.state is ConnectionState.OPEN
    net.server.tick(15.0)
    net.drain()
    assert p.conn.state is not ConnectionState.OPEN


def test_compressed_input_held_while_blocked_is_inflated_in_order_afterwards() -> None:
    hub, order = async_hub()
    p = pair(hub, extensions=[PerMessageDeflate()])
    assert p.ws is not None
    # Highly compressible messages, far more than one inflate slice in a single chunk.
    burst = b"".join(p.ws.send(TextMessage(data=str(n) * 40_000)) for n in range(1, 6))
    p.feed(burst)
    assert p.conn.blocked == 1
    assert order == []
    assert p.net.run_handlers() == 5
    assert [m[:1] for m in order] == ["1", "2", "3", "4", "5"]
    assert [len(m) for m in p.messages] == [40_005] * 5


def test_async_route_callback_runs_before_connect_and_messages() -> None:
    hub = Hub()
    order: list[str] = []

    async def route(kws: Any) -> None:
        order.append("route")

    hub.websocket("/ws", route)
    hub.on(EVENT_CONNECT, lambda ep: order.append("connect"))
    hub.on(EVENT_MESSAGE, lambda ep: order.append(ep.data.decode()))
    p = pair(hub, way="trailing")
    p.send_text("m1")  # arrives with the request
    assert order == []
    p.net.run_handlers()
    assert order == ["route", "connect", "m1"]


def test_handler_done_for_other_handlers() -> None:
    hub, order = async_hub()
    hub.on(EVENT_MESSAGE, lambda ep: None)

    @hub.on(EVENT_MESSAGE)
    async def second(ep: EventPayload) -> None:
        order.append("second")

    p = pair(hub)
    p.send_text("a")
    assert p.conn.blocked == 2  # two async listeners
    server = p.net.server
    server.handler_done(None)  # a handler of no connection: nothing to resume
    assert p.conn.blocked == 2
    p.net.run_handlers()
    assert order == ["a", "second"]
    server.handler_done(p.conn)  # an extra call is harmless
    assert p.conn.blocked == 0


def test_async_disconnect_listener_on_a_closed_connection() -> None:
    hub = Hub()
    hub.websocket("/ws", lambda kws: None)
    ran: list[int] = []

    @hub.on(EVENT_DISCONNECT)
    async def gone(ep: EventPayload) -> None:
        ran.append(1)

    p = pair(hub)
    p.close()
    assert p.net.handlers[0].connection is p.conn
    p.net.run_handlers()
    assert ran == [1]
    assert p.conn.blocked == 0


def test_connections_of_another_driver_are_left_alone() -> None:
    hub, _ = make_hub()
    ran: list[str] = []

    @hub.on("custom")
    async def custom(ep: EventPayload) -> None:
        ran.append(ep.socket_uuid)

    net = Network(hub)
    p = net.pair()
    other = hub.open(Request(path="/ws"), conn="another driver's object")
    assert isinstance(other, Websocket)
    hub.broadcast("hi")  # reaches p; skipped for the foreign connection
    hub.fire("custom")
    hub.close(other.uuid)
    net.drain()
    assert p.messages == ["hi"]
    handlers = net.handlers
    assert [h.connection for h in handlers] == [p.conn, None]
    net.run_handlers()
    assert sorted(ran) == sorted(["c1", "c2"])


def test_wakeup_is_called_when_the_hub_queues_work_outside_an_input() -> None:
    hub, _ = make_hub()
    net = Network(hub)
    p = net.pair()
    woken: list[int] = []
    hub.broadcast("no wakeup set")  # nothing to call yet
    net.drain()
    net.server.set_wakeup(lambda: woken.append(1))
    hub.broadcast("one")
    hub.broadcast("two")
    assert woken == [1]  # once until the next drain
    net.drain()
    assert p.messages == ["no wakeup set", "one", "two"]


# -- configuration and bookkeeping -------------------------------------------------------------


@pytest.mark.parametrize(
    "options",
    [
        {"backpressure": "block"},
        {"max_queue": 0},
        {"max_request_size": -1},
        {"max_message_size": 0},
        {"ping_timeout": 0},
        {"handshake_timeout": -1},
        {"close_timeout": 0},
        {"ping_interval": 0},
        {"handler_timeout": 0},
        {"handler_timeout": -1.0},
    ],
)
def test_config_is_validated(options: dict[str, Any]) -> None:
    with pytest.raises(LocalProtocolError):
        ServerConfig(**options)


def test_connection_repr_and_drain_without_work() -> None:
    hub, _ = make_hub()
    server = Server(hub)
    conn = server.connect(now=0, client=("1.2.3.4", 5))
    assert repr(conn) == "<ServerConnection ('1.2.3.4', 5) connecting>"
    assert server.drain_actions() == []
    assert server.connections == (conn,)
    server.receive_eof(conn)
    assert server.drain_actions() == [CloseTransport(conn, linger=False)]


def test_next_deadline_is_the_earliest_of_all_connections() -> None:
    hub, _ = make_hub()
    net = Network(hub, handshake_timeout=10, ping_interval=None)
    net.now = 5
    net.attach(websocket=False)
    net.now = 1
    net.attach(websocket=False)
    net.now = 3
    net.attach(websocket=False)
    assert net.server.next_deadline() == 11


def test_shutdown_closes_open_connections_with_1001_and_drops_idle_ones_at_once() -> None:
    hub = Hub()
    hub.websocket("/ws", lambda kws: None)
    log = record(hub, [EVENT_CLOSE])
    net = Network(hub)
    client = net.pair("/ws")
    spare = net.attach(websocket=False)  # a browser's spare connection: no request yet
    half = net.attach(websocket=False)
    half.feed(b"GET /ws HT")  # or half a request
    net.server.shutdown()
    net.drain()
    assert spare.conn in net.closed
    assert half.conn in net.closed
    # Nothing was answered, so nothing is kept for them: a browser's spare connection,
    # which never reads, must not hold the shutdown for close_timeout.
    assert not net.lingers(spare.conn)
    assert not net.lingers(half.conn)
    assert client.conn not in net.closed  # it finishes its closing handshake first
    assert names(log) == [EVENT_CLOSE]
    assert log[0].error is not None
    assert getattr(log[0].error, "code", None) == 1001
    assert not hub.accepting


def test_shutdown_answers_a_waiting_poll_and_closes_its_connection_at_once() -> None:
    hub = Hub()
    hub.socketio()
    net = Network(hub)
    p = net.attach(websocket=False)
    p.feed(b"GET /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: x\r\n\r\n")
    body = bytes(p.received).split(b"\r\n\r\n", 1)[1]
    sid = body.split(b'"sid":"', 1)[1].split(b'"', 1)[0].decode()
    p.feed(
        f"GET /socket.io/?EIO=4&transport=polling&sid={sid} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
    )
    assert p.conn not in net.closed  # the GET waits for something to send
    net.server.shutdown()
    net.drain()
    assert p.conn in net.closed  # answered (the close packet), then closed
    assert not net.lingers(p.conn)  # at once: the shutdown waits for no idle browser


# -- the handler watchdog (the driver times, the engine decides) ---------------------------------


class _Forever:
    """An awaitable that suspends and never finishes (until the driver cancels it)."""

    def __await__(self) -> Generator[None, None, None]:
        while True:
            yield


class _Cancelled(BaseException):
    """What a driver throws into a handler it cancels (asyncio's or trio's cancellation)."""


def _start(handler: RunHandler) -> Generator[Any, None, None]:
    """Start a handler as a driver's task would; it suspends in ``_Forever``."""
    steps = handler.awaitable.__await__()
    steps.send(None)
    return steps


def _cancel(net: Network, handler: RunHandler, steps: Generator[Any, None, None]) -> None:
    """Cancel a started handler at its timeout and report it, as every driver does."""
    with pytest.raises(_Cancelled):
        steps.throw(_Cancelled())
    net.server.handler_timed_out(handler.connection, handler.awaitable)
    net.server.handler_done(handler.connection)
    net.drain()


def watchdog_hub(**hub_options: Any) -> tuple[Hub, list[str], list[BaseException]]:
    numbers = itertools.count(1)
    hub = Hub(uuid_factory=lambda: f"c{next(numbers)}", **hub_options)
    hub.websocket("/ws", lambda kws: None)
    order: list[str] = []
    errors: list[BaseException] = []

    @hub.on(EVENT_MESSAGE)
    async def handle(ep: EventPayload) -> None:
        order.append(ep.data.decode())
        if ep.data == b"hang":
            await _Forever()
        ep.kws.emit(b"done " + ep.data)

    @hub.on(EVENT_ERROR)
    def failed(ep: EventPayload) -> None:
        assert ep.error is not None
        errors.append(ep.error)

    return hub, order, errors


def test_a_timed_out_handler_reports_handler_timeout_and_the_next_message_runs() -> None:
    hub, order, errors = watchdog_hub()
    net = Network(hub, handler_timeout=2.5)
    p, other = net.pair(), net.pair()
    p.send_text("hang")
    p.send_text("next")  # held back while "hang" runs
    (hung,) = net.handlers
    net.handlers.clear()
    steps = _start(hung)
    assert order == ["hang"]
    other.send_text("meanwhile")  # another connection is not held up
    net.run_handlers()
    assert other.messages == ["done meanwhile"]
    _cancel(net, hung, steps)
    (error,) = errors
    assert isinstance(error, HandlerTimeout)
    assert error.timeout == 2.5
    assert "handle" in error.listener
    assert "2.5 s" in str(error)
    assert net.server.stats.handler_timeouts == 1
    assert p.conn.state is ConnectionState.OPEN  # on_listener_error="keep" (the default)
    net.run_handlers()
    assert order == ["hang", "meanwhile", "next"]
    assert p.messages == ["done next"]


def test_a_timed_out_handler_closes_with_1011_when_listener_errors_close() -> None:
    hub, _, errors = watchdog_hub(on_listener_error="close")
    net = Network(hub, handler_timeout=1.0)
    p = net.pair()
    p.send_text("hang")
    (hung,) = net.handlers
    net.handlers.clear()
    _cancel(net, hung, _start(hung))
    assert [type(e) for e in errors] == [HandlerTimeout]
    assert p.close_frames[0].code == 1011
    assert p.conn.state is not ConnectionState.OPEN


def test_a_timed_out_async_route_callback_is_still_followed_by_connect() -> None:
    hub = Hub()
    seen: list[str] = []

    async def route(kws: Websocket) -> None:
        await _Forever()

    hub.websocket("/ws", route)
    hub.on(EVENT_CONNECT, lambda ep: seen.append("connect"))
    hub.on(EVENT_ERROR, lambda ep: seen.append(type(ep.error).__name__))
    net = Network(hub, handler_timeout=1.0)
    net.pair()
    (hung,) = net.handlers
    net.handlers.clear()
    _cancel(net, hung, _start(hung))
    assert seen == ["HandlerTimeout", "connect"]


def test_a_timed_out_awaitable_that_is_not_a_listener_is_only_counted() -> None:
    hub, _, errors = watchdog_hub()
    net = Network(hub, handler_timeout=1.0)
    net.server.handler_timed_out(None, _Forever())
    assert net.server.drain_actions() == []
    assert errors == []
    assert net.server.stats.handler_timeouts == 1
    assert "_Forever" in str(HandlerTimeout(1.0, type(_Forever()).__qualname__))
    assert str(HandlerTimeout(3)) == "listener ran longer than 3 s and was cancelled"
