"""The hub: listeners, the seed's verbs, terminal events, errors, timers and wakeups."""

from __future__ import annotations

import asyncio
import gc
import itertools
import logging
import weakref
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import trio

import ikisocket_core
from ikisocket_core import (
    BINARY,
    EVENT_CLOSE,
    EVENT_CONNECT,
    EVENT_DISCONNECT,
    EVENT_ERROR,
    EVENT_MESSAGE,
    EVENT_PING,
    EVENT_PONG,
    TEXT,
    Close,
    ConnectionClosed,
    ConnectionState,
    DuplicateUUID,
    EventPayload,
    Hub,
    LocalProtocolError,
    Request,
    RunHandler,
    Send,
    UnknownConnection,
    Websocket,
)
from ikisocket_core.testing import TestClient, WebSocketDisconnect, WebSocketTestSession


def counter(prefix: str = "c") -> Callable[[], str]:
    numbers = itertools.count(1)
    return lambda: f"{prefix}{next(numbers)}"


def make_hub(**options: Any) -> Hub:
    hub = Hub(uuid_factory=counter(), **options)
    hub.websocket("/ws", lambda kws: None)
    return hub


def record(hub: Hub, *events: str) -> list[tuple[str, str]]:
    """Log ``(event, uuid)`` for each of ``events``."""
    log: list[tuple[str, str]] = []

    def listener(ep: EventPayload) -> None:
        log.append((ep.name, ep.socket_uuid))

    for event in events:
        hub.on(event, listener)
    return log


def open_direct(hub: Hub, target: str = "/ws") -> Websocket:
    """Open a connection by driving the hub directly (no TestClient)."""
    kws = hub.open(Request.from_target(target))
    assert isinstance(kws, Websocket)
    return kws


def boom(_: object) -> None:
    """A listener or route callback that fails."""
    raise ZeroDivisionError("boom")


def state(kws: Websocket) -> ConnectionState:
    """Read the state anew (mypy would narrow ``kws.state`` after an assert)."""
    return kws.state


def run_to_end(awaitable: Awaitable[None]) -> None:
    """Await something that never suspends, as a driver would."""
    with pytest.raises(StopIteration):
        awaitable.__await__().send(None)


def inbox(ws: WebSocketTestSession) -> list[str]:
    """Every text message waiting for ``ws``."""
    return [ws.receive_text() for _ in range(ws.pending)]


# -- construction ---------------------------------------------------------------------------


def test_default_uuids_are_distinct_uuid4_strings() -> None:
    hub = Hub()
    hub.websocket("/ws", lambda kws: None)
    a, b = open_direct(hub), open_direct(hub)
    assert a.uuid != b.uuid
    assert len(a.uuid) == 36
    assert a.uuid.count("-") == 4


@pytest.mark.parametrize(
    "options",
    [{"on_listener_error": "ignore"}, {"idle_timeout": 0}, {"idle_timeout": -1.0}],
)
def test_invalid_options_are_refused(options: dict[str, Any]) -> None:
    with pytest.raises(LocalProtocolError):
        Hub(**options)


def test_repr_counts_connections_and_routes() -> None:
    hub = make_hub()
    open_direct(hub)
    assert repr(hub) == "<Hub 1 connections, 1 routes>"


# -- listeners ------------------------------------------------------------------------------


def test_a_hub_takes_attributes_of_its_own_and_weak_references() -> None:
    """Slots on the hub's layers must leave it an ordinary object to applications."""
    hub = Hub()
    hub.database = "db"  # type: ignore[attr-defined]
    assert hub.database == "db"  # type: ignore[attr-defined]

    class MyHub(Hub):
        def __init__(self) -> None:
            super().__init__()
            self.users: dict[str, str] = {}

    mine = MyHub()
    mine.users["a"] = "b"
    hub.on_listener_error = "close"  # a public attribute stays settable
    assert hub.on_listener_error == "close"
    ref = weakref.ref(mine)
    assert ref() is mine
    del mine
    gc.collect()
    assert ref() is None


def test_on_as_decorator_and_plain_call_many_per_event_in_order() -> None:
    hub = make_hub()
    calls: list[str] = []

    @hub.on(EVENT_MESSAGE)
    def first(ep: EventPayload) -> None:
        calls.append("first:" + ep.text)

    def second(ep: EventPayload) -> None:
        calls.append("second:" + ep.text)

    assert hub.on(EVENT_MESSAGE, second) is second
    assert first.__name__ == "first"  # the decorator returns the function itself
    with TestClient(hub).websocket_connect("/ws") as ws:
        ws.send_text("hi")
    assert calls == ["first:hi", "second:hi"]


def test_custom_events_run_only_their_listeners() -> None:
    hub = make_hub()
    log = record(hub, "CUSTOM", EVENT_MESSAGE)
    data: list[bytes] = []
    hub.on("CUSTOM", lambda ep: data.append(ep.data))
    with TestClient(hub).websocket_connect("/ws") as ws:
        ws.kws.fire("CUSTOM", "payload")
        ws.kws.fire("NOBODY_LISTENS")
    assert log == [("CUSTOM", "c1")]
    assert data == [b"payload"]


def test_off_one_listener_or_all_of_an_event() -> None:
    hub = make_hub()
    calls: list[str] = []

    def a(ep: EventPayload) -> None:
        calls.append("a")

    def b(ep: EventPayload) -> None:
        calls.append("b")

    hub.on("E", a)
    hub.on("E", b)
    hub.on("F", a)
    with TestClient(hub).websocket_connect("/ws") as ws:
        hub.off("E", a)
        ws.kws.fire("E")
        assert calls == ["b"]
        hub.off("E", b)  # the last one: the event has no listener left
        hub.off("E", b)  # removing again is harmless
        hub.off("NEVER_REGISTERED")
        ws.kws.fire("E")
        assert calls == ["b"]
        hub.off("F")
        ws.kws.fire("F")
        assert calls == ["b"]


@pytest.mark.parametrize("event", ["", 42])
def test_on_refuses_a_bad_event_name(event: Any) -> None:
    with pytest.raises(LocalProtocolError):
        Hub().on(event, lambda ep: None)


def test_on_refuses_a_listener_that_is_not_callable() -> None:
    with pytest.raises(LocalProtocolError):
        Hub().on(EVENT_MESSAGE, "not a function")  # type: ignore[call-overload]


def test_hub_listeners_run_before_connection_listeners() -> None:
    hub = make_hub()
    calls: list[str] = []
    hub.on(EVENT_MESSAGE, lambda ep: calls.append("hub"))
    with TestClient(hub).websocket_connect("/ws") as ws:
        ws.kws.on(EVENT_MESSAGE, lambda ep: calls.append("conn"))
        ws.send_text("x")
    assert calls == ["hub", "conn"]


