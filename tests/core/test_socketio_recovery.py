"""Socket.IO connection-state recovery: a dropped client gets back its state and missed events.

Everything runs through :class:`TestClient` (no network): the virtual
client drops its transport (``ws.abort()``), opens a new session and asks
its connection back with the ``pid`` and last ``offset`` it saw, as
socket.io-client does.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import pytest

from ikisocket_core import (
    BINARY,
    EVENT_CLOSE,
    EVENT_CONNECT,
    EVENT_DISCONNECT,
    AckTimeout,
    ConnectionClosed,
    EventPayload,
    Hub,
    LocalProtocolError,
    Recovery,
)
from ikisocket_core._socketio._session import PingTimeout
from ikisocket_core.testing import SocketIOTestSession, TestClient

WINDOW = 30.0


def recovering_hub(**recovery: Any) -> tuple[Hub, list[tuple[str, str, Any]]]:
    """A hub with recovery on, and the log of its connections' events."""
    numbers = iter(range(1, 1000))
    hub = Hub(uuid_factory=lambda: f"c{next(numbers)}")
    hub.socketio(
        namespaces=["/admin"],
        recovery=Recovery(max_disconnection_duration=WINDOW, **recovery),
    )
    hub.websocket("/ws", lambda kws: None)
    log: list[tuple[str, str, Any]] = []
    for name in (EVENT_CONNECT, EVENT_DISCONNECT, EVENT_CLOSE, "recover"):
        hub.on(name, lambda ep, name=name: log.append((name, ep.kws.uuid, ep.error)))
    return hub, log


def back(client: TestClient, sio: SocketIOTestSession, **auth: Any) -> SocketIOTestSession:
    """Reconnect as socket.io-client does after a drop: ``pid`` and last ``offset``."""
    asked: dict[str, Any] = {"pid": sio.pid}
    if sio.offset is not None:
        asked["offset"] = sio.offset
    asked.update(auth)
    return client.socketio_connect(namespace=sio.namespace, auth=asked)


def test_the_connect_answer_carries_a_private_id_and_events_an_offset() -> None:
    hub, _ = recovering_hub()
    client = TestClient(hub)
    ann = client.socketio_connect()
    bob = client.socketio_connect()
    assert ann.pid
    assert bob.pid
    assert ann.pid != bob.pid
    assert ann.pid != ann.uuid
    hub.emit_event("news", 1)
    ann.kws.emit_event("only-ann", "x")
    assert ann.receive_event("news") == (1,)
    assert ann.receive_event("only-ann") == ("x",)
    assert bob.receive_event("news") == (1,)
    assert ann.offset is not None
    assert bob.offset is not None
    assert int(ann.offset) > int(bob.offset)  # one counter: the broadcast was encoded once
    answers: list[Any] = []
    ann.kws.emit_event("question", ack=answers.append, timeout=5)
    event = ann.receive()
    assert event.args == ()  # an event asking for an ack carries no offset (never replayed)


def test_a_dropped_client_comes_back_with_its_uuid_rooms_attributes_and_missed_events() -> None:
    hub, log = recovering_hub()
    client = TestClient(hub)
    ann = client.socketio_connect()
    bob = client.socketio_connect()
    plain = client.websocket_connect("/ws")
    kws = ann.kws
    kws.join("lobby")
    kws.set_attribute("user", "ann")
    hub.to("lobby").emit_event("before", 0)
    assert ann.receive_event("before") == (0,)
    log.clear()

    ann.ws.abort()
    assert log == []  # held: no disconnect yet
    assert hub.get(ann.uuid) is kws
    assert kws.is_alive
    hub.to("lobby").emit_event("in-room", 1)
    hub.broadcast("to everyone")
    hub.emit_to(ann.uuid, "to ann")
    bob.kws.to("lobby").emit("from bob")
    assert plain.receive_text() == "to everyone"  # the others still get theirs at once
    assert bob.receive_event("message") == ("to everyone",)

    again = back(client, ann)
    assert again.recovered
    assert again.uuid == ann.uuid
    assert again.pid == ann.pid
    assert again.kws is kws
    assert kws.recovered
    assert kws.rooms == frozenset({"lobby"})
    assert kws.get_attribute("user") == "ann"
    assert [again.receive_event() for _ in range(4)] == [
        (1,),
        ("to everyone",),
        ("to ann",),
        ("from bob",),
    ]
    assert again.pending == 0
    assert log == [("recover", ann.uuid, None)]
    hub.to("lobby").emit_event("after", 2)  # live again
    assert again.receive_event("after") == (2,)


