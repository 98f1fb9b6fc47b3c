"""Federation without ghosts or unbounded queues (no network).

Presence snapshots replace what a node knew of another, silent nodes are
forgotten after ``node_ttl`` on the clock the caller passes in, the relay queue
is bounded whether or not anything drains it, and a relay too large for the
backplane is refused before anything is sent.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest
from test_federation import Bus, connect, make_hub

import ikisocket_core._federation as federation_module
from ikisocket_core import (
    AbsenceRelay,
    Accept,
    BroadcastRelay,
    EmitRelay,
    EventPayload,
    FireRelay,
    HelloRelay,
    Hub,
    LocalProtocolError,
    PresenceRelay,
    RelayTooLarge,
    Request,
    RoomRelay,
    UnknownConnection,
)
from ikisocket_core.testing import TestClient

# -- settings ----------------------------------------------------------------------------


def test_federate_checks_and_keeps_its_settings() -> None:
    hub = Hub()
    for wrong in (
        {"node_ttl": 0},
        {"node_ttl": -1.0},
        {"presence_interval": 0},
        {"max_relays": 0},
        {"max_relays": 1.5},
        {"max_relay_size": 0},
        {"max_relay_size": True},
    ):
        with pytest.raises(LocalProtocolError, match="must be"):
            hub.federate("n", **wrong)
    assert hub.node_id is None
    hub.federate("n")
    assert (hub.max_relays, hub.max_relay_size, hub.dropped_relays) == (10_000, 512 * 1024, 0)
    hub.federate("n", max_relay_size=10)
    hub.federate("n", max_relays=3)  # the other settings stay
    assert (hub.max_relays, hub.max_relay_size) == (3, 10)


def test_a_presence_relay_checks_its_parts() -> None:
    for part, parts in ((-1, 1), (0, -1), (1, 1), (2, 0), (True, 2), (0, 1.0)):
        with pytest.raises(LocalProtocolError, match="part"):
            PresenceRelay(node="n", part=part, parts=parts)  # type: ignore[arg-type]
    assert PresenceRelay(node="n", part=1, parts=2).parts == 2


# -- a bounded relay queue ---------------------------------------------------------------


def test_the_relay_queue_keeps_the_newest_when_nobody_drains(
    caplog: pytest.LogCaptureFixture,
) -> None:
    hub = make_hub("node-a")
    hub.federate("node-a", max_relays=3)
    with caplog.at_level(logging.WARNING, logger="ikisocket"):
        for n in range(5):
            hub.broadcast(f"m{n}")
    assert hub.dropped_relays == 2
    assert [r.data for r in hub.drain_relays()] == [b"m2", b"m3", b"m4"]  # type: ignore[attr-defined]
    warnings = [r for r in caplog.records if "relay queue full" in r.getMessage()]
    assert len(warnings) == 1  # one per backlog, not one per drop
    assert "max_relays=3" in warnings[0].getMessage()
    with caplog.at_level(logging.WARNING, logger="ikisocket"):
        for n in range(4):  # a new backlog after the drain: warned again
            hub.broadcast(f"n{n}")
    assert hub.dropped_relays == 3
    assert len([r for r in caplog.records if "relay queue full" in r.getMessage()]) == 2
    hub.federate("node-a", max_relays=1)  # shrinking the queue drops (and counts) the oldest
    assert hub.dropped_relays == 5
    assert hub.drain_relays() == [BroadcastRelay(node="node-a", data=b"n3")]


# -- relays too large for the backplane --------------------------------------------------


def test_a_relay_too_large_is_refused_before_anything_is_sent() -> None:
    a, b = make_hub("node-a"), make_hub("node-b")
    ca, cb = TestClient(a), TestClient(b)
    bus = Bus((a, ca), (b, cb))
    a1 = connect(ca, bus, "/ws/a1?room=r")
    b1 = connect(cb, bus, "/ws/b1?room=r")
    a.federate("node-a", max_relay_size=4)
    fired: list[bytes] = []

    @a.on("ding")
    def ding(ep: EventPayload) -> None:
        fired.append(ep.data)

    big, ok = "12345", "1234"
    attempts: tuple[Callable[[], None], ...] = (
        lambda: a.broadcast(big),
        lambda: a.to("r").emit(big),
        lambda: a.to("r").fire("ding", big),
        lambda: a.fire("ding", big),
        lambda: a.emit_to(b1.uuid, big),
        lambda: a.emit_to_list([a1.uuid, b1.uuid], big),
        lambda: a.get(a1.uuid).broadcast(big),
    )
    for attempt in attempts:
        with pytest.raises(RelayTooLarge) as refused:
            attempt()
        assert (refused.value.size, refused.value.limit) == (5, 4)
        assert "max_relay_size=4" in str(refused.value)
        assert isinstance(refused.value, ValueError)
    assert a.drain_relays() == []
    ca.pump()
    assert a1.pending == 0
    assert fired == []
    # At the limit it goes; a local-only emit is not limited.
    a.broadcast(ok)
    a.emit_to(a1.uuid, big)
    a.emit_to_list([a1.uuid], big)
    bus.flush()
    assert [a1.receive_text() for _ in range(3)] == [ok, big, big]
    assert b1.receive_text() == ok


def test_a_listener_that_relays_too_much_gets_an_error_event() -> None:
    a = make_hub("node-a")
    a.federate("node-a", max_relay_size=4)
    errors: list[BaseException | None] = []

    @a.on("message")
    def shout(ep: EventPayload) -> None:
        ep.kws.broadcast(ep.data + b"!")

    @a.on("error")
    def failed(ep: EventPayload) -> None:
        errors.append(ep.error)

    ca = TestClient(a)
    with ca.websocket_connect("/ws/a1") as a1:
        a1.send_text("abcd")
        ca.pump()
    assert len(errors) == 1
    assert isinstance(errors[0], RelayTooLarge)


# -- presence snapshots: replaced, not merged --------------------------------------------


def test_a_snapshot_replaces_what_was_known_of_a_node() -> None:
    a = make_hub("node-a")
    a.receive_relay(PresenceRelay(node="node-b", uuids=("u1", "ghost")))
    # The "absent" for the ghost was lost; the snapshot sets things right.
    a.receive_relay(PresenceRelay(node="node-b", uuids=("u1", "u2"), parts=1))
    assert sorted(a.all_connections) == ["u1", "u2"]
    with pytest.raises(UnknownConnection):
        a.emit_to("ghost", "x")
    a.emit_to("u2", "x")  # still relayed to its node
    assert a.drain_relays() == [EmitRelay(node="node-a", uuids=("u2",), data=b"x")]
    a.receive_relay(PresenceRelay(node="node-b", parts=1))  # an empty node
    assert a.remote_nodes == ("node-b",)
    assert a.all_connections == ()


def test_a_snapshot_in_parts_applies_only_when_complete_and_in_a_row() -> None:
    a = make_hub("node-a")
    a.receive_relay(PresenceRelay(node="n", uuids=("old",)))
    known = a.all_connections
    a.receive_relay(PresenceRelay(node="n", uuids=("p0",), part=0, parts=3))
    a.receive_relay(PresenceRelay(node="n", uuids=("p1",), part=1, parts=3))
    assert known == a.all_connections  # not yet
    a.receive_relay(PresenceRelay(node="n", uuids=("p2",), part=2, parts=3))
    assert list(a.all_connections) == ["p0", "p1", "p2"]
    # A part went missing: that snapshot is ignored, the next complete one applies.
    a.receive_relay(PresenceRelay(node="n", uuids=("q0",), part=0, parts=3))
    a.receive_relay(PresenceRelay(node="n", uuids=("q2",), part=2, parts=3))
    a.receive_relay(PresenceRelay(node="n", uuids=("q1",), part=1, parts=2))  # no start
    assert list(a.all_connections) == ["p0", "p1", "p2"]
    a.receive_relay(PresenceRelay(node="n", uuids=("r0",), part=0, parts=2))
    a.forget_node("n")  # a snapshot under way is forgotten too
    a.receive_relay(PresenceRelay(node="n", uuids=("r1",), part=1, parts=2))
    assert list(a.all_connections) == []


def test_a_large_node_sends_its_snapshot_in_parts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(federation_module, "_PRESENCE_CHUNK", 2)
    a, b = make_hub("node-a"), make_hub("node-b")
    ca = TestClient(a)
    sessions = [ca.websocket_connect(f"/ws/a{n}") for n in range(5)]
    a.drain_relays()
    snapshot = a.presence_relays()
    assert [(r.part, r.parts, len(r.uuids)) for r in snapshot] == [(0, 3, 2), (1, 3, 2), (2, 3, 1)]
    b.receive_relay(PresenceRelay(node="node-a", uuids=("ghost",)))
    for relay in snapshot:
        b.receive_relay(relay)
    assert b.all_connections == tuple(s.uuid for s in sessions)
    assert a.drain_relays() == []  # presence_relays queues nothing
    with pytest.raises(LocalProtocolError, match="federated"):
        Hub().presence_relays()


def test_hello_after_news_and_absence_still_converges() -> None:
    a, b = make_hub("node-a"), make_hub("node-b")
    ca, cb = TestClient(a), TestClient(b)
    bus = Bus((a, ca), (b, cb))
    a1 = connect(ca, bus, "/ws/a1")
    a2 = ca.websocket_connect("/ws/a2")
    a2.close()
    a.drain_relays()  # a2's present and absent are lost
    b.receive_relay(PresenceRelay(node="node-a", uuids=(a2.uuid,)))  # a stale, merged news
    assert a2.uuid in b.all_connections
    b.receive_relay(HelloRelay(node="node-a"))  # b answers with its own snapshot
    a.receive_relay(HelloRelay(node="node-b"))
    bus.flush()
    assert b.all_connections == (a1.uuid,)


# -- node heartbeats and the TTL ---------------------------------------------------------


def test_tick_federation_queues_the_snapshot_every_interval() -> None:
    a = make_hub("node-a")
    with pytest.raises(LocalProtocolError, match="federated"):
        Hub().tick_federation(0.0)
    ca = TestClient(a)
    a1 = ca.websocket_connect("/ws/a1")
    a.drain_relays()
    assert a.tick_federation(100.0) == ()  # no interval, no TTL: nothing
    assert a.drain_relays() == []
    a.federate("node-a", presence_interval=2.0)
    a.tick_federation(100.0)  # the first tick sends one at once
    assert a.drain_relays() == [PresenceRelay(node="node-a", uuids=(a1.uuid,), parts=1)]
    a.tick_federation(101.9)
    assert a.drain_relays() == []
    a.tick_federation(102.0)
    assert a.drain_relays() == [PresenceRelay(node="node-a", uuids=(a1.uuid,), parts=1)]


def test_a_silent_node_is_forgotten_after_its_ttl() -> None:
    a = make_hub("node-a")
    a.federate("node-a", node_ttl=6.0)
    a.receive_relay(PresenceRelay(node="dead", uuids=("d1",), parts=1), now=10.0)
    a.receive_relay(PresenceRelay(node="alive", uuids=("l1",), parts=1), now=10.0)
    a.receive_relay(PresenceRelay(node="timeless", uuids=("t1",)))  # no clock yet: never heard
    a.emit_to("d1", "still there")
    assert a.tick_federation(15.0) == ()
    a.receive_relay(BroadcastRelay(node="alive", data=b"any relay is a sign of life"), now=14.0)
    assert a.tick_federation(16.0) == ("dead",)
    assert set(a.remote_nodes) == {"alive", "timeless"}
    with pytest.raises(UnknownConnection):
        a.emit_to("d1", "gone")
    # After a tick, receive_relay without ``now`` counts on the tick's clock.
    a.receive_relay(HelloRelay(node="late"))
    assert a.tick_federation(19.9) == ()
    assert a.tick_federation(20.0) == ("alive",)
    assert a.tick_federation(22.0) == ("late",)
    assert a.remote_nodes == ("timeless",)


def test_a_uuid_held_by_a_dead_node_is_free_again_within_the_ttl() -> None:
    a = make_hub("node-a")
    a.federate("node-a", node_ttl=3.0)

    @a.before_upgrade
    def pick(request: Request) -> Accept:
        return Accept(uuid=request.query().get("uuid"))

    ca = TestClient(a)
    a.receive_relay(PresenceRelay(node="node-b", uuids=("taken",), parts=1), now=0.0)
    with pytest.raises(Exception, match="409"):
        ca.websocket_connect("/ws/x?uuid=taken")
    a.tick_federation(2.9)
    assert "taken" in a.all_connections
    a.tick_federation(3.0)
    with ca.websocket_connect("/ws/x?uuid=taken") as session:
        assert session.uuid == "taken"


def test_emit_to_a_uuid_that_exists_nowhere_raises_on_the_calling_node() -> None:
    a, b = make_hub("node-a"), make_hub("node-b")
    ca, cb = TestClient(a), TestClient(b)
    bus = Bus((a, ca), (b, cb))
    b1 = connect(cb, bus, "/ws/b1")
    a.emit_to(b1.uuid, "there")
    a.receive_relay(AbsenceRelay(node="node-b", uuids=(b1.uuid,)))
    with pytest.raises(UnknownConnection):
        a.emit_to(b1.uuid, "gone")
    with pytest.raises(UnknownConnection):
        a.emit_to("never-existed", "x")
    relays = a.drain_relays()
    assert [type(r) for r in relays] == [EmitRelay]


def test_room_and_fire_relays_still_flow_with_the_new_order() -> None:
    a, b = make_hub("node-a"), make_hub("node-b")
    ca, cb = TestClient(a), TestClient(b)
    bus = Bus((a, ca), (b, cb))
    connect(ca, bus, "/ws/a1?room=r")
    b1 = connect(cb, bus, "/ws/b1?room=r")
    a.to("r").emit("hi")
    a.to("r").fire("ding", "x")
    relays = a.drain_relays()
    assert relays == [
        RoomRelay(node="node-a", room="r", data=b"hi"),
        FireRelay(node="node-a", event="ding", data=b"x", room="r"),
    ]
    for relay in relays:
        b.receive_relay(relay)
    cb.pump()
    assert b1.receive_text() == "hi"


def test_a_relay_loss_reaches_every_connections_error_listeners() -> None:
    with pytest.raises(LocalProtocolError, match="federated"):
        Hub().receive_relay_loss(RuntimeError("lost"))
    a = make_hub("node-a")
    seen: list[tuple[str, BaseException | None]] = []

    @a.on("error")
    def failed(ep: EventPayload) -> None:
        seen.append((ep.kws.get_attribute("id"), ep.error))
        ep.kws.emit("please reload")

    ca = TestClient(a)
    a1, a2 = ca.websocket_connect("/ws/a1"), ca.websocket_connect("/ws/a2")
    ca.pump()
    woken: list[bool] = []
    a.set_wakeup(lambda: woken.append(True))
    lost = RuntimeError("lost 3 relays")
    a.receive_relay_loss(lost)
    assert seen == [("a1", lost), ("a2", lost)]
    assert woken == [True]  # once, for what the listeners queued
    ca.pump()
    assert a1.receive_text() == a2.receive_text() == "please reload"
    assert a1.pending == a2.pending == 0