def test_ping_and_pong_listeners() -> None:
    hub = make_hub()
    seen: list[tuple[str, bytes]] = []
    hub.on(EVENT_PING, lambda ep: seen.append((ep.name, ep.data)))
    hub.on(EVENT_PONG, lambda ep: seen.append((ep.name, ep.data)))
    with TestClient(hub).websocket_connect("/ws") as ws:
        ws.ping(b"1")
        ws.pong(b"2")
    assert seen == [(EVENT_PING, b"1"), (EVENT_PONG, b"2")]


def test_a_listener_returning_a_plain_value_queues_nothing() -> None:
    hub = make_hub()
    hub.on(EVENT_MESSAGE, lambda ep: 42)
    kws = open_direct(hub)
    hub.receive_message(kws, "x")
    assert hub.drain_actions() == []


# -- async listeners ------------------------------------------------------------------------


def test_async_listener_is_handed_out_as_a_run_handler() -> None:
    hub = make_hub()

    @hub.on(EVENT_MESSAGE)
    async def echo(ep: EventPayload) -> None:
        ep.kws.emit(b"async: " + ep.data)

    kws = open_direct(hub)
    hub.receive_message(kws, b"hi")
    (action,) = hub.drain_actions()
    assert isinstance(action, RunHandler)
    assert action.target is kws
    # Nothing has run yet: awaiting is the driver's job.
    assert hub.drain_actions() == []
    run_to_end(action.awaitable)
    (send,) = hub.drain_actions()
    assert isinstance(send, Send)
    assert send.data == b"async: hi"


def test_async_listener_with_the_default_runner() -> None:
    hub = make_hub()

    @hub.on(EVENT_MESSAGE)
    async def echo(ep: EventPayload) -> None:
        await asyncio.sleep(0)  # a bare yield: needs no loop
        ep.kws.emit("async: " + ep.text)

    with TestClient(hub).websocket_connect("/ws") as ws:
        ws.send_text("hi")
        assert ws.receive_text() == "async: hi"


def test_async_listener_with_asyncio_run() -> None:
    hub = make_hub()

    @hub.on(EVENT_MESSAGE)
    async def echo(ep: EventPayload) -> None:
        await asyncio.sleep(0.01)
        ep.kws.emit("asyncio: " + ep.text)

    with TestClient(hub, run_async=asyncio.run).websocket_connect("/ws") as ws:
        ws.send_text("hi")
        assert ws.receive_text() == "asyncio: hi"


def test_async_listener_with_trio() -> None:
    hub = make_hub()

    @hub.on(EVENT_MESSAGE)
    async def echo(ep: EventPayload) -> None:
        await trio.sleep(0.01)
        ep.kws.emit("trio: " + ep.text)

    client = TestClient(hub, run_async=lambda c: trio.run(lambda: c))
    with client.websocket_connect("/ws") as ws:
        ws.send_text("hi")
        assert ws.receive_text() == "trio: hi"


def test_async_listeners_of_one_connection_keep_their_order() -> None:
    hub = make_hub()

    @hub.on(EVENT_MESSAGE)
    async def slow(ep: EventPayload) -> None:
        await asyncio.sleep(0.01 if ep.text == "1" else 0)
        ep.kws.emit(ep.text)

    with TestClient(hub, run_async=asyncio.run).websocket_connect("/ws") as ws:
        for text in "123":
            ws.send_text(text)
        assert inbox(ws) == ["1", "2", "3"]


# -- the seed's verbs -----------------------------------------------------------------------


def test_emit_to_reaches_one_connection() -> None:
    hub = make_hub()
    client = TestClient(hub)
    with client.websocket_connect("/ws") as a, client.websocket_connect("/ws") as b:
        hub.emit_to(b.uuid, "for b")
        a.kws.emit_to(b.uuid, b"\x00\x01", BINARY)
        assert b.receive_text() == "for b"
        assert b.receive_bytes() == b"\x00\x01"
        assert a.pending == 0


def test_emit_to_unknown_or_dead_uuid_raises() -> None:
    hub = make_hub()
    client = TestClient(hub)
    with client.websocket_connect("/ws") as a:
        with pytest.raises(UnknownConnection) as info:
            hub.emit_to("nobody", "x")
        assert info.value.uuid == "nobody"
        b = client.websocket_connect("/ws")
        gone = b.uuid
        b.close()
        with pytest.raises(UnknownConnection):
            a.kws.emit_to(gone, "x")
        with pytest.raises(KeyError):  # UnknownConnection is also a KeyError
            hub.get(gone)


def test_emit_to_list_ignores_unknown_uuids_and_duplicates() -> None:
    hub = make_hub()
    client = TestClient(hub)
    with (
        client.websocket_connect("/ws") as a,
        client.websocket_connect("/ws") as b,
        client.websocket_connect("/ws") as c,
    ):
        hub.emit_to_list([a.uuid, "ghost", c.uuid, a.uuid], "hello")
        b.kws.emit_to_list(iter([b.uuid]), "self")
        hub.emit_to_list(["ghost"], "nobody")
        assert inbox(a) == ["hello"]
        assert inbox(b) == ["self"]
        assert inbox(c) == ["hello"]


@pytest.mark.parametrize("except_self", [True, False])
def test_kws_broadcast_except_self(except_self: bool) -> None:
    hub = make_hub()
    hub.on(EVENT_MESSAGE, lambda ep: ep.kws.broadcast(ep.data, except_self=except_self))
    client = TestClient(hub)
    with client.websocket_connect("/ws") as a, client.websocket_connect("/ws") as b:
        a.send_text("news")
        assert inbox(b) == ["news"]
        assert inbox(a) == ([] if except_self else ["news"])


def test_kws_broadcast_excludes_self_by_default() -> None:
    hub = make_hub()
    hub.on(EVENT_MESSAGE, lambda ep: ep.kws.broadcast(ep.data))
    client = TestClient(hub)
    with client.websocket_connect("/ws") as a, client.websocket_connect("/ws") as b:
        a.send_text("news")
        assert (inbox(a), inbox(b)) == ([], ["news"])


def test_hub_broadcast_with_exclude_by_uuid_or_handle() -> None:
    hub = make_hub()
    client = TestClient(hub)
    with client.websocket_connect("/ws") as a, client.websocket_connect("/ws") as b:
        hub.broadcast("all")
        hub.broadcast("not a", exclude=a.uuid)
        hub.broadcast("not b", exclude=b.kws)
        hub.broadcast("unknown excluded", exclude="ghost")
        assert inbox(a) == ["all", "not b", "unknown excluded"]
        assert inbox(b) == ["all", "not a", "unknown excluded"]