def test_events_sent_but_not_received_before_the_drop_are_replayed() -> None:
    hub, _ = recovering_hub()
    client = TestClient(hub)
    ann = client.socketio_connect()
    hub.emit_event("n", 1)
    assert ann.receive_event("n") == (1,)
    hub.emit_event("n", 2)  # written, but the client never reads them: they are lost in flight
    hub.emit_event("n", 3)
    ann.ws.abort()
    again = back(client, ann)
    assert again.recovered
    assert [again.receive_event("n"), again.receive_event("n")] == [(2,), (3,)]
    assert again.pending == 0


def test_a_client_that_saw_no_event_yet_gets_them_all() -> None:
    hub, _ = recovering_hub()
    client = TestClient(hub)
    ann = client.socketio_connect()
    ann.ws.abort()
    hub.emit_event("n", 1)
    again = client.socketio_connect(auth={"pid": ann.pid})  # socket.io-client sends no offset
    assert again.recovered
    assert again.receive_event("n") == (1,)


def test_a_ping_timeout_is_recoverable_too() -> None:
    hub, log = recovering_hub()
    client = TestClient(hub)
    ann = client.socketio_connect()
    ann.auto_pong = False
    client.advance(25 + 20 + 1)
    assert ann.ws.closed
    assert hub.get(ann.uuid).is_alive
    assert [name for name, _, _ in log] == [EVENT_CONNECT]
    assert back(client, ann).recovered


def test_beyond_the_window_the_held_connection_disconnects_and_a_client_starts_afresh() -> None:
    hub, log = recovering_hub()
    client = TestClient(hub)
    ann = client.socketio_connect()
    ann.kws.join("lobby")
    ann.ws.abort()
    client.advance(WINDOW - 1)
    assert ann.uuid in hub.connections
    client.advance(2)
    name, uuid, error = log[-1]
    assert (name, uuid) == (EVENT_DISCONNECT, ann.uuid)
    assert isinstance(error, ConnectionClosed)
    assert error.code == 1006
    assert ann.uuid not in hub.connections
    assert hub.rooms == {}
    fresh = back(client, ann)
    assert not fresh.recovered
    assert fresh.uuid != ann.uuid
    assert fresh.pid != ann.pid
    assert not fresh.kws.recovered
    assert fresh.kws.rooms == frozenset()


def test_a_forged_or_foreign_pid_gets_a_fresh_connection_and_leaves_the_held_one_alone() -> None:
    hub, log = recovering_hub()
    client = TestClient(hub)
    ann = client.socketio_connect()
    ann.ws.abort()
    for auth in ({"pid": "forged", "offset": "1"}, {"pid": 42}, {"pid": None}):
        other = client.socketio_connect(auth=auth)
        assert not other.recovered
        assert other.uuid != ann.uuid
    admin = client.socketio_connect(namespace="/admin", auth={"pid": ann.pid})  # another namespace
    assert not admin.recovered
    assert admin.uuid != ann.uuid
    assert all(name != EVENT_DISCONNECT for name, _, _ in log)
    assert back(client, ann).recovered  # still held: its own client gets it back


@pytest.mark.parametrize("offset", ["nope", "-1", "\u0661", "9" * 21, "999999", 7])
def test_an_offset_the_backlog_cannot_answer_ends_the_hold(offset: Any) -> None:
    hub, log = recovering_hub()
    client = TestClient(hub)
    ann = client.socketio_connect()
    hub.emit_event("n", 1)
    ann.receive_event("n")
    ann.ws.abort()
    fresh = back(client, ann, offset=offset)
    assert not fresh.recovered
    assert fresh.uuid != ann.uuid
    assert (EVENT_DISCONNECT, ann.uuid) in [(name, uuid) for name, uuid, _ in log]
    assert ann.uuid not in hub.connections
    assert not back(client, ann).recovered  # the pid is gone with it


def test_a_backlog_that_overflows_while_held_ends_the_hold_at_once() -> None:
    hub, log = recovering_hub(max_backlog=3)
    client = TestClient(hub)
    ann = client.socketio_connect()
    ann.ws.abort()
    for n in range(3):
        hub.emit_event("n", n)
    assert ann.uuid in hub.connections  # three fit
    hub.emit_event("n", 3)  # the fourth would leave a gap
    hub.emit_event("n", 4)  # nothing more is kept meanwhile
    assert ann.kws.conn.backlog.entries == deque()
    client.advance(0)
    assert log[-1][:2] == (EVENT_DISCONNECT, ann.uuid)
    fresh = back(client, ann)
    assert not fresh.recovered
    assert fresh.pending == 0


