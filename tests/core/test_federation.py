"""Federation: hubs on several nodes sharing connections through relays (no network).

Two or three hubs are wired together by a tiny in-memory bus that carries each
hub's drained relays to every other hub, as the Redis backplane does.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from ikisocket_core import (
    BINARY,
    TEXT,
    AbsenceRelay,
    Accept,
    BroadcastRelay,
    DuplicateUUID,
    EmitRelay,
    EventPayload,
    FireRelay,
    HelloRelay,
    Hub,
    LocalProtocolError,
    PresenceRelay,
    Reject,
    Relay,
    Request,
    RoomRelay,
    UnknownConnection,
    Websocket,
)
from ikisocket_core.testing import TestClient, WebSocketRejected, WebSocketTestSession


def make_hub(node: str | None) -> Hub:
    hub = Hub()

    @hub.websocket("/ws/:id")
    def on_open(kws: Websocket) -> None:
        kws.set_attribute("id", kws.params["id"])
        room = kws.request.query().get("room")
        if room:
            kws.join(room)

    if node is not None:
        hub.federate(node)
    return hub


class Bus:
    """Carries each node's relays to all the others, then lets each client pump."""

    def __init__(self, *nodes: tuple[Hub, TestClient]) -> None:
        self.nodes = list(nodes)
        self.carried: list[Relay] = []

    def flush(self) -> None:
        for _ in range(20):
            moved = False
            for hub, _client in self.nodes:
                for relay in hub.drain_relays():
                    moved = True
                    self.carried.append(relay)
                    for other, client in self.nodes:
                        if other is not hub:
                            other.receive_relay(relay)
                            client.pump()
            if not moved:
                return
        raise AssertionError("relays keep coming")  # pragma: no cover


@pytest.fixture
def two() -> tuple[Hub, TestClient, Hub, TestClient, Bus]:
    a, b = make_hub("node-a"), make_hub("node-b")
    ca, cb = TestClient(a), TestClient(b)
    return a, ca, b, cb, Bus((a, ca), (b, cb))


def connect(client: TestClient, bus: Bus, path: str) -> WebSocketTestSession:
    session = client.websocket_connect(path)
    bus.flush()
    return session


def hear_dings(*hubs: tuple[Hub, str]) -> list[tuple[str, str, bytes]]:
    """Record ``(node, id attribute, data)`` for every ``ding`` event on these hubs."""
    seen: list[tuple[str, str, bytes]] = []
    for hub, name in hubs:

        @hub.on("ding")
        def heard(ep: EventPayload, name: str = name) -> None:
            seen.append((name, ep.kws.get_attribute("id"), ep.data))

    return seen


def nothing_for(*sessions: WebSocketTestSession) -> None:
    for session in sessions:
        assert session.pending == 0


# -- Relay values ------------------------------------------------------------------------


def test_a_relay_is_validated() -> None:
    with pytest.raises(LocalProtocolError, match="node"):
        BroadcastRelay(node="")
    with pytest.raises(LocalProtocolError, match="room name"):
        RoomRelay(node="n", room="")
    with pytest.raises(LocalProtocolError, match="event name"):
        FireRelay(node="n", event="")
    with pytest.raises(LocalProtocolError, match="room name"):
        FireRelay(node="n", event="e", room="")
    relay = RoomRelay(node="n", room="r", data=b"x", kind=BINARY, exclude="u")
    assert (relay.op, relay.room, relay.data, relay.kind, relay.exclude) == (
        "room",
        "r",
        b"x",
        BINARY,
        "u",
    )
    assert isinstance(relay, Relay)
    with pytest.raises(AttributeError):
        relay.room = "s"  # type: ignore[misc]
    with pytest.raises(TypeError):
        HelloRelay("n")  # type: ignore[call-arg]  # keyword-only