def test_a_broadcast_skips_its_sender_as_connections_come_go_and_change_uuid() -> None:
    hub = make_hub()
    conns = [open_direct(hub) for _ in range(5)]
    foreign = open_direct(make_hub())  # another hub's (its UUID is "c1" too)

    def targets_of(sender: Websocket | None = None, exclude: Websocket | None = None) -> list[str]:
        if sender is not None:
            sender.broadcast("x")
        else:
            hub.broadcast("x", exclude=exclude)
        (send,) = hub.drain_actions()
        assert isinstance(send, Send)
        return [t.uuid for t in send.targets]

    def every_sender_twice() -> None:
        # Past the first few broadcasts of the same registry the sender is found by an
        # index rather than a scan: both must give the same targets, in order.
        live = [kws for kws in conns if kws.state is ConnectionState.OPEN]
        order = list(hub.connections)
        for _ in range(2):
            for kws in live:
                assert targets_of(kws) == [u for u in order if u != kws.uuid]
            assert targets_of(exclude=foreign) == order
            assert targets_of(exclude=conns[1]) == [u for u in order if u != conns[1].uuid]

    every_sender_twice()
    assert list(hub.connections) == ["c1", "c2", "c3", "c4", "c5"]
    conns[1].close()  # gone from the middle: every later position moves
    hub.drain_actions()
    assert conns[1].state is ConnectionState.CLOSING  # no longer a target
    every_sender_twice()
    conns[0].uuid = "z"  # a new UUID moves it to the end
    every_sender_twice()
    assert list(hub.connections) == ["c3", "c4", "c5", "z"]
    conns.append(open_direct(hub))
    every_sender_twice()
    assert list(hub.connections) == ["c3", "c4", "c5", "z", "c6"]


def test_broadcast_with_no_connection_queues_nothing() -> None:
    hub = make_hub()
    hub.broadcast("nobody")
    hub.to("empty").emit("nobody")
    assert hub.drain_actions() == []


def test_hub_fire_runs_listeners_once_per_connection() -> None:
    hub = make_hub()
    seen: list[tuple[str, bytes]] = []
    hub.on("TICK", lambda ep: seen.append((ep.kws.uuid, ep.data)))
    client = TestClient(hub)
    with client.websocket_connect("/ws"), client.websocket_connect("/ws"):
        hub.fire("TICK", "now")
    assert sorted(seen) == [("c1", b"now"), ("c2", b"now")]


def test_hub_fire_skips_a_connection_closed_by_an_earlier_listener() -> None:
    hub = make_hub()
    client = TestClient(hub)
    first = client.websocket_connect("/ws")
    second = client.websocket_connect("/ws")
    seen: list[str] = []

    @hub.on("SWEEP")
    def sweep(ep: EventPayload) -> None:
        seen.append(ep.kws.uuid)
        if second.kws.is_alive:
            hub.close(second.uuid)

    hub.fire("SWEEP")
    client.pump()
    assert seen == [first.uuid]
    assert second.close_code == 1000
    first.close()


def test_kws_fire_runs_listeners_once_and_is_a_noop_when_dead() -> None:
    hub = make_hub()
    seen: list[str] = []
    hub.on("PING_ME", lambda ep: seen.append(ep.socket_uuid))
    client = TestClient(hub)
    a = client.websocket_connect("/ws")
    with client.websocket_connect("/ws"):
        a.kws.fire("PING_ME")
        assert seen == ["c1"]
        a.close()
        a.kws.fire("PING_ME")
        assert seen == ["c1"]


def test_emit_on_a_dead_connection_is_a_noop() -> None:
    hub = make_hub()
    kws = open_direct(hub)
    hub.receive_disconnect(kws)
    hub.drain_actions()
    kws.emit("late")
    kws.emit(b"\xff", BINARY)
    assert hub.drain_actions() == []
    assert not kws.is_alive


def test_emit_of_bytes_like_data_and_int_kinds() -> None:
    hub = make_hub()
    kws = open_direct(hub)
    kws.emit(bytearray(b"ba"), 2)  # type: ignore[arg-type]
    kws.emit(memoryview(b"mv"), BINARY)  # type: ignore[arg-type]
    kws.emit("é")
    sends = hub.drain_actions()
    assert [(s.data, s.kind) for s in sends if isinstance(s, Send)] == [
        (b"ba", BINARY),
        (b"mv", BINARY),
        ("é".encode(), TEXT),
    ]
    with pytest.raises(TypeError):
        kws.emit(123)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        kws.emit(b"x", 9)  # type: ignore[arg-type]


# -- terminal events ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("how", "event", "code"),
    [
        ("kws.close", EVENT_CLOSE, 4000),
        ("hub.close", EVENT_CLOSE, 4000),
        ("hub.close_all", EVENT_CLOSE, 1001),
        ("client close", EVENT_DISCONNECT, 4000),
        ("client abort", EVENT_DISCONNECT, 1006),
    ],
)
def test_exactly_one_terminal_event_and_no_leftovers(how: str, event: str, code: int) -> None:
    hub = make_hub()
    log = record(hub, EVENT_CLOSE, EVENT_DISCONNECT)
    errors: list[BaseException | None] = []
    hub.on(EVENT_CLOSE, lambda ep: errors.append(ep.error))
    hub.on(EVENT_DISCONNECT, lambda ep: errors.append(ep.error))
    client = TestClient(hub)
    ws = client.websocket_connect("/ws?x=1")
    ws.kws.join("room")
    if how == "kws.close":
        ws.kws.close(4000, "bye")
    elif how == "hub.close":
        hub.close(ws.uuid, 4000, "bye")
    elif how == "hub.close_all":
        hub.close_all()
    elif how == "client close":
        ws.close(4000, "bye")
    else:
        ws.abort()
    client.pump()
    # Whatever happens next, no second terminal event.
    ws.kws.close()
    ws.close()
    hub.receive_disconnect(ws.kws)
    hub.close_all()
    client.pump()
    assert log == [(event, "c1")]
    (error,) = errors
    assert isinstance(error, ConnectionClosed)
    assert error.code == code
    assert (hub.connections, hub.rooms, len(hub)) == ((), {}, 0)
    assert ws.kws.state is ConnectionState.CLOSED
    assert ws.kws.rooms == frozenset()
    if event == EVENT_CLOSE:
        assert ws.close_code == code
        with pytest.raises(WebSocketDisconnect):
            ws.receive_text()


