"""Socket.IO connections on the hub: events, acks both ways, rooms, namespaces, connect hooks.

Socket.IO and plain WebSocket clients share one hub here, through
:class:`TestClient`: whatever reaches one kind must reach the other.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import deque
from typing import Any

import pytest

from ikisocket_core import (
    BINARY,
    EVENT_CLOSE,
    EVENT_CONNECT,
    EVENT_DISCONNECT,
    EVENT_ERROR,
    EVENT_MESSAGE,
    AckTimeout,
    ConnectionClosed,
    ConnectRefused,
    EventPayload,
    HandlerTimeout,
    Hub,
    IdleTimeout,
    IkisocketError,
    LocalProtocolError,
    Websocket,
)
from ikisocket_core._socketio._acks import _Answering, _Reply
from ikisocket_core._socketio._packets import SocketPacket, SocketType
from ikisocket_core._socketio._testclient import SocketIOTestSession, _Wire
from ikisocket_core.testing import (
    NothingReceived,
    SocketIORefused,
    TestClient,
    WebSocketRejected,
)


def numbered_hub(**hub_options: Any) -> Hub:
    numbers = iter(range(1, 1000))
    return Hub(uuid_factory=lambda: f"c{next(numbers)}", **hub_options)


@pytest.fixture
def hub() -> Hub:
    hub = numbered_hub()
    hub.socketio(namespaces=["/admin"])
    hub.websocket("/ws", lambda kws: None)
    return hub


# -- client events -----------------------------------------------------------------------


def test_client_events_reach_listeners_with_their_arguments(hub: Hub) -> None:
    seen: list[EventPayload] = []
    hub.on("chat", seen.append)
    sio = TestClient(hub).socketio_connect()
    sio.emit("chat", "hello", 2, {"k": [1]}, b"\x00\x01")
    sio.emit("chat", 7)
    sio.emit("chat")
    first, second, third = seen
    assert first.args == ("hello", 2, {"k": [1]}, b"\x00\x01")
    assert (first.data, first.kind, first.name, first.namespace) == (b"hello", 1, "chat", "/")
    assert (second.data, third.data) == (b"7", b"")
    bytes_first: list[EventPayload] = []
    hub.on("blob", bytes_first.append)
    sio.emit("blob", b"\xff")
    assert (bytes_first[0].data, bytes_first[0].kind) == (b"\xff", BINARY)


def test_a_plain_message_has_its_data_as_args(hub: Hub) -> None:
    seen: list[EventPayload] = []
    hub.on(EVENT_MESSAGE, seen.append)
    with TestClient(hub).websocket_connect("/ws") as ws:
        ws.send_text("hi")
    (ep,) = seen
    assert ep.args == (b"hi",)
    assert ep.arguments is None
    assert ep.namespace == "/"
    assert ep.kws.transport is None
    assert ep.kws.auth == {}


def test_a_client_message_event_is_the_message_event(hub: Hub) -> None:
    seen: list[tuple[Any, ...]] = []
    hub.on(EVENT_MESSAGE, lambda ep: seen.append(ep.args))
    sio = TestClient(hub).socketio_connect()
    sio.send("text")
    assert seen == [("text",)]


@pytest.mark.parametrize("name", [EVENT_CONNECT, EVENT_DISCONNECT, EVENT_ERROR, EVENT_CLOSE])
def test_client_events_named_like_hub_events_are_ignored(hub: Hub, name: str) -> None:
    seen: list[str] = []
    hub.on(name, lambda ep: seen.append(ep.name))
    sio = TestClient(hub).socketio_connect()
    seen.clear()
    sio.emit(name, "spoof")
    assert seen == []
    with pytest.raises(NothingReceived):
        sio.call(name)


def test_namespaces_have_their_own_listeners(hub: Hub) -> None:
    root: list[str] = []
    admin: list[str] = []
    hub.on("e", lambda ep: root.append(ep.namespace))
    hub.on("e", lambda ep: admin.append(ep.namespace), namespace="/admin")
    hub.on(EVENT_CONNECT, lambda ep: admin.append("connect " + ep.kws.uuid), namespace="/admin")
    sio = TestClient(hub).socketio_connect()
    other = sio.connect("/admin")
    sio.emit("e")
    other.emit("e")
    assert root == ["/"]
    assert admin == [f"connect {other.uuid}", "/admin"]
    hub.off("e", namespace="/admin")
    other.emit("e")
    assert admin == [f"connect {other.uuid}", "/admin"]
    hub.on("f", (f := lambda ep: None), namespace="/admin")
    hub.off("f", f, namespace="/admin")
    hub.off("g", namespace="/nowhere")
    assert set(hub._namespaced["/admin"]) == {EVENT_CONNECT}


def test_a_namespace_must_start_with_a_slash(hub: Hub) -> None:
    with pytest.raises(LocalProtocolError):
        hub.on("e", lambda ep: None, namespace="admin")


def test_connection_own_listeners_run_for_events(hub: Hub) -> None:
    seen: list[tuple[Any, ...]] = []
    sio = TestClient(hub).socketio_connect()
    sio.kws.on("e", lambda ep: seen.append(ep.args))
    sio.emit("e", 1)
    assert seen == [(1,)]


# -- acks asked by the client ------------------------------------------------------------


def test_a_listener_return_value_answers_the_ack(hub: Hub) -> None:
    hub.on("one", lambda ep: ep.args[0] * 2)
    hub.on("many", lambda ep: ("a", b"\x01", None))
    hub.on("none", lambda ep: None)
    sio = TestClient(hub).socketio_connect()
    assert sio.call("one", 21) == (42,)
    assert sio.call("many") == ("a", b"\x01", None)
    assert sio.call("none") == ()
    assert sio.call("nobody") == ()  # no listener: answered empty, the client is not left waiting


def test_the_first_value_answers_and_later_ones_are_dropped(hub: Hub) -> None:
    hub.on("q", lambda ep: None)
    hub.on("q", lambda ep: "first")
    hub.on("q", lambda ep: "second")
    assert TestClient(hub).socketio_connect().call("q") == ("first",)


def test_an_async_listener_answers_when_it_finishes(hub: Hub) -> None:
    @hub.on("slow")
    async def slow(ep: EventPayload) -> str:
        await asyncio.sleep(0)
        return "done"

    @hub.on("quiet")
    async def quiet(ep: EventPayload) -> None:
        await asyncio.sleep(0)

    @hub.on("fire-and-forget")
    async def forget(ep: EventPayload) -> None:
        await asyncio.sleep(0)

    sio = TestClient(hub, run_async=asyncio.run).socketio_connect()
    assert sio.call("slow") == ("done",)
    assert sio.call("quiet") == ()
    sio.emit("fire-and-forget")


def test_a_failing_listener_reports_an_error_and_still_answers(hub: Hub) -> None:
    errors: list[BaseException | None] = []
    hub.on(EVENT_ERROR, lambda ep: errors.append(ep.error))

    @hub.on("bad")
    def bad(ep: EventPayload) -> None:
        raise ValueError("sync")

    @hub.on("worse")
    async def worse(ep: EventPayload) -> None:
        raise KeyError("async")

    sio = TestClient(hub).socketio_connect()
    assert sio.call("bad") == ()
    assert sio.call("worse") == ()
    sio.emit("bad")
    assert [type(e) for e in errors] == [ValueError, KeyError, ValueError]


def test_an_answer_json_cannot_carry_is_an_error(hub: Hub) -> None:
    errors: list[BaseException | None] = []
    hub.on(EVENT_ERROR, lambda ep: errors.append(ep.error))
    hub.on("odd", lambda ep: {1j})
    sio = TestClient(hub).socketio_connect()
    with pytest.raises(NothingReceived):
        sio.call("odd")
    assert isinstance(errors[0], TypeError)


def test_a_cancelled_async_listener_still_lets_the_ack_be_answered(hub: Hub) -> None:
    # What the engine does at handler_timeout: the listener counts as failed, and the
    # answer goes out without its value.
    errors: list[BaseException | None] = []
    hub.on(EVENT_ERROR, lambda ep: errors.append(ep.error))
    client = TestClient(hub)
    sio = client.socketio_connect()
    assert hub._sio is not None

    async def never() -> str:
        return "never"

    coroutine = never()
    reply = _Reply(hub._sio, sio.kws.conn, 5)
    handler = _Answering(hub, sio.kws.payload("e"), coroutine, reply)
    reply.expect()
    handler.timed_out(1.0)
    handler.close()
    reply.done(None)  # the dispatch's own share
    client.pump()
    sio._read()
    assert sio._answers == {5: ()}
    assert [type(e) for e in errors] == [HandlerTimeout]


def test_an_answer_after_the_connection_ended_is_dropped(hub: Hub) -> None:
    kept: list[Any] = []

    @hub.on("later")
    async def later(ep: EventPayload) -> str:
        return "too late"

    client = TestClient(hub)
    client._run_async = kept.append
    sio = client.socketio_connect()
    sio.ws.send_text('421["later"]')
    uuid = sio.uuid
    hub.close(uuid)
    # The handler runs only now: its answer finds the connection closed.
    for coroutine in kept:
        with contextlib.suppress(StopIteration):
            coroutine.send(None)
    assert sio.disconnected
    sio._read()
    assert sio._answers == {}  # no ACK went out


# -- acks asked by the server ------------------------------------------------------------


def test_the_server_asks_for_an_ack_and_gets_the_answer(hub: Hub) -> None:
    answers: list[Any] = []
    sio = TestClient(hub).socketio_connect()
    sio.kws.emit_event("question", 1, b"\x02", ack=answers.append, timeout=5)
    event = sio.receive()
    assert (event.name, event.args, event.ack_id) == ("question", (1, b"\x02"), 0)
    sio.ack(event, "yes", b"\x03")
    assert answers == [("yes", b"\x03")]
    sio.ack(event, "again")  # an id already answered: ignored
    assert answers == [("yes", b"\x03")]


def test_an_unanswered_ack_times_out(hub: Hub) -> None:
    answers: list[Any] = []
    client = TestClient(hub)
    sio = client.socketio_connect()
    sio.kws.emit_event("question", ack=answers.append, timeout=5)
    client.advance(4.9)
    assert answers == []
    client.advance(0.2)
    (timeout,) = answers
    assert isinstance(timeout, AckTimeout)
    assert timeout.timeout == 5
    assert "no ack within 5 s" in str(timeout)
    sio.ack(sio.receive(), "late")  # too late: ignored
    assert len(answers) == 1


def test_pending_acks_fail_when_the_connection_ends(hub: Hub) -> None:
    answers: list[Any] = []
    client = TestClient(hub)
    sio = client.socketio_connect()
    sio.kws.emit_event("q", ack=answers.append, timeout=5)
    sio.disconnect()
    (closed,) = answers
    assert isinstance(closed, ConnectionClosed)
    client.advance(10)
    assert len(answers) == 1


def test_pending_acks_fail_when_the_server_closes_the_connection(hub: Hub) -> None:
    answers: list[Any] = []
    sio = TestClient(hub).socketio_connect()
    kws = sio.kws
    kws.emit_event("q", ack=answers.append, timeout=5)
    kws.close()
    assert isinstance(answers[0], ConnectionClosed)
    kws.emit_event("q", ack=answers.append, timeout=5)  # closed already: failed at once
    assert isinstance(answers[1], ConnectionClosed)
    kws.emit_event("q")  # a no-op


def test_an_ack_callback_may_fail_or_be_async(hub: Hub) -> None:
    errors: list[BaseException | None] = []
    hub.on(EVENT_ERROR, lambda ep: errors.append(ep.error))
    answers: list[Any] = []

    def failing(answer: Any) -> None:
        raise RuntimeError("callback failed")

    async def later(answer: Any) -> None:
        answers.append(answer)

    sio = TestClient(hub).socketio_connect()
    sio.kws.emit_event("a", ack=failing, timeout=5)
    sio.kws.emit_event("b", ack=later, timeout=5)
    sio.ack(sio.receive(), 1)
    sio.ack(sio.receive(), 2)
    assert [type(e) for e in errors] == [RuntimeError]
    assert answers == [(2,)]


def test_acks_are_bounded_per_connection() -> None:
    hub = Hub()
    hub.socketio(max_pending_acks=2)
    sio = TestClient(hub).socketio_connect()
    sio.kws.emit_event("a", ack=print, timeout=5)
    sio.kws.emit_event("b", ack=print, timeout=5)
    with pytest.raises(LocalProtocolError, match="max_pending_acks=2"):
        sio.kws.emit_event("c", ack=print, timeout=5)
    sio.ack(sio.receive(), None)
    sio.kws.emit_event("c", ack=lambda answer: None, timeout=5)


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"ack": print}, "positive timeout"),
        ({"ack": print, "timeout": 0}, "positive timeout"),
        ({"ack": print, "timeout": True}, "positive timeout"),
        ({"timeout": 3}, "give ack= too"),
    ],
)
def test_ack_arguments_are_checked(hub: Hub, options: dict[str, Any], match: str) -> None:
    sio = TestClient(hub).socketio_connect()
    with pytest.raises(LocalProtocolError, match=match):
        sio.kws.emit_event("e", **options)


def test_a_plain_connection_cannot_answer_acks(hub: Hub) -> None:
    client = TestClient(hub)
    with client.websocket_connect("/ws") as ws:
        kws: Websocket = ws.kws
        with pytest.raises(LocalProtocolError, match="cannot answer acks"):
            kws.emit_event("e", ack=print, timeout=1)


@pytest.mark.parametrize("name", ["", "connect", "disconnect", "connect_error", "newListener"])
def test_reserved_event_names_cannot_be_emitted(hub: Hub, name: str) -> None:
    sio = TestClient(hub).socketio_connect()
    with pytest.raises(LocalProtocolError):
        sio.kws.emit_event(name)
    with pytest.raises(LocalProtocolError):
        hub.emit_event(name)
    with pytest.raises(LocalProtocolError):
        Hub().emit_event(name)


# -- hub commands reach both kinds of client ---------------------------------------------


def test_hub_messages_reach_socketio_clients_as_their_message_event(hub: Hub) -> None:
    client = TestClient(hub)
    sio = client.socketio_connect()
    admin = sio.connect("/admin")
    with client.websocket_connect("/ws") as ws:
        hub.broadcast("to all")
        hub.broadcast(b"\x00\x01", BINARY)
        hub.emit_to(sio.uuid, "just you")
        hub.emit_to_list([sio.uuid, admin.uuid, ws.uuid], "listed")
        assert ws.receive_text() == "to all"
        assert ws.receive_bytes() == b"\x00\x01"
        assert ws.receive_text() == "listed"
    assert sio.receive_event("message") == ("to all",)
    assert sio.receive_event("message") == (b"\x00\x01",)
    assert sio.receive_event("message") == ("just you",)
    assert sio.receive_event("message") == ("listed",)
    assert admin.receive_event("message") == ("to all",)
    assert admin.receive_event() == (b"\x00\x01",)
    assert admin.receive_event() == ("listed",)
    with pytest.raises(NothingReceived):
        sio.receive_event()


def test_a_broadcast_is_encoded_once_per_namespace(hub: Hub) -> None:
    client = TestClient(hub)
    clients = [client.socketio_connect() for _ in range(3)]
    before = client.server.stats.broadcast_encodes
    hub.broadcast("x")
    client.pump()
    assert client.server.stats.broadcast_encodes - before == 1
    assert [c.receive_event() for c in clients] == [("x",)] * 3


def test_rooms_mix_socketio_and_plain_clients(hub: Hub) -> None:
    hub.on("join", lambda ep: ep.kws.join(ep.args[0]))
    hub.on("say", lambda ep: ep.kws.to(ep.args[0]).emit(ep.args[1]))
    client = TestClient(hub)
    sio = client.socketio_connect()
    other = client.socketio_connect()
    with client.websocket_connect("/ws") as ws:
        ws.kws.join("lobby")
        sio.emit("join", "lobby")
        other.emit("join", "lobby")
        other.emit("say", "lobby", "hi all")
        assert ws.receive_text() == "hi all"
        assert sio.receive_event("message") == ("hi all",)
        assert other.pending == 0
        hub.to("lobby").emit_event("news", {"n": 1})
        assert json.loads(ws.receive_text()) == ["news", {"n": 1}]
        assert sio.receive_event("news") == ({"n": 1},)
        assert other.receive_event("news") == ({"n": 1},)
        sio.kws.to("lobby").emit_event("from-sio", 2)
        assert json.loads(ws.receive_text()) == ["from-sio", 2]
        assert other.receive_event("from-sio") == (2,)
        assert sio.pending == 0
    assert set(hub.rooms["lobby"]) == {sio.uuid, other.uuid}


def test_fire_runs_listeners_of_socketio_connections(hub: Hub) -> None:
    fired: list[str] = []
    hub.on("tick", lambda ep: fired.append(ep.kws.uuid))
    sio = TestClient(hub).socketio_connect()
    hub.fire("tick")
    assert fired == [sio.uuid]


def test_hub_emit_event_reaches_a_namespace_or_everyone(hub: Hub) -> None:
    client = TestClient(hub)
    sio = client.socketio_connect()
    admin = sio.connect("/admin")
    with client.websocket_connect("/ws") as ws:
        hub.emit_event("main", 1)
        hub.emit_event("admins", 2, namespace="/admin")
        hub.emit_event("everyone", 3, namespace=None)
        assert json.loads(ws.receive_text()) == ["main", 1]
        assert json.loads(ws.receive_text()) == ["everyone", 3]
    assert sio.receive_event("main") == (1,)
    assert sio.receive_event("everyone") == (3,)
    assert admin.receive_event("admins") == (2,)
    assert admin.receive_event("everyone") == (3,)


def test_emit_event_works_without_socketio_for_plain_clients() -> None:
    hub = Hub()
    hub.websocket("/ws", lambda kws: None)
    with TestClient(hub).websocket_connect("/ws") as ws:
        ws.kws.emit_event("hello", "you", [1])
        hub.emit_event("all")
        hub.to("nobody").emit_event("x")
        assert json.loads(ws.receive_text()) == ["hello", "you", [1]]
        assert json.loads(ws.receive_text()) == ["all"]
        with pytest.raises(TypeError):
            ws.kws.emit_event("bytes", b"\x00")


def test_closing_a_socketio_connection_sends_disconnect_and_fires_close(hub: Hub) -> None:
    events: list[tuple[str, str]] = []
    hub.on(EVENT_CLOSE, lambda ep: events.append((ep.name, ep.namespace)))
    hub.on(EVENT_CLOSE, lambda ep: events.append((ep.name, ep.namespace)), namespace="/admin")
    client = TestClient(hub)
    sio = client.socketio_connect()
    admin = sio.connect("/admin")
    admin.kws.close()
    assert admin.disconnected
    assert not sio.disconnected  # the session carries on for "/"
    hub.close(sio.uuid)
    assert sio.disconnected
    assert sio.ws.close_code == 1000  # no namespace left: the transport is closed too
    assert events == [(EVENT_CLOSE, "/admin"), (EVENT_CLOSE, "/")]


def test_an_idle_socketio_connection_is_disconnected() -> None:
    hub = Hub(idle_timeout=10)
    hub.socketio(ping_interval=100, ping_timeout=100)
    gone: list[BaseException | None] = []
    hub.on(EVENT_DISCONNECT, lambda ep: gone.append(ep.error))
    client = TestClient(hub)
    sio = client.socketio_connect()
    client.advance(5)
    sio.emit("still here")
    client.advance(9)
    assert hub.connections == (sio.uuid,)
    client.advance(2)
    assert not hub.connections
    assert sio.disconnected
    (error,) = gone
    assert isinstance(error, ConnectionClosed)
    assert isinstance(error.cause, IdleTimeout)


# -- connect hooks and refusals ----------------------------------------------------------


def test_an_unknown_namespace_is_refused(hub: Hub) -> None:
    sio = TestClient(hub).socketio_connect()
    with pytest.raises(SocketIORefused) as caught:
        sio.connect("/nope")
    assert caught.value.message == "Invalid namespace"
    assert not sio.ws.closed


def test_a_connect_hook_sees_auth_and_can_refuse(hub: Hub) -> None:
    assert hub._sio is not None

    @hub._sio.before_connect(namespace="/private")
    def guard(kws: Websocket) -> bool | None:
        token = kws.auth.get("token")
        if token == "raise":
            raise ConnectRefused("bad token", {"retry": False})
        if token == "plain":
            raise ConnectRefused()
        if token == "boom":
            raise RuntimeError("hook bug")
        if token == "no":
            return False
        kws.set_attribute("user", token)
        return None

    client = TestClient(hub)
    sio = client.socketio_connect()
    for token, message, data in (
        ("raise", "bad token", {"retry": False}),
        ("plain", "Connection refused", None),
        ("boom", "internal server error", None),
        ("no", "Connection refused", None),
    ):
        with pytest.raises(SocketIORefused) as caught:
            sio.connect("/private", auth={"token": token})
        assert (caught.value.message, caught.value.data) == (message, data)
    private = sio.connect("/private", auth={"token": "ann"})
    assert private.kws.get_attribute("user") == "ann"
    assert private.kws.auth == {"token": "ann"}
    assert len(hub.connections) == 2


def test_the_connect_hook_refuses_from_socketio_connect(hub: Hub) -> None:
    assert hub._sio is not None
    hub._sio.before_connect(lambda kws: kws.auth.get("ok") is True)
    client = TestClient(hub)
    with pytest.raises(SocketIORefused):
        client.socketio_connect(auth={"ok": False})
    assert client.socketio_connect(auth={"ok": True}).kws.auth == {"ok": True}


def test_a_refusal_with_a_string_payload_is_read_too(hub: Hub) -> None:
    client = TestClient(hub)
    ws = client.websocket_connect("/socket.io/?EIO=4&transport=websocket")
    ws.receive_text()
    wire = _Wire(client, ws)
    wire.inboxes["/x"] = deque()
    wire.write = lambda packet: wire.inboxes["/x"].append(  # type: ignore[method-assign]
        SocketPacket(type=SocketType.CONNECT_ERROR, namespace="/x", data="just text")
    )
    with pytest.raises(SocketIORefused, match="just text"):
        SocketIOTestSession._join(wire, "/x", None)


def test_uuid_factory_failures_and_duplicates_refuse_the_namespace(
    caplog: pytest.LogCaptureFixture,
) -> None:
    values: list[Any] = ["same", "same", 3]

    def factory() -> str:
        value = values.pop(0) if values else None
        if value is None:
            raise RuntimeError("factory broke")
        return value  # type: ignore[no-any-return]

    hub = Hub(uuid_factory=factory)
    hub.socketio()
    client = TestClient(hub)
    assert client.socketio_connect().uuid == "same"
    with caplog.at_level(logging.ERROR, logger="ikisocket"):
        for message in ("already connected", "internal server error", "internal server error"):
            with pytest.raises(SocketIORefused, match=message):
                client.socketio_connect()


def test_emit_event_to_plain_clients_only_on_a_mounted_hub(hub: Hub) -> None:
    with TestClient(hub).websocket_connect("/ws") as ws:
        hub.emit_event("plain", 1)
        assert json.loads(ws.receive_text()) == ["plain", 1]


# -- the virtual client itself -----------------------------------------------------------


def test_the_virtual_client_as_a_context_manager_closes_the_session(hub: Hub) -> None:
    client = TestClient(hub)
    with client.socketio_connect() as sio:
        assert hub.connections == (sio.uuid,)
    assert not hub.connections
    assert sio.ws.close_code == 1000
    sio.close()  # twice: nothing more
    sio.disconnect()  # the transport is closed: nothing is sent
    assert sio.disconnected


def test_the_virtual_client_checks_what_it_is_asked(hub: Hub) -> None:
    client = TestClient(hub)
    sio = client.socketio_connect()
    hub.emit_event("first")
    with pytest.raises(NothingReceived, match="expected event 'other'"):
        sio.receive_event("other")
    event = sio.receive()
    assert event.name == "first"
    with pytest.raises(IkisocketError, match="did not ask for an ack"):
        sio.ack(event)
    with pytest.raises(NothingReceived):
        sio.receive()


def test_the_virtual_client_reports_a_connect_left_unanswered() -> None:
    hub = Hub()
    hub.socketio(max_payload=1000, namespaces=["/admin"])
    sio = TestClient(hub).socketio_connect()
    with pytest.raises(IkisocketError, match="did not answer the CONNECT"):
        sio.connect("/admin", auth={"big": "x" * 2000})  # over max_payload: the session ends
    assert sio.ws.close_code == 1009


def test_sends_skip_socketio_work_while_no_socketio_client_is_connected(hub: Hub) -> None:
    assert hub._sio is not None
    client = TestClient(hub)
    with client.websocket_connect("/ws") as ws:
        assert hub._sio.connections == 0
        hub.broadcast("plain only")
        assert ws.receive_text() == "plain only"
        sio = client.socketio_connect()
        admin = sio.connect("/admin")
        assert hub._sio.connections == 2
        admin.disconnect()
        sio.close()
        assert hub._sio.connections == 0


# -- connection limits -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("limits", "counter"),
    [
        ({"max_connections": 1}, "over_max_connections"),
        ({"max_connections_per_ip": 1}, "over_max_connections_per_ip"),
    ],
)
def test_the_connection_limits_refuse_a_socketio_session_before_the_hub_sees_it(
    hub: Hub, limits: dict[str, Any], counter: str
) -> None:
    seen: list[str] = []
    hub.on(EVENT_CONNECT, lambda ep: seen.append(ep.socket_uuid))
    client = TestClient(hub, **limits)
    first = client.socketio_connect()
    with pytest.raises(WebSocketRejected) as refused:
        client.socketio_connect()
    assert refused.value.status == 503
    assert ("retry-after", "5") in refused.value.headers
    assert getattr(client.server.stats, counter) == 1
    assert seen == [first.uuid]  # no hub state for the refused one
    hub.emit_to(first.uuid, "the first session is still served")
    assert first.pending == 1