def test_one_class_per_relay_each_with_its_own_fields() -> None:
    kinds: list[type[Relay]] = [
        BroadcastRelay,
        RoomRelay,
        FireRelay,
        EmitRelay,
        PresenceRelay,
        AbsenceRelay,
        HelloRelay,
    ]
    assert [cls.op for cls in kinds] == [
        "broadcast",
        "room",
        "fire",
        "emit",
        "present",
        "absent",
        "hello",
    ]
    assert all(issubclass(cls, Relay) for cls in kinds)
    assert [f.name for f in dataclasses.fields(HelloRelay)] == ["node"]
    assert [f.name for f in dataclasses.fields(PresenceRelay)] == ["node", "uuids", "part", "parts"]
    assert not hasattr(HelloRelay(node="n"), "__dict__")  # slotted


def test_the_old_relay_spelling_still_builds_the_right_class_with_a_warning() -> None:
    expected: list[tuple[dict[str, Any], Relay]] = [
        ({"op": "hello", "node": "n"}, HelloRelay(node="n")),
        ({"op": "present", "node": "n", "uuids": ("a",)}, PresenceRelay(node="n", uuids=("a",))),
        ({"op": "absent", "node": "n", "uuids": ("a",)}, AbsenceRelay(node="n", uuids=("a",))),
        (
            {"op": "broadcast", "node": "n", "data": b"x", "kind": BINARY, "exclude": "u"},
            BroadcastRelay(node="n", data=b"x", kind=BINARY, exclude="u"),
        ),
        (
            {"op": "room", "node": "n", "room": "r", "data": b"x", "room_unused": None},
            RoomRelay(node="n", room="r", data=b"x"),
        ),
        (
            {"op": "emit", "node": "n", "uuids": ("a",), "data": b"x", "room": None},
            EmitRelay(node="n", uuids=("a",), data=b"x"),
        ),
        (
            {"op": "fire", "node": "n", "event": "e", "data": b"d", "kind": TEXT},
            FireRelay(node="n", event="e", data=b"d"),
        ),
    ]
    for old, new in expected:
        with pytest.warns(DeprecationWarning, match=r"Relay\(op=\.\.\.\) is deprecated"):
            made = Relay(**old)
        assert type(made) is type(new)
        assert made == new
    refused = [
        ({"op": "shout", "node": "n"}, "unknown relay op"),
        ({"op": "room", "node": "n"}, "room name"),
        ({"op": "fire", "node": "n"}, "event name"),
        ({"op": "broadcast", "node": "n", "room": "r"}, "no 'room'"),  # it could not carry it
    ]
    for old, error in refused:
        with (
            pytest.warns(DeprecationWarning, match="deprecated"),
            pytest.raises(LocalProtocolError, match=error),
        ):
            Relay(**old)


def test_a_relay_of_a_kind_the_hub_does_not_know_is_refused() -> None:
    class Odd(Relay):
        node = "node-b"

    hub = make_hub("node-a")
    with pytest.raises(LocalProtocolError, match="unknown relay"):
        hub.receive_relay(Odd())


# -- turning it on -----------------------------------------------------------------------


def test_federate_is_idempotent_and_refuses_a_second_identity() -> None:
    hub = Hub()
    assert hub.node_id is None
    with pytest.raises(LocalProtocolError):
        hub.federate("")
    hub.federate("n1")
    hub.federate("n1")
    assert hub.node_id == "n1"
    with pytest.raises(LocalProtocolError, match="already federated"):
        hub.federate("n2")


def test_a_hub_that_is_not_federated_queues_no_relays_and_behaves_as_before() -> None:
    hub = make_hub(None)
    client = TestClient(hub)
    woken: list[int] = []
    hub.set_relay_wakeup(lambda: woken.append(1))
    one = client.websocket_connect("/ws/one?room=r")
    two = client.websocket_connect("/ws/two?room=r")
    hub.broadcast("all")
    hub.to("r").emit("room")
    hub.emit_to(one.uuid, "direct")
    hub.emit_to_list([one.uuid, "nobody", one.uuid], "list")
    hub.fire("custom", "x")
    client.pump()
    assert [one.receive_text() for _ in range(4)] == ["all", "room", "direct", "list"]
    assert [two.receive_text() for _ in range(2)] == ["all", "room"]
    with pytest.raises(UnknownConnection):
        hub.emit_to("nobody", "x")
    one.close()
    assert hub.drain_relays() == []
    assert woken == []
    assert hub.all_connections == (two.uuid,)
    assert hub.remote_nodes == ()
    with pytest.raises(LocalProtocolError, match="federated"):
        hub.receive_relay(HelloRelay(node="x"))