def test_terminal_listeners_read_attributes_and_rooms_but_miss_broadcasts() -> None:
    hub = make_hub()
    seen: list[Any] = []

    @hub.websocket("/chat/:name")
    def on_open(kws: Websocket) -> None:
        kws.set_attribute("name", kws.params["name"])
        kws.join("lobby")

    @hub.on(EVENT_DISCONNECT)
    def gone(ep: EventPayload) -> None:
        seen.append((ep.socket_attributes["name"], ep.kws.get_attribute("name"), ep.kws.rooms))
        seen.append((ep.kws.uuid in hub, hub.rooms))
        ep.kws.broadcast(f"{ep.kws.get_attribute('name')} left", except_self=False)
        ep.kws.broadcast("again")  # except_self with a dead self
        hub.to("lobby").emit("lobby news")
        ep.kws.emit("to the leaver")

    client = TestClient(hub)
    alice = client.websocket_connect("/chat/alice")
    bob = client.websocket_connect("/chat/bob")
    alice.close()
    assert seen == [("alice", "alice", frozenset({"lobby"})), (False, {"lobby": ("c2",)})]
    assert inbox(bob) == ["alice left", "again", "lobby news"]
    assert alice.pending == 0
    bob.close()


def test_close_listener_sees_closing_state_and_cannot_reach_the_closing_connection() -> None:
    hub = make_hub()
    states: list[ConnectionState] = []

    @hub.on(EVENT_CLOSE)
    def closing(ep: EventPayload) -> None:
        states.append(ep.kws.state)
        ep.kws.emit("too late")
        ep.kws.close()  # already closing: no second close

    client = TestClient(hub)
    ws = client.websocket_connect("/ws")
    kws = ws.kws
    kws.close(4001)
    actions = hub.drain_actions()
    assert [type(a) for a in actions] == [Close]
    assert states == [ConnectionState.CLOSING]
    assert kws.state is ConnectionState.CLOSING
    assert hub.connections == ()
    # The driver completes the handshake; that ends it without a disconnect event.
    hub.receive_disconnect(kws, 4001)
    assert state(kws) is ConnectionState.CLOSED
    assert hub.drain_actions() == []


def test_close_validates_code_and_reason_even_on_an_unknown_or_dead_connection() -> None:
    hub = make_hub()
    kws = open_direct(hub)
    with pytest.raises(LocalProtocolError):
        kws.close(1005)
    with pytest.raises(LocalProtocolError):
        kws.close(1000, "x" * 124)
    with pytest.raises(LocalProtocolError):
        hub.close_all(999)
    with pytest.raises(UnknownConnection):
        hub.close("ghost")
    assert kws.is_alive


def test_close_listener_closing_another_connection_during_close_all() -> None:
    hub = make_hub()
    log = record(hub, EVENT_CLOSE)
    client = TestClient(hub)
    a = client.websocket_connect("/ws")
    b = client.websocket_connect("/ws")

    @hub.on(EVENT_CLOSE)
    def cascade(ep: EventPayload) -> None:
        if ep.kws is a.kws:
            b.kws.close(4002)

    hub.close_all()
    client.pump()
    assert log == [(EVENT_CLOSE, "c1"), (EVENT_CLOSE, "c2")]
    assert (a.close_code, b.close_code) == (1001, 4002)


# -- event order ----------------------------------------------------------------------------


def test_event_order_route_callback_connect_messages_terminal() -> None:
    hub = Hub(uuid_factory=counter())
    order: list[str] = []

    @hub.websocket("/ws/:id")
    def on_open(kws: Websocket) -> None:
        order.append("route")
        kws.emit("welcome")  # already registered: it can emit and be emitted to
        hub.emit_to(kws.uuid, "direct")

    hub.on(EVENT_CONNECT, lambda ep: order.append("connect"))
    hub.on(EVENT_MESSAGE, lambda ep: order.append("message:" + ep.text))
    hub.on(EVENT_DISCONNECT, lambda ep: order.append("disconnect"))
    hub.on(EVENT_CLOSE, lambda ep: order.append("close"))
    with TestClient(hub).websocket_connect("/ws/1") as ws:
        assert inbox(ws) == ["welcome", "direct"]
        ws.send_text("a")
        ws.send_text("b")
    assert order == ["route", "connect", "message:a", "message:b", "disconnect"]


def test_async_route_callback_completes_before_connect() -> None:
    hub = Hub(uuid_factory=counter())
    order: list[str] = []

    @hub.websocket("/ws")
    async def on_open(kws: Websocket) -> None:
        order.append("route start")
        await asyncio.sleep(0.01)
        kws.set_attribute("ready", True)
        order.append("route end")

    @hub.on(EVENT_CONNECT)
    def connected(ep: EventPayload) -> None:
        order.append(f"connect ready={ep.socket_attributes.get('ready')}")

    with TestClient(hub, run_async=asyncio.run).websocket_connect("/ws"):
        pass
    assert order == ["route start", "route end", "connect ready=True"]


@pytest.mark.parametrize("is_async", [False, True])
def test_route_callback_that_closes_skips_connect(is_async: bool) -> None:
    hub = Hub(uuid_factory=counter())
    log = record(hub, EVENT_CONNECT, EVENT_CLOSE, EVENT_DISCONNECT)
    if is_async:

        async def refuse_async(kws: Websocket) -> None:
            kws.close(4003, "go away")

        hub.websocket("/ws", refuse_async)
    else:
        hub.websocket("/ws", lambda kws: kws.close(4003, "go away"))
    ws = TestClient(hub).websocket_connect("/ws")
    assert log == [(EVENT_CLOSE, "c1")]
    assert (ws.close_code, ws.close_reason) == (4003, "go away")
    assert hub.connections == ()


def test_route_callback_returning_a_plain_value_still_connects() -> None:
    hub = Hub(uuid_factory=counter())
    hub.websocket("/ws", lambda kws: 42)  # type: ignore[type-var]
    log = record(hub, EVENT_CONNECT)
    open_direct(hub)
    assert log == [(EVENT_CONNECT, "c1")]


# -- listener errors ------------------------------------------------------------------------


def test_listener_error_reaches_error_listeners_and_others_are_unaffected() -> None:
    hub = make_hub()
    failure = RuntimeError("boom")
    errors: list[tuple[BaseException | None, bytes, str, Any]] = []

    @hub.on(EVENT_MESSAGE)
    def explode(ep: EventPayload) -> None:
        if ep.text == "boom":
            raise failure
        ep.kws.emit("ok: " + ep.text)

    @hub.on(EVENT_ERROR)
    def on_error(ep: EventPayload) -> None:
        errors.append((ep.error, ep.data, ep.socket_uuid, dict(ep.socket_attributes)))

    client = TestClient(hub)
    with client.websocket_connect("/ws") as a, client.websocket_connect("/ws") as b:
        a.kws.set_attribute("who", "a")
        a.send_text("boom")
        b.send_text("fine")
        a.send_text("still open")
        assert errors == [(failure, b"boom", "c1", {"who": "a"})]
        assert inbox(b) == ["ok: fine"]
        assert inbox(a) == ["ok: still open"]
        assert a.kws.is_alive


