"""Named events (Socket.IO's ``emit``) cross nodes: hubs paired in memory, no Redis.

Each hub mounts Socket.IO; virtual Socket.IO sessions and plain WebSocket
sessions on each node check that every target form of ``emit_event`` reaches
the other nodes' clients as the named event (plain clients as JSON text).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

import pytest
from test_federation import Bus, make_hub

from ikisocket_core import (
    EventRelay,
    Hub,
    LocalProtocolError,
    Relay,
    RelayTooLarge,
)
from ikisocket_core.testing import SocketIOTestSession, TestClient


def mounted(node: str) -> tuple[Hub, TestClient]:
    hub = make_hub(node)
    hub.socketio(namespaces=["/chat"])
    return hub, TestClient(hub)


@pytest.fixture
def three() -> tuple[list[Hub], list[TestClient], Bus]:
    nodes = [mounted(name) for name in ("node-a", "node-b", "node-c")]
    return [h for h, _ in nodes], [c for _, c in nodes], Bus(*nodes)


def sio(
    client: TestClient, bus: Bus, room: str | None = None, ns: str = "/"
) -> SocketIOTestSession:
    session = client.socketio_connect(namespace=ns)
    if room is not None:
        session.kws.join(room)
    bus.flush()
    return session


def quiet(*sessions: SocketIOTestSession) -> None:
    for session in sessions:
        assert session.pending == 0


def test_hub_emit_event_reaches_socketio_and_plain_clients_on_every_node(
    three: tuple[list[Hub], list[TestClient], Bus],
) -> None:
    (a, _b, _c), (ca, cb, cc), bus = three
    here, there, far = sio(ca, bus), sio(cb, bus), sio(cc, bus)
    plain = cc.websocket_connect("/ws/p")
    bus.flush()
    a.emit_event("news", {"id": 1}, "two")
    bus.flush()
    for session in (here, there, far):
        assert session.receive_event("news") == ({"id": 1}, "two")
    assert json.loads(plain.receive_text()) == ["news", {"id": 1}, "two"]
    quiet(here, there, far)
    assert sum(isinstance(r, EventRelay) for r in bus.carried) == 1  # encoded once


def test_hub_emit_event_honours_the_namespace_on_other_nodes(
    three: tuple[list[Hub], list[TestClient], Bus],
) -> None:
    (a, _b, _c), (_ca, cb, cc), bus = three
    root, chat = sio(cb, bus), sio(cc, bus, ns="/chat")
    a.emit_event("tick", 1, namespace="/chat")
    bus.flush()
    assert chat.receive_event("tick") == (1,)
    quiet(root)
    a.emit_event("tock", namespace=None)
    bus.flush()
    assert root.receive_event("tock") == ()
    assert chat.receive_event("tock") == ()


def test_a_room_emit_event_reaches_members_on_every_node_but_the_sender(
    three: tuple[list[Hub], list[TestClient], Bus],
) -> None:
    (a, b, _c), (ca, cb, cc), bus = three
    sender, member, other = sio(ca, bus, "lobby"), sio(cb, bus, "lobby"), sio(cc, bus)
    plain = cc.websocket_connect("/ws/p?room=lobby")
    bus.flush()
    a.to("lobby").emit_event("say", "hi")
    bus.flush()
    assert sender.receive_event("say") == ("hi",)
    assert member.receive_event("say") == ("hi",)
    assert json.loads(plain.receive_text()) == ["say", "hi"]
    quiet(other)
    b.get(member.uuid).to("lobby").emit_event("say", "from b")  # a connection's view skips it
    bus.flush()
    assert sender.receive_event("say") == ("from b",)
    assert json.loads(plain.receive_text()) == ["say", "from b"]
    quiet(member, other)


def test_a_namespace_room_emit_event_crosses_nodes_in_its_namespace_only(
    three: tuple[list[Hub], list[TestClient], Bus],
) -> None:
    (a, _b, _c), (_ca, cb, cc), bus = three
    chat, root = sio(cb, bus, "lobby", ns="/chat"), sio(cc, bus, "lobby")
    sio_a = a._sio
    assert sio_a is not None
    sio_a.of("/chat").to("lobby").emit_event("say", "in chat")
    bus.flush()
    assert chat.receive_event("say") == ("in chat",)
    quiet(root)


def test_emit_event_to_uuids_reaches_connections_of_other_nodes(
    three: tuple[list[Hub], list[TestClient], Bus],
) -> None:
    (a, _b, _c), (ca, cb, cc), bus = three
    mine, theirs, far, left_out = sio(ca, bus), sio(cb, bus), sio(cc, bus), sio(cc, bus)
    a.emit_event("dm", "psst", to=[theirs.uuid])
    bus.flush()
    assert theirs.receive_event("dm") == ("psst",)
    quiet(mine, far, left_out)
    a.emit_event("dm", "all", to=[mine.uuid, theirs.uuid, far.uuid, "nobody"])
    bus.flush()
    for session in (mine, theirs, far):
        assert session.receive_event("dm") == ("all",)
    quiet(left_out)
    relays = [r for r in bus.carried if isinstance(r, EventRelay)]
    assert [set(r.uuids) for r in relays] == [{theirs.uuid}, {theirs.uuid, far.uuid}]
    a.emit_event("dm", "local only", to=[mine.uuid, "nobody"])
    bus.flush()
    assert mine.receive_event("dm") == ("local only",)
    assert len([r for r in bus.carried if isinstance(r, EventRelay)]) == 2  # nothing to relay


def test_binary_arguments_cross_nodes_and_plain_clients_there_are_skipped(
    three: tuple[list[Hub], list[TestClient], Bus],
) -> None:
    (a, _b, _c), (_ca, cb, _cc), bus = three
    there = sio(cb, bus)
    plain = cb.websocket_connect("/ws/p")
    bus.flush()
    a.emit_event("file", {"name": "x", "body": b"\x00\x01"}, b"\xff")
    bus.flush()
    assert there.receive_event("file") == ({"name": "x", "body": b"\x00\x01"}, b"\xff")
    assert plain.pending == 0


def test_a_too_large_event_is_refused_before_anything_is_sent(
    three: tuple[list[Hub], list[TestClient], Bus],
) -> None:
    (a, _b, _c), (ca, cb, _cc), bus = three
    a.federate("node-a", max_relay_size=64)
    here, there = sio(ca, bus, "lobby"), sio(cb, bus, "lobby")
    sends: list[Callable[[], None]] = [
        lambda: a.emit_event("big", "x" * 40, b"y" * 40),
        lambda: a.to("lobby").emit_event("big", "x" * 80),
        lambda: a.emit_event("big", "x" * 80, to=[there.uuid]),
    ]
    for send in sends:
        with pytest.raises(RelayTooLarge):
            send()
    bus.flush()
    quiet(here, there)


def test_an_unfederated_hub_queues_no_event_relay() -> None:
    hub = Hub()
    hub.socketio()
    session = TestClient(hub).socketio_connect()
    session.kws.join("lobby")
    hub.emit_event("one")
    hub.to("lobby").emit_event("two")
    hub.emit_event("three", to=[session.uuid])
    assert [session.receive().name for _ in range(3)] == ["one", "two", "three"]
    assert hub.drain_relays() == []


def test_a_hub_without_socketio_shows_a_remote_event_to_plain_clients() -> None:
    a, b = make_hub("node-a"), make_hub("node-b")
    ca, cb = TestClient(a), TestClient(b)
    bus = Bus((a, ca), (b, cb))
    plain = cb.websocket_connect("/ws/p")
    bus.flush()
    a.emit_event("news", [1, 2])
    bus.flush()
    assert json.loads(plain.receive_text()) == ["news", [1, 2]]


def test_an_event_relay_is_validated_and_found_by_its_op() -> None:
    assert Relay.for_op("event") is EventRelay
    with pytest.raises(LocalProtocolError, match="event name"):
        EventRelay(node="n", event="")
    with pytest.raises(LocalProtocolError, match="room name"):
        EventRelay(node="n", event="e", room="")
    with pytest.raises(LocalProtocolError, match="attachments"):
        EventRelay(node="n", event="e", attachments=("text",))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("event", "data", "attachments"),
    [
        ("connect", b"[]", ()),  # reserved by Socket.IO clients
        ("e", b"{}", ()),  # not an array
        ("e", b"[", ()),  # not JSON
        ("e", b"\xff", ()),  # not UTF-8
        ("e", b'[{"_placeholder":true,"num":3}]', (b"x",)),  # no such attachment
    ],
)
def test_a_malformed_event_relay_is_logged_and_dropped(
    three: tuple[list[Hub], list[TestClient], Bus],
    caplog: pytest.LogCaptureFixture,
    event: str,
    data: bytes,
    attachments: tuple[bytes, ...],
) -> None:
    (_a, b, _c), (_ca, cb, _cc), bus = three
    there = sio(cb, bus)
    with caplog.at_level(logging.WARNING, logger="ikisocket"):
        b.receive_relay(EventRelay(node="node-a", event=event, data=data, attachments=attachments))
    cb.pump()
    quiet(there)
    assert "ignoring event relay" in caplog.text