# -- messages across nodes ---------------------------------------------------------------


def test_broadcast_reaches_every_node_and_honours_exclude(
    two: tuple[Hub, TestClient, Hub, TestClient, Bus],
) -> None:
    a, ca, b, cb, bus = two
    a1, b1, b2 = connect(ca, bus, "/ws/a1"), connect(cb, bus, "/ws/b1"), connect(cb, bus, "/ws/b2")
    a.broadcast("hello all")
    bus.flush()
    assert [s.receive_text() for s in (a1, b1, b2)] == ["hello all"] * 3
    b.broadcast(b"\x00bin", BINARY, exclude=b1.uuid)
    bus.flush()
    assert a1.receive_bytes() == b"\x00bin"
    assert b2.receive_bytes() == b"\x00bin"
    a.broadcast("skip remote", exclude=b2.uuid)  # a remote uuid is skipped over there
    bus.flush()
    assert [s.receive_text() for s in (a1, b1)] == ["skip remote"] * 2
    nothing_for(a1, b1, b2)


def test_a_connections_broadcast_skips_itself_everywhere(
    two: tuple[Hub, TestClient, Hub, TestClient, Bus],
) -> None:
    a, ca, _b, cb, bus = two

    @a.on("message")
    def relay_it(ep: EventPayload) -> None:
        ep.kws.broadcast(ep.data, except_self=True)

    a1, a2, b1 = connect(ca, bus, "/ws/a1"), connect(ca, bus, "/ws/a2"), connect(cb, bus, "/ws/b1")
    a1.send_text("from a1")
    bus.flush()
    assert a2.receive_text() == "from a1"
    assert b1.receive_text() == "from a1"
    nothing_for(a1, a2, b1)
    relay = next(r for r in bus.carried if isinstance(r, BroadcastRelay))
    assert (relay.node, relay.exclude, relay.kind) == ("node-a", a1.uuid, TEXT)


def test_room_emits_span_nodes(two: tuple[Hub, TestClient, Hub, TestClient, Bus]) -> None:
    a, ca, b, cb, bus = two

    @b.on("message")
    def to_room(ep: EventPayload) -> None:
        ep.kws.to("lobby").emit(ep.data)

    a1 = connect(ca, bus, "/ws/a1?room=lobby")
    a2 = connect(ca, bus, "/ws/a2")
    b1 = connect(cb, bus, "/ws/b1?room=lobby")
    b2 = connect(cb, bus, "/ws/b2?room=lobby")
    a.to("lobby").emit("from the hub")
    bus.flush()
    assert [s.receive_text() for s in (a1, b1, b2)] == ["from the hub"] * 3
    b1.send_text("from b1")
    bus.flush()
    assert a1.receive_text() == "from b1"
    assert b2.receive_text() == "from b1"
    a.to("nobody-here").emit("lost")
    bus.flush()
    nothing_for(a1, a2, b1, b2)