def test_listener_error_with_close_policy_closes_with_1011() -> None:
    hub = make_hub(on_listener_error="close")
    log = record(hub, EVENT_ERROR, EVENT_CLOSE, EVENT_DISCONNECT)
    hub.on(EVENT_MESSAGE, boom)
    client = TestClient(hub)
    with client.websocket_connect("/ws") as a, client.websocket_connect("/ws") as b:
        a.send_text("x")
        assert log == [(EVENT_ERROR, "c1"), (EVENT_CLOSE, "c1")]
        assert (a.close_code, a.close_reason) == (1011, "internal error")
        assert b.kws.is_alive


def test_error_in_a_terminal_listener_is_reported_and_not_recursed() -> None:
    hub = make_hub(on_listener_error="close")
    log = record(hub, EVENT_ERROR, EVENT_DISCONNECT)
    hub.on(EVENT_DISCONNECT, boom)
    with TestClient(hub).websocket_connect("/ws"):
        pass
    assert log == [(EVENT_DISCONNECT, "c1"), (EVENT_ERROR, "c1")]
    assert hub.connections == ()


def test_failing_error_listener_is_logged_not_recursed(caplog: pytest.LogCaptureFixture) -> None:
    hub = make_hub()
    calls: list[str] = []

    @hub.on(EVENT_MESSAGE)
    def explode(ep: EventPayload) -> None:
        raise ValueError("first")

    @hub.on(EVENT_ERROR)
    def broken(ep: EventPayload) -> None:
        calls.append(type(ep.error).__name__)
        raise KeyError("second")

    with (
        caplog.at_level(logging.ERROR, logger="ikisocket"),
        TestClient(hub).websocket_connect("/ws") as ws,
    ):
        ws.send_text("x")
        assert ws.kws.is_alive
    assert calls == ["ValueError"]
    (entry,) = caplog.records
    assert "error listener failed" in entry.getMessage()
    assert entry.exc_info is not None
    assert isinstance(entry.exc_info[1], KeyError)


def test_error_without_error_listener_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    hub = make_hub()
    hub.on(EVENT_MESSAGE, boom)
    with (
        caplog.at_level(logging.ERROR, logger="ikisocket"),
        TestClient(hub).websocket_connect("/ws") as ws,
    ):
        ws.send_text("x")
    (entry,) = caplog.records
    assert "no error listener" in entry.getMessage()
    assert entry.exc_info is not None
    assert isinstance(entry.exc_info[1], ZeroDivisionError)


def test_error_in_an_async_listener_reaches_error_listeners() -> None:
    hub = make_hub(on_listener_error="close")
    errors: list[BaseException | None] = []
    log = record(hub, EVENT_CLOSE)

    @hub.on(EVENT_MESSAGE)
    async def explode(ep: EventPayload) -> None:
        await asyncio.sleep(0)
        raise RuntimeError("async boom")

    hub.on(EVENT_ERROR, lambda ep: errors.append(ep.error))
    ws = TestClient(hub).websocket_connect("/ws")
    ws.send_text("x")
    assert [str(e) for e in errors] == ["async boom"]
    assert log == [(EVENT_CLOSE, "c1")]
    assert ws.close_code == 1011


def test_error_in_an_async_error_listener_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    hub = make_hub()
    hub.on(EVENT_MESSAGE, boom)

    @hub.on(EVENT_ERROR)
    async def broken(ep: EventPayload) -> None:
        raise KeyError("in error listener")

    with (
        caplog.at_level(logging.ERROR, logger="ikisocket"),
        TestClient(hub).websocket_connect("/ws") as ws,
    ):
        ws.send_text("x")
    assert ["error listener failed" in r.getMessage() for r in caplog.records] == [True]


def test_error_in_the_route_callback_reaches_error_listeners_then_connect() -> None:
    hub = Hub(uuid_factory=counter())
    hub.websocket("/ws", boom)
    log = record(hub, EVENT_ERROR, EVENT_CONNECT)
    errors: list[BaseException | None] = []
    hub.on(EVENT_ERROR, lambda ep: errors.append(ep.error))
    TestClient(hub).websocket_connect("/ws")
    assert log == [(EVENT_ERROR, "c1"), (EVENT_CONNECT, "c1")]
    assert isinstance(errors[0], ZeroDivisionError)


def test_error_in_the_route_callback_with_close_policy() -> None:
    hub = Hub(uuid_factory=counter(), on_listener_error="close")
    hub.websocket("/ws", boom)
    log = record(hub, EVENT_ERROR, EVENT_CONNECT, EVENT_CLOSE)
    ws = TestClient(hub).websocket_connect("/ws")
    assert log == [(EVENT_ERROR, "c1"), (EVENT_CLOSE, "c1")]
    assert ws.close_code == 1011


def test_receive_error_runs_error_listeners_without_ending_the_connection() -> None:
    hub = make_hub()
    errors: list[tuple[BaseException | None, bytes]] = []
    hub.on(EVENT_ERROR, lambda ep: errors.append((ep.error, ep.data)))
    kws = open_direct(hub)
    problem = ikisocket_core.RemoteProtocolError("bad frame", close_code=1007)
    hub.receive_error(kws, problem, b"raw")
    assert errors == [(problem, b"raw")]
    assert kws.is_alive
    hub.receive_disconnect(kws, 1007, error=problem)
    hub.receive_error(kws, problem)  # closed: ignored
    assert len(errors) == 1


# -- identity -------------------------------------------------------------------------------


def test_setting_uuid_rekeys_the_connection() -> None:
    hub = make_hub()
    client = TestClient(hub)
    with client.websocket_connect("/ws") as a, client.websocket_connect("/ws") as b:
        a.kws.uuid = "alice"
        a.kws.uuid = "alice"  # the same uuid again: nothing to do
        assert a.uuid == "alice"
        assert set(hub.connections) == {"alice", b.uuid}
        hub.emit_to("alice", "hi alice")
        hub.broadcast("not alice", exclude="alice")
        with pytest.raises(UnknownConnection):
            hub.emit_to("c1", "old uuid")
        with pytest.raises(DuplicateUUID) as info:
            b.kws.uuid = "alice"
        assert info.value.uuid == "alice"
        assert b.uuid == "c2"
        assert inbox(a) == ["hi alice"]
        assert inbox(b) == ["not alice"]