def test_a_backlog_bounded_in_bytes_answers_only_what_it_kept() -> None:
    hub, _ = recovering_hub(max_backlog_bytes=200)
    client = TestClient(hub)
    ann = client.socketio_connect()
    hub.emit_event("n", "a" * 50)
    ann.receive_event("n")
    seen = ann.offset
    for _ in range(5):  # more than 200 bytes: the first ones fall off while it is live
        hub.emit_event("n", "b" * 50)
    ann.ws.abort()
    assert not back(client, ann, offset=seen).recovered  # a gap: never replayed silently


def test_a_backlog_that_rotated_while_live_still_recovers_what_its_client_missed() -> None:
    hub, log = recovering_hub(max_backlog=3)
    client = TestClient(hub)
    ann = client.socketio_connect()
    for n in range(5):  # the oldest fall off while it is live
        hub.emit_event("n", n)
    assert [ann.receive_event("n") for _ in range(5)] == [(n,) for n in range(5)]
    ann.ws.abort()
    hub.emit_event("n", 5)
    hub.emit_event("n", 6)
    hub.emit_event("n", 7)  # three after the last one it saw: still answerable
    client.advance(1)
    assert ann.uuid in hub.connections
    again = back(client, ann)
    assert again.recovered
    assert [again.receive_event("n") for _ in range(3)] == [(5,), (6,), (7,)]
    again.ws.abort()
    for n in range(8, 12):  # four: one it never saw would fall off
        hub.emit_event("n", n)
    client.advance(0)
    assert log[-1][:2] == (EVENT_DISCONNECT, ann.uuid)


def test_the_number_of_held_connections_is_bounded() -> None:
    hub, log = recovering_hub(max_sessions=1)
    client = TestClient(hub)
    ann = client.socketio_connect()
    bob = client.socketio_connect()
    ann.ws.abort()
    bob.ws.abort()  # room for one: ann, held longest, ends
    assert [(name, uuid) for name, uuid, _ in log if name == EVENT_DISCONNECT] == [
        (EVENT_DISCONNECT, ann.uuid)
    ]
    assert not back(client, ann).recovered
    assert back(client, bob).recovered


def test_only_drops_are_held() -> None:
    hub, log = recovering_hub()
    client = TestClient(hub)
    leaving = client.socketio_connect()
    leaving.close()  # the client closed its session: it does not want to come back
    parting = client.socketio_connect()
    parting.disconnect()
    broken = client.socketio_connect()
    broken.ws.send_text("4garbage")
    kicked = client.socketio_connect()
    hub.close(kicked.uuid)
    ended = {uuid for name, uuid, _ in log if name in (EVENT_DISCONNECT, EVENT_CLOSE)}
    assert ended == {leaving.uuid, parting.uuid, broken.uuid, kicked.uuid}
    assert not back(client, leaving).recovered


def test_closing_a_held_connection_forgets_it() -> None:
    hub, log = recovering_hub()
    client = TestClient(hub)
    ann = client.socketio_connect()
    ann.ws.abort()
    hub.close(ann.uuid, 1000, "bye")
    assert log[-1][:2] == (EVENT_CLOSE, ann.uuid)
    assert not back(client, ann).recovered
    assert hub._sio is not None
    assert hub._sio.connections == 1


def test_a_server_shutdown_closes_held_connections() -> None:
    hub, log = recovering_hub()
    client = TestClient(hub)
    ann = client.socketio_connect()
    ann.ws.abort()
    client.server.shutdown()
    client.pump()
    assert (EVENT_CLOSE, ann.uuid) in [(name, uuid) for name, uuid, _ in log]
    assert ann.uuid not in hub.connections


def test_acks_and_a_held_connection() -> None:
    hub, _ = recovering_hub()
    client = TestClient(hub)
    ann = client.socketio_connect()
    answers: list[Any] = []
    ann.kws.emit_event("q", ack=answers.append, timeout=5)
    ann.ws.abort()  # a pending ack fails with the drop
    ann.kws.emit_event("q", ack=answers.append, timeout=5)  # one asked while held fails at once
    assert [type(a) for a in answers] == [ConnectionClosed, ConnectionClosed]
    again = back(client, ann)
    assert again.pending == 0  # an event asking an ack is never replayed
    again.kws.emit_event("q", ack=answers.append, timeout=5)
    again.ack(again.receive(), "yes")
    client.advance(6)
    assert answers[2:] == [("yes",)]
    assert not any(isinstance(a, AckTimeout) for a in answers)