def test_room_fires_span_nodes_and_skip_the_sender(
    two: tuple[Hub, TestClient, Hub, TestClient, Bus],
) -> None:
    # Regression: Room.emit was relayed to the other nodes, Room.fire was not.
    a, ca, b, cb, bus = two
    seen = hear_dings((a, "a"), (b, "b"))

    a1 = connect(ca, bus, "/ws/a1?room=lobby")
    connect(ca, bus, "/ws/a2")
    b1 = connect(cb, bus, "/ws/b1?room=lobby")
    connect(cb, bus, "/ws/b2?room=lobby")
    bus.carried.clear()
    a.to("lobby").fire("ding", "all of it")
    bus.flush()
    everyone = [("a", "a1"), ("b", "b1"), ("b", "b2")]
    assert sorted(seen) == [(node, who, b"all of it") for node, who in everyone]
    assert bus.carried == [FireRelay(node="node-a", event="ding", data=b"all of it", room="lobby")]
    seen.clear()
    b.get(b1.uuid).to("lobby").fire("ding", b"not me")
    bus.flush()
    assert sorted(seen) == [("a", "a1", b"not me"), ("b", "b2", b"not me")]
    seen.clear()
    # A relay naming a connection of the receiving node as the sender skips it there too.
    a.receive_relay(FireRelay(node="node-b", event="ding", room="lobby", exclude=a1.uuid))
    b.to("empty").fire("ding")
    bus.flush()
    assert seen == []


def test_hub_fire_runs_listeners_on_every_node_but_a_connections_fire_stays_local(
    two: tuple[Hub, TestClient, Hub, TestClient, Bus],
) -> None:
    a, ca, b, cb, bus = two
    seen = hear_dings((a, "a"), (b, "b"))

    a1, b1 = connect(ca, bus, "/ws/a1"), connect(cb, bus, "/ws/b1")
    a.fire("ding", "text")
    bus.flush()
    b.fire("ding", b"raw")
    bus.flush()
    assert seen == [
        ("a", "a1", b"text"),
        ("b", "b1", b"text"),
        ("b", "b1", b"raw"),
        ("a", "a1", b"raw"),
    ]
    seen.clear()
    b.get(b1.uuid).fire("ding", "mine")
    bus.flush()
    assert seen == [("b", "b1", b"mine")]
    assert not any(isinstance(r, FireRelay) and r.data == b"mine" for r in bus.carried)
    nothing_for(a1, b1)


# -- emit_to and presence ----------------------------------------------------------------


def test_emit_to_a_connection_on_another_node(
    two: tuple[Hub, TestClient, Hub, TestClient, Bus],
) -> None:
    a, ca, _b, cb, bus = two
    a1, b1, b2 = connect(ca, bus, "/ws/a1"), connect(cb, bus, "/ws/b1"), connect(cb, bus, "/ws/b2")
    assert set(a.all_connections) == {a1.uuid, b1.uuid, b2.uuid}
    assert a.connections == (a1.uuid,)
    assert a.remote_nodes == ("node-b",)
    a.emit_to(b1.uuid, "psst")
    a.emit_to(a1.uuid, "local")
    bus.flush()
    assert b1.receive_text() == "psst"
    assert a1.receive_text() == "local"
    nothing_for(a1, b1, b2)
    b1.close()
    bus.flush()
    with pytest.raises(UnknownConnection):
        a.emit_to(b1.uuid, "gone")
    assert set(a.all_connections) == {a1.uuid, b2.uuid}
    cb.hub.close(b2.uuid)  # a server-side close is an absence too
    bus.flush()
    with pytest.raises(UnknownConnection):
        a.emit_to(b2.uuid, "gone")


def test_emit_to_list_splits_local_remote_and_unknown(
    two: tuple[Hub, TestClient, Hub, TestClient, Bus],
) -> None:
    a, ca, _b, cb, bus = two
    a1, b1, b2 = connect(ca, bus, "/ws/a1"), connect(cb, bus, "/ws/b1"), connect(cb, bus, "/ws/b2")
    bus.carried.clear()
    a.emit_to_list([a1.uuid, b1.uuid, "nobody", b1.uuid, a1.uuid], b"both", BINARY)
    bus.flush()
    assert a1.receive_bytes() == b"both"
    assert b1.receive_bytes() == b"both"
    nothing_for(a1, b1, b2)
    assert bus.carried == [EmitRelay(node="node-a", uuids=(b1.uuid,), data=b"both", kind=BINARY)]
    a.emit_to_list([a1.uuid], "local only")
    a.emit_to_list(["nobody"], "to no one")
    assert a.drain_relays() == []
    ca.pump()
    assert a1.receive_text() == "local only"