def test_uuid_set_in_the_route_callback_is_used_by_connect() -> None:
    hub = Hub(uuid_factory=counter())
    hub.websocket("/ws/:id", lambda kws: setattr(kws, "uuid", kws.params["id"]))
    log = record(hub, EVENT_CONNECT, EVENT_DISCONNECT)
    with TestClient(hub).websocket_connect("/ws/alice") as ws:
        assert ws.uuid == "alice"
    assert log == [(EVENT_CONNECT, "alice"), (EVENT_DISCONNECT, "alice")]


@pytest.mark.parametrize("value", ["", None, 7])
def test_uuid_must_be_a_non_empty_string(value: Any) -> None:
    kws = open_direct(make_hub())
    with pytest.raises(LocalProtocolError):
        kws.uuid = value


def test_uuid_set_in_a_terminal_listener_touches_no_registry() -> None:
    hub = make_hub()
    client = TestClient(hub)
    other = client.websocket_connect("/ws")
    hub.on(EVENT_DISCONNECT, lambda ep: setattr(ep.kws, "uuid", other.uuid))
    leaving = client.websocket_connect("/ws")
    leaving.close()
    assert leaving.uuid == other.uuid  # no clash: it is not registered any more
    assert hub.get(other.uuid) is other.kws
    other.close()


def test_get_and_contains() -> None:
    hub = make_hub()
    kws = open_direct(hub)
    assert hub.get("c1") is kws
    assert "c1" in hub
    assert "c2" not in hub
    assert 1 not in hub


# -- rooms ----------------------------------------------------------------------------------


def test_rooms_join_leave_emit_and_membership() -> None:
    hub = make_hub()
    client = TestClient(hub)
    with (
        client.websocket_connect("/ws") as a,
        client.websocket_connect("/ws") as b,
        client.websocket_connect("/ws") as c,
    ):
        a.kws.join("red")
        a.kws.join("red")  # twice is once
        b.kws.join("red")
        c.kws.join("blue")
        assert hub.rooms == {"red": ("c1", "c2"), "blue": ("c3",)}
        assert hub.to("red").uuids == ("c1", "c2")
        assert len(hub.to("red")) == 2
        assert len(hub.to("nowhere")) == 0
        assert a.kws.rooms == frozenset({"red"})
        hub.to("red").emit("to red")
        a.kws.to("red").emit("from a")
        hub.to("blue").emit(b"\x01", BINARY)
        assert inbox(a) == ["to red"]
        assert inbox(b) == ["to red", "from a"]
        assert c.receive_bytes() == b"\x01"
        a.kws.leave("red")
        a.kws.leave("red")  # not a member any more: harmless
        c.kws.leave("blue")  # the last member: the room disappears
        assert hub.rooms == {"red": ("c2",)}


def test_a_room_send_skips_only_its_sender_and_keeps_the_joining_order() -> None:
    hub = make_hub()
    a, b, c, d = (open_direct(hub) for _ in range(4))
    for kws in (c, a, d):
        kws.join("red")
    hub.drain_actions()

    def targets(send: object) -> list[str]:
        assert isinstance(send, Send)
        return [t.uuid for t in send.targets]

    a.to("red").emit("from a, in the middle")
    d.to("red").emit("from d, the last")
    b.to("red").emit("from b, not a member")
    hub.to("red").emit("from the hub")
    sends = hub.drain_actions()
    assert [targets(send) for send in sends] == [
        ["c3", "c4"],
        ["c3", "c1"],
        ["c3", "c1", "c4"],
        ["c3", "c1", "c4"],
    ]
    a.to("red").emit_event("news", 1)  # the same targets for a named event
    (event,) = hub.drain_actions()
    assert targets(event) == ["c3", "c4"]
    assert hub.rooms == {"red": ("c3", "c1", "c4")}  # the room itself is untouched


def test_room_fire_runs_listeners_for_members_but_the_excluded() -> None:
    hub = make_hub()
    seen: list[str] = []
    hub.on("ROLL_CALL", lambda ep: seen.append(ep.socket_uuid))
    client = TestClient(hub)
    with (
        client.websocket_connect("/ws") as a,
        client.websocket_connect("/ws") as b,
        client.websocket_connect("/ws"),
    ):
        a.kws.join("r")
        b.kws.join("r")
        hub.to("r").fire("ROLL_CALL", "x")
        assert seen == ["c1", "c2"]
        a.kws.to("r").fire("ROLL_CALL")
        assert seen == ["c1", "c2", "c2"]


def test_leaving_rooms_on_disconnect_keeps_other_members() -> None:
    hub = make_hub()
    client = TestClient(hub)
    a = client.websocket_connect("/ws")
    b = client.websocket_connect("/ws")
    a.kws.join("r")
    b.kws.join("r")
    a.kws.join("solo")
    a.close()
    assert hub.rooms == {"r": ("c2",)}
    b.kws.close()
    client.pump()
    assert hub.rooms == {}


def test_leave_in_a_terminal_listener_and_join_after_death() -> None:
    hub = make_hub()
    hub.on(EVENT_DISCONNECT, lambda ep: ep.kws.leave("r"))
    client = TestClient(hub)
    a = client.websocket_connect("/ws")
    a.kws.join("r")
    a.close()
    a.kws.join("r")  # dead: no-op
    assert hub.rooms == {}
    assert a.kws.rooms == frozenset()


# -- actions, batching and wakeups ----------------------------------------------------------


def test_one_send_action_per_broadcast_with_every_target() -> None:
    hub = make_hub()
    conns = [open_direct(hub) for _ in range(4)]
    hub.drain_actions()
    hub.broadcast(b"all", BINARY)
    conns[0].broadcast("others")
    hub.to("none").emit("x")
    for kws in conns[:3]:
        kws.join("r")
    conns[0].to("r").emit("room")
    actions = hub.drain_actions()
    assert actions == [
        Send(targets=tuple(conns), data=b"all", kind=BINARY),
        Send(targets=tuple(conns[1:]), data=b"others", kind=TEXT),
        Send(targets=tuple(conns[1:3]), data=b"room", kind=TEXT),
    ]
    assert hub.drain_actions() == []


def test_inputs_fed_whole_or_one_at_a_time_give_the_same_actions() -> None:
    def run(drain_each: bool) -> list[tuple[tuple[str, ...], bytes]]:
        hub = make_hub()
        hub.on(EVENT_MESSAGE, lambda ep: ep.kws.broadcast(ep.data, except_self=False))
        conns = [open_direct(hub) for _ in range(3)]
        out = []
        for i, data in enumerate([b"a", b"bb", b"ccc", b"dddd"]):
            hub.receive_message(conns[i % 3], data, BINARY)
            if drain_each:
                out += hub.drain_actions()
        out += hub.drain_actions()
        return [(tuple(k.uuid for k in a.targets), a.data) for a in out if isinstance(a, Send)]

    assert run(drain_each=False) == run(drain_each=True)
    assert [data for _, data in run(drain_each=False)] == [b"a", b"bb", b"ccc", b"dddd"]