def test_a_client_cannot_fire_the_recover_event() -> None:
    hub, log = recovering_hub()
    sio = TestClient(hub).socketio_connect()
    sio.emit("recover")
    assert [name for name, _, _ in log] == [EVENT_CONNECT]


def test_a_ping_timeout_is_an_error_then_a_hold() -> None:
    hub, _ = recovering_hub()
    errors: list[BaseException | None] = []
    hub.on("error", lambda ep: errors.append(ep.error))
    client = TestClient(hub)
    ann = client.socketio_connect()
    ann.auto_pong = False
    client.advance(50)
    assert [type(e) for e in errors] == [PingTimeout]


def test_plain_sends_while_only_held_connections_exist_are_kept_not_written() -> None:
    hub, _ = recovering_hub()
    client = TestClient(hub)
    ann = client.socketio_connect()
    ann.ws.abort()
    hub.broadcast(b"\x00bin", BINARY)
    again = back(client, ann)
    assert again.receive_event("message") == (b"\x00bin",)


def test_recovery_settings_are_checked() -> None:
    for bad in (
        {"max_disconnection_duration": 0},
        {"max_disconnection_duration": True},
        {"max_backlog": 0},
        {"max_backlog_bytes": 1.5},
        {"max_sessions": "2"},
    ):
        with pytest.raises(LocalProtocolError):
            Recovery(**bad)
    hub = Hub()
    sio = hub.socketio(recovery=60)
    assert sio.recovery == Recovery(max_disconnection_duration=60.0)
    assert Hub().socketio().recovery is None


def test_the_recover_listener_sees_the_recovered_connection() -> None:
    hub, _ = recovering_hub()
    seen: list[tuple[str, bool, Any]] = []

    @hub.on("recover")
    def recovered(ep: EventPayload) -> None:
        seen.append((ep.kws.uuid, ep.kws.recovered, ep.kws.get_attribute("user")))

    client = TestClient(hub)
    ann = client.socketio_connect()
    ann.kws.set_attribute("user", "ann")
    ann.ws.abort()
    back(client, ann)
    assert seen == [(ann.uuid, True, "ann")]


def test_the_server_may_close_a_transport_for_its_client_to_come_back() -> None:
    hub, log = recovering_hub()
    assert hub._sio is not None
    client = TestClient(hub)
    ann = client.socketio_connect()
    admin = ann.connect("/admin")
    hub._sio.close_transport(ann.kws)
    assert ann.ws.closed
    assert ann.ws.close_code == 1001
    assert [name for name, _, _ in log] == [EVENT_CONNECT]  # held: no disconnect
    assert admin.kws.is_alive
    again = back(client, ann)
    assert again.recovered
    assert again.connect("/admin", auth={"pid": admin.pid}).recovered  # over the same session
    hub._sio.close_transport(hub.get(ann.uuid))
    client.advance(WINDOW + 1)
    closed = [error for name, _, error in log if name == EVENT_DISCONNECT]
    assert [(e.code, e.reason) for e in closed] == [(1001, "the server closed the transport")]
    assert admin.uuid not in hub.connections
    with pytest.raises(LocalProtocolError, match="plain"):
        hub._sio.close_transport(client.websocket_connect("/ws").kws)


def test_without_recovery_closing_a_transport_disconnects_at_once() -> None:
    hub = Hub()
    sio = hub.socketio()
    gone: list[str] = []
    hub.on(EVENT_DISCONNECT, lambda ep: gone.append(ep.kws.uuid))
    client = TestClient(hub)
    ann = client.socketio_connect()
    assert ann.pid is None
    kws = ann.kws
    sio.close_transport(kws)
    assert gone == [ann.uuid]
    sio.close_transport(kws)  # again, once it ended: nothing more happens
    assert gone == [ann.uuid]
    hub.emit_event("n", 1)
    assert not client.socketio_connect(auth={"pid": "x"}).recovered


def test_a_polling_client_whose_get_connection_drops_comes_back_on_a_websocket() -> None:
    hub, log = recovering_hub()
    client = TestClient(hub)
    ann = client.socketio_connect(transport="polling")
    kws = ann.kws
    assert kws.transport == "polling"
    hub.emit_event("n", 1)
    assert ann.receive_event("n") == (1,)
    log.clear()
    client.server.connection_lost(ann.polling._get.conn)  # the waiting GET's TCP connection drops
    assert log == []  # held
    hub.emit_event("n", 2)
    again = back(client, ann)  # socket.io-client may come back on another transport
    assert again.recovered
    assert again.kws is kws
    assert kws.transport == "websocket"
    assert again.receive_event("n") == (2,)
    assert log == [("recover", ann.uuid, None)]