def test_node_of_names_the_node_that_has_a_connection(
    two: tuple[Hub, TestClient, Hub, TestClient, Bus],
) -> None:
    a, ca, _b, cb, bus = two
    a1, b1 = connect(ca, bus, "/ws/a1"), connect(cb, bus, "/ws/b1")
    assert (a.node_of(a1.uuid), a.node_of(b1.uuid), a.node_of("nobody")) == (
        "node-a",
        "node-b",
        None,
    )
    b1.close()
    bus.flush()
    assert a.node_of(b1.uuid) is None  # gone: a direct message has nowhere to go
    assert make_hub(None).node_of("anyone") is None


def test_hello_is_answered_with_the_local_connections() -> None:
    a = make_hub("node-a")
    ca = TestClient(a)
    a1, a2 = ca.websocket_connect("/ws/a1"), ca.websocket_connect("/ws/a2")
    assert a.drain_relays() == [
        PresenceRelay(node="node-a", uuids=(a1.uuid,)),
        PresenceRelay(node="node-a", uuids=(a2.uuid,)),
    ]
    a.receive_relay(HelloRelay(node="node-late"))
    assert a.drain_relays() == [PresenceRelay(node="node-a", uuids=(a1.uuid, a2.uuid), parts=1)]
    assert a.remote_nodes == ("node-late",)


def test_a_late_node_learns_presence_through_hello() -> None:
    a, b = make_hub("node-a"), make_hub("node-b")
    ca, cb = TestClient(a), TestClient(b)
    a1 = ca.websocket_connect("/ws/a1")
    a.drain_relays()  # node-b was not listening yet: the present relay is lost
    bus = Bus((a, ca), (b, cb))
    b.receive_relay(PresenceRelay(node="node-a", uuids=()))
    with pytest.raises(UnknownConnection):
        b.emit_to(a1.uuid, "x")
    a.receive_relay(HelloRelay(node="node-b"))
    bus.flush()
    b.emit_to(a1.uuid, "found you")
    bus.flush()
    assert a1.receive_text() == "found you"


def test_forget_node_drops_its_connections(
    two: tuple[Hub, TestClient, Hub, TestClient, Bus],
) -> None:
    a, _ca, _b, cb, bus = two
    b1 = connect(cb, bus, "/ws/b1")
    a.forget_node("node-b")
    a.forget_node("never-heard-of")
    assert a.remote_nodes == ()
    with pytest.raises(UnknownConnection):
        a.emit_to(b1.uuid, "x")
    a.receive_relay(AbsenceRelay(node="node-b", uuids=(b1.uuid,)))  # late: ignored
    assert a.all_connections == ()


def test_relays_from_this_node_are_ignored() -> None:
    a = make_hub("node-a")
    ca = TestClient(a)
    a1 = ca.websocket_connect("/ws/a1")
    a.drain_relays()
    a.receive_relay(BroadcastRelay(node="node-a", data=b"echo"))
    a.receive_relay(PresenceRelay(node="node-a", uuids=("ghost",)))
    a.receive_relay(HelloRelay(node="node-a"))
    ca.pump()
    assert a1.pending == 0
    assert a.all_connections == (a1.uuid,)
    assert a.drain_relays() == []


def test_receive_relay_does_not_relay_again(
    two: tuple[Hub, TestClient, Hub, TestClient, Bus],
) -> None:
    _a, ca, b, cb, bus = two
    connect(ca, bus, "/ws/a1")
    b1 = connect(cb, bus, "/ws/b1?room=r")
    for relay in (
        BroadcastRelay(node="node-a", data=b"1"),
        RoomRelay(node="node-a", room="r", data=b"2"),
        EmitRelay(node="node-a", uuids=(b1.uuid, "elsewhere"), data=b"3"),
        FireRelay(node="node-a", event="nothing-listens"),
    ):
        b.receive_relay(relay)
    cb.pump()
    assert [b1.receive_text() for _ in range(3)] == ["1", "2", "3"]
    assert b.drain_relays() == []