def test_text_emit_of_invalid_utf8_raises_value_error() -> None:
    hub = make_hub()
    kws = open_direct(hub)
    with pytest.raises(ValueError):
        kws.emit(b"\xff\xfe")
    with pytest.raises(ValueError):
        hub.broadcast(b"caf\xc3")
    kws.emit(b"\xff\xfe", BINARY)
    kws.emit("café".encode())
    assert len(hub.drain_actions()) == 2


def test_wakeup_once_outside_inputs_and_again_after_a_drain() -> None:
    hub = make_hub()
    hub.on(EVENT_MESSAGE, lambda ep: hub.broadcast(ep.data))
    hub.on("JOB", lambda ep: ep.kws.emit("job"))
    kws = open_direct(hub)
    wakeups: list[int] = []
    hub.set_wakeup(lambda: wakeups.append(1))
    hub.drain_actions()

    hub.receive_message(kws, "during an input")
    assert wakeups == []  # the driver drains after inputs anyway
    hub.drain_actions()

    hub.broadcast("from a background job")
    hub.emit_to(kws.uuid, "another")
    assert wakeups == [1]
    hub.fire("JOB")
    kws.fire("JOB")
    assert wakeups == [1]
    assert len(hub.drain_actions()) == 4

    hub.fire("JOB")
    assert wakeups == [1, 1]
    hub.drain_actions()
    kws.close()
    assert wakeups == [1, 1, 1]
    hub.drain_actions()
    hub.set_wakeup(None)
    hub.broadcast("no callback")
    assert wakeups == [1, 1, 1]


def test_no_wakeup_during_any_input() -> None:
    hub = Hub(uuid_factory=counter(), idle_timeout=5)
    hub.websocket("/ws", lambda kws: kws.broadcast("hello", except_self=False))
    for event in (EVENT_CONNECT, EVENT_PING, EVENT_PONG, EVENT_ERROR, EVENT_DISCONNECT):
        hub.on(event, lambda ep: hub.broadcast(ep.name))
    hub.on(EVENT_CLOSE, lambda ep: hub.broadcast("closed"))
    wakeups: list[int] = []
    hub.set_wakeup(lambda: wakeups.append(1))
    a, b = open_direct(hub), open_direct(hub)
    hub.receive_ping(a)
    hub.receive_pong(a)
    hub.receive_error(a, RuntimeError("x"))
    hub.receive_disconnect(a)
    hub.tick(10)  # closes b as idle
    assert not b.is_alive
    assert wakeups == []
    assert hub.drain_actions() != []


def test_wakeup_for_work_queued_by_an_async_listener() -> None:
    hub = make_hub()

    @hub.on(EVENT_MESSAGE)
    async def later(ep: EventPayload) -> None:
        ep.kws.emit("done")

    kws = open_direct(hub)
    wakeups: list[str] = []
    hub.set_wakeup(lambda: wakeups.append("wake"))
    hub.receive_message(kws, "x")
    (handler,) = hub.drain_actions()
    assert wakeups == []
    assert isinstance(handler, RunHandler)
    run_to_end(handler.awaitable)
    assert wakeups == ["wake"]


# -- timers ---------------------------------------------------------------------------------


def test_idle_timeout_disconnects_quiet_connections_with_1001() -> None:
    hub = make_hub(idle_timeout=10)
    log = record(hub, EVENT_CLOSE, EVENT_DISCONNECT)
    client = TestClient(hub, start_time=100.0)
    quiet = client.websocket_connect("/ws")
    chatty = client.websocket_connect("/ws")
    assert hub.next_deadline() == 110.0
    client.advance(6)
    chatty.send_text("still here")
    assert hub.next_deadline() == 110.0
    client.advance(3.9)
    assert not quiet.closed
    client.advance(0.1)
    assert (quiet.close_code, quiet.close_reason) == (1001, "idle timeout")
    assert hub.next_deadline() == 116.0
    client.advance(6)
    assert chatty.close_code == 1001
    # The peer timed out: DESIGN.md's "disconnect (peer went away or timed out)".
    assert log == [(EVENT_DISCONNECT, "c1"), (EVENT_DISCONNECT, "c2")]
    assert hub.next_deadline() is None


def test_no_deadline_without_idle_timeout() -> None:
    hub = make_hub()
    open_direct(hub)
    hub.tick(1e9)
    assert hub.next_deadline() is None
    assert len(hub) == 1


def test_idle_timeout_tick_skips_a_connection_closed_meanwhile() -> None:
    hub = make_hub(idle_timeout=1)
    client = TestClient(hub)
    a = client.websocket_connect("/ws")
    b = client.websocket_connect("/ws")
    log = record(hub, EVENT_CLOSE, EVENT_DISCONNECT)
    hub.on(EVENT_DISCONNECT, lambda ep: b.kws.close(4000) if ep.kws is a.kws else None)
    client.advance(5)
    assert log == [(EVENT_DISCONNECT, "c1"), (EVENT_CLOSE, "c2")]
    assert (a.close_code, b.close_code) == (1001, 4000)


# -- direct driving -------------------------------------------------------------------------


def test_inputs_on_a_closed_connection_are_ignored() -> None:
    hub = make_hub()
    log = record(hub, EVENT_MESSAGE, EVENT_PING, EVENT_PONG, EVENT_DISCONNECT)
    kws = open_direct(hub)
    hub.receive_disconnect(kws, 1000)
    hub.receive_message(kws, "late")
    hub.receive_ping(kws)
    hub.receive_pong(kws)
    hub.receive_disconnect(kws, 1000)
    assert log == [(EVENT_DISCONNECT, "c1")]
    assert hub.drain_actions() == []


def test_open_keeps_the_driver_object() -> None:
    hub = make_hub()
    marker = object()
    kws = hub.open(Request.from_target("/ws"), conn=marker)
    assert isinstance(kws, Websocket)
    assert kws.conn is marker


def test_text_message_may_be_given_as_str() -> None:
    hub = make_hub()
    got: list[tuple[bytes, int]] = []
    hub.on(EVENT_MESSAGE, lambda ep: got.append((ep.data, ep.kind)))
    kws = open_direct(hub)
    hub.receive_message(kws, "é")
    hub.receive_message(kws, b"\x00", BINARY)
    assert got == [("é".encode(), TEXT), (b"\x00", BINARY)]


# -- module-level aliases -------------------------------------------------------------------