def test_a_remote_relay_wakes_the_driver_of_the_connections() -> None:
    b = make_hub("node-b")
    cb = TestClient(b)
    b1 = cb.websocket_connect("/ws/b1")
    woken: list[int] = []
    b.set_wakeup(lambda: woken.append(1))
    b.receive_relay(BroadcastRelay(node="node-a", data=b"wake"))
    assert woken == [1]
    cb.pump()
    assert b1.receive_text() == "wake"


# -- identity ----------------------------------------------------------------------------


def test_rekey_is_announced_as_absent_then_present(
    two: tuple[Hub, TestClient, Hub, TestClient, Bus],
) -> None:
    a, _ca, b, cb, bus = two
    b1 = connect(cb, bus, "/ws/b1")
    old = b1.uuid
    bus.carried.clear()
    b.get(old).uuid = "user-42"
    bus.flush()
    assert bus.carried == [
        AbsenceRelay(node="node-b", uuids=(old,)),
        PresenceRelay(node="node-b", uuids=("user-42",)),
    ]
    a.emit_to("user-42", "renamed")
    bus.flush()
    assert b1.receive_text() == "renamed"
    with pytest.raises(UnknownConnection):
        a.emit_to(old, "x")


def test_a_uuid_in_use_on_another_node_is_a_duplicate(
    two: tuple[Hub, TestClient, Hub, TestClient, Bus],
) -> None:
    a, ca, _b, cb, bus = two
    b1 = connect(cb, bus, "/ws/b1")
    a1 = connect(ca, bus, "/ws/a1")
    with pytest.raises(DuplicateUUID):
        a.get(a1.uuid).uuid = b1.uuid
    assert a.get(a1.uuid).uuid == a1.uuid

    @a.before_upgrade
    def pick(request: Request) -> Accept:
        return Accept(uuid=request.query().get("uuid"))

    with pytest.raises(WebSocketRejected) as refused:
        ca.websocket_connect(f"/ws/x?uuid={b1.uuid}")
    assert refused.value.status == 409

    c = Hub(uuid_factory=lambda: b1.uuid)
    c.websocket("/ws/:id", lambda kws: None)
    c.federate("node-c")
    c.receive_relay(PresenceRelay(node="node-b", uuids=(b1.uuid,)))
    answer = c.open(Request.from_target("/ws/x", [("host", "h")]))
    assert isinstance(answer, Reject)
    assert answer.status == 409
    assert c.connections == ()


# -- the relay queue ---------------------------------------------------------------------


def test_relay_wakeup_is_called_once_until_the_next_drain() -> None:
    a = make_hub("node-a")
    ca = TestClient(a)
    woken: list[int] = []
    a.set_relay_wakeup(lambda: woken.append(len(a._relays)))
    a1 = ca.websocket_connect("/ws/a1")  # inside an input call too
    a.broadcast("one")
    a.broadcast("two", 2)  # type: ignore[arg-type]  # a plain opcode works as a kind
    assert woken == [1]
    relays = a.drain_relays()
    assert [r.op for r in relays] == ["present", "broadcast", "broadcast"]
    assert relays[2] == BroadcastRelay(node="node-a", data=b"two", kind=BINARY)
    a.broadcast("three")
    assert woken == [1, 1]
    a.set_relay_wakeup(None)
    a.drain_relays()
    a.broadcast("four")
    assert woken == [1, 1]
    assert len(a.drain_relays()) == 1
    ca.pump()
    assert a1.pending == 4


def test_each_relay_class_is_found_by_its_op() -> None:
    kinds: tuple[type[Relay], ...] = (BroadcastRelay, RoomRelay, FireRelay, EmitRelay)
    kinds += (PresenceRelay, AbsenceRelay, HelloRelay)
    for cls in kinds:
        assert Relay.for_op(cls.op) is cls
    for wrong in ("shout", "", ["room"]):
        with pytest.raises(LocalProtocolError, match="unknown relay op"):
            Relay.for_op(wrong)  # type: ignore[arg-type]