def test_module_level_aliases_use_the_default_hub() -> None:
    hub = ikisocket_core.default_hub
    seen: list[str] = []

    def on_message(ep: EventPayload) -> None:
        seen.append("message:" + ep.text)
        ikisocket_core.broadcast(b"b:" + ep.data)

    def on_custom(ep: EventPayload) -> None:
        seen.append("custom:" + ep.text)

    pattern = "/aliases-test/:id"
    ikisocket_core.new(pattern, lambda kws: None)
    ikisocket_core.on(EVENT_MESSAGE, on_message)
    ikisocket_core.on("ALIAS_CUSTOM", on_custom)
    try:
        client = TestClient(hub)
        with (
            client.websocket_connect("/aliases-test/1") as a,
            client.websocket_connect("/aliases-test/2") as b,
        ):
            ikisocket_core.emit_to(a.uuid, "to a")
            ikisocket_core.emit_to_list([a.uuid, b.uuid, "ghost"], "to both")
            ikisocket_core.fire("ALIAS_CUSTOM", "fired")
            a.send_text("hello")
            assert inbox(a) == ["to a", "to both", "b:hello"]
            assert inbox(b) == ["to both", "b:hello"]
            ikisocket_core.off(EVENT_MESSAGE, on_message)
            a.send_text("ignored")
        assert seen == ["custom:fired", "custom:fired", "message:hello"]
    finally:
        ikisocket_core.off(EVENT_MESSAGE, on_message)
        ikisocket_core.off("ALIAS_CUSTOM")
        hub._router.routes[:] = [r for r in hub._router.routes if r.pattern != pattern]
    assert hub.connections == ()
    assert hub.match("/aliases-test/1") is None


# -- regressions ----------------------------------------------------------------------------


def test_idle_timeout_disconnect_carries_an_idle_timeout_cause() -> None:
    hub = make_hub(idle_timeout=2)
    errors: list[BaseException | None] = []
    hub.on(EVENT_DISCONNECT, lambda ep: errors.append(ep.error))
    client = TestClient(hub)
    client.websocket_connect("/ws")
    client.advance(2)
    (error,) = errors
    assert isinstance(error, ikisocket_core.ConnectionClosed)
    assert error.code == 1001
    assert isinstance(error.cause, ikisocket_core.IdleTimeout)
    assert len(hub) == 0


def test_a_failing_before_upgrade_hook_answers_500_and_the_hub_keeps_serving(
    caplog: pytest.LogCaptureFixture,
) -> None:
    hub = make_hub()
    calls: list[str] = []

    @hub.before_upgrade
    def check(request: Request) -> bool:
        calls.append(request.path)
        if len(calls) == 1:
            raise RuntimeError("database down")
        return True

    rejected = hub.open(Request.from_target("/ws"))
    assert isinstance(rejected, ikisocket_core.Reject)
    assert rejected.status == 500
    assert "database down" in caplog.text
    assert isinstance(hub.open(Request.from_target("/ws")), Websocket)


def test_broadcast_excluding_a_connection_of_another_hub_reaches_everyone() -> None:
    hub, other = make_hub(), make_hub()
    mine, foreign = open_direct(hub), open_direct(other)
    assert foreign.uuid == mine.uuid  # same factory sequence: only identity differs
    hub.broadcast("hi", exclude=foreign)
    (send,) = hub.drain_actions()
    assert isinstance(send, ikisocket_core.Send)
    assert send.targets == (mine,)


# -- the idle timer is a heap --------------------------------------------------------------


class CountingSlot:
    """Wraps a slot of ``Websocket`` and counts the reads (what a timer tick really looks at)."""

    def __init__(self, slot: Any) -> None:
        self.slot = slot
        self.reads = 0

    def __get__(self, obj: object, owner: type | None = None) -> Any:
        if obj is None:
            return self
        self.reads += 1
        return self.slot.__get__(obj, owner)

    def __set__(self, obj: object, value: Any) -> None:
        self.slot.__set__(obj, value)


def test_a_tick_with_nothing_due_looks_at_no_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    hub = make_hub(idle_timeout=10)
    conns = [open_direct(hub) for _ in range(300)]
    activity = CountingSlot(Websocket.__dict__["last_activity"])
    state = CountingSlot(Websocket.__dict__["state"])
    monkeypatch.setattr(Websocket, "last_activity", activity)
    monkeypatch.setattr(Websocket, "state", state)
    for step in range(1000):
        hub.tick(step / 100)  # 0 .. 9.99: nothing due yet
    assert (activity.reads, state.reads) == (0, 0)
    assert hub.next_deadline() == 10.0
    assert state.reads == 1  # the earliest deadline only
    hub.tick(5)
    hub.receive_message(conns[0], "still here")  # stamps last_activity = 5
    state.reads = activity.reads = 0
    hub.tick(10)
    # Each expired deadline is looked at once: 299 connections closed, one re-armed.
    assert activity.reads == 300
    assert [k.is_alive for k in conns].count(True) == 1
    assert hub.next_deadline() == 15.0
    hub.tick(14.999)
    assert conns[0].is_alive
    hub.tick(15)
    assert not conns[0].is_alive
    assert hub.next_deadline() is None


def test_the_idle_timer_never_closes_early_and_re_arms_lazily() -> None:
    hub = make_hub(idle_timeout=10)
    kws = open_direct(hub)
    for now in (9.0, 18.0, 27.0):  # active just before each deadline
        hub.tick(now)
        hub.receive_message(kws, "x")
    hub.tick(36.9)
    assert kws.is_alive
    assert hub.next_deadline() == 37.0
    hub.tick(37.0)
    assert not kws.is_alive


def test_next_deadline_skips_connections_that_ended() -> None:
    hub = make_hub(idle_timeout=10)
    first = open_direct(hub)
    hub.tick(3)
    second = open_direct(hub)
    assert hub.next_deadline() == 10.0
    first.close()
    assert hub.next_deadline() == 13.0
    hub.receive_disconnect(second)
    assert hub.next_deadline() is None
    hub.tick(100)  # nothing left to do
    assert len(hub) == 0


def test_the_timer_heap_stays_bounded_under_churn() -> None:
    hub = make_hub(idle_timeout=3600)
    keep = open_direct(hub)
    for _ in range(1000):
        open_direct(hub).close()
    # Ended connections' deadlines are dropped as the heap grows, not an hour later.
    assert len(hub._deadlines) <= 2 * len(hub) + 65
    assert hub.next_deadline() == 3600.0
    hub.tick(3600)
    assert not keep.is_alive


def test_tick_gives_the_hub_its_clock_without_a_timeout() -> None:
    hub = make_hub()
    kws = open_direct(hub)
    hub.tick(42.0)
    hub.receive_message(kws, "x")
    assert kws.last_activity == 42.0
    assert hub.next_deadline() is None
    assert hub.idle_timeout is None
