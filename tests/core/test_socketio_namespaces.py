"""Per-namespace rooms (``sio.of(ns).to(room)``) and broadcasts that collect every client's ack."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import pytest

from ikisocket_core import (
    EVENT_ERROR,
    AckTimeout,
    ConnectionClosed,
    Hub,
    LocalProtocolError,
    Namespace,
    Recovery,
)
from ikisocket_core.testing import NothingReceived, TestClient


def hub_with(**options: Any) -> Hub:
    numbers = iter(range(1, 1000))
    hub = Hub(uuid_factory=lambda: f"c{next(numbers)}")
    hub.socketio(namespaces=["/a", "/b"], **options)
    hub.websocket("/ws", lambda kws: None)
    return hub


# -- per-namespace rooms -------------------------------------------------------------------


def test_a_room_name_in_one_namespace_does_not_reach_another() -> None:
    hub = hub_with()
    assert hub._sio is not None
    client = TestClient(hub)
    in_a = client.socketio_connect(namespace="/a")
    in_b = client.socketio_connect(namespace="/b")
    main = client.socketio_connect()
    plain = client.websocket_connect("/ws")
    for kws in (in_a.kws, in_b.kws, main.kws, plain.kws):
        kws.join("lobby")
    room = hub._sio.of("/a").to("lobby")
    assert room.uuids == (in_a.uuid,)
    assert len(room) == 1
    room.emit_event("news", 1)
    room.emit("text")
    assert in_a.receive_event("news") == (1,)
    assert in_a.receive_event("message") == ("text",)
    for other in (in_b, main):
        with pytest.raises(NothingReceived):
            other.receive()
    assert plain.pending == 0
    main_room = hub._sio.of("/").to("lobby")  # plain connections belong to "/"
    assert main_room.uuids == (main.uuid, plain.uuid)
    main_room.emit_event("hi", 2)
    assert main.receive_event("hi") == (2,)
    assert plain.receive_text() == '["hi",2]'
    hub.to("lobby").emit_event("all", 3)  # the hub's room is still everyone's
    assert [s.receive_event("all") for s in (in_a, in_b, main)] == [(3,)] * 3
    assert plain.receive_text() == '["all",3]'


def test_a_namespace_room_may_exclude_the_sender_and_a_namespace_has_its_uuids() -> None:
    hub = hub_with()
    assert hub._sio is not None
    client = TestClient(hub)
    ann = client.socketio_connect(namespace="/a")
    bob = client.socketio_connect(namespace="/a")
    client.socketio_connect(namespace="/b")
    ann.kws.join("lobby")
    bob.kws.join("lobby")
    namespace = hub._sio.of("/a")
    assert isinstance(namespace, Namespace)
    assert repr(namespace) == "<Namespace /a>"
    assert namespace.uuids == (ann.uuid, bob.uuid)
    namespace.to("lobby", exclude=ann.kws).emit_event("from-ann", "x")
    assert bob.receive_event("from-ann") == ("x",)
    assert ann.pending == 0
    namespace.emit_event("all-of-a")
    assert ann.receive_event("all-of-a") == ()
    assert bob.receive_event("all-of-a") == ()
    assert hub._sio.of("/undeclared").uuids == ()


# -- broadcasts with acks ------------------------------------------------------------------


def test_a_broadcast_collects_every_answer_with_one_timeout() -> None:
    hub = hub_with()
    client = TestClient(hub)
    ann = client.socketio_connect()
    bob = client.socketio_connect()
    cid = client.socketio_connect()
    client.websocket_connect("/ws")  # plain: not asked, not in the answers
    results: list[Mapping[str, Any]] = []
    hub.emit_with_acks("vote", "lunch?", callback=results.append, timeout=5)
    ann.ack(ann.receive(), "yes")
    question = bob.receive()
    assert (question.name, question.args) == ("vote", ("lunch?",))
    bob.ack(question, "no", 2)
    cid.receive()  # never answers
    client.advance(4)
    assert results == []
    client.advance(2)
    (answers,) = results
    assert list(answers) == [ann.uuid, bob.uuid, cid.uuid]  # in the order they were asked
    assert answers[ann.uuid] == ("yes",)
    assert answers[bob.uuid] == ("no", 2)
    assert isinstance(answers[cid.uuid], AckTimeout)


def test_a_broadcast_with_acks_to_a_room_uuids_or_a_namespace() -> None:
    hub = hub_with()
    assert hub._sio is not None
    client = TestClient(hub)
    ann = client.socketio_connect()
    bob = client.socketio_connect()
    in_a = client.socketio_connect(namespace="/a")
    ann.kws.join("lobby")
    in_a.kws.join("lobby")
    results: list[Mapping[str, Any]] = []
    hub.emit_with_acks("q", callback=results.append, timeout=5, to="lobby")  # "/" only
    ann.ack(ann.receive(), 1)
    assert results == [{ann.uuid: (1,)}]
    hub.emit_with_acks("q", callback=results.append, timeout=5, to=[bob.uuid, "gone"])
    bob.ack(bob.receive(), 2)
    assert results[1] == {bob.uuid: (2,)}
    hub.emit_with_acks("q", callback=results.append, timeout=5, to="lobby", namespace=None)
    ann.ack(ann.receive(), 3)
    in_a.ack(in_a.receive(), 4)
    assert results[2] == {ann.uuid: (3,), in_a.uuid: (4,)}
    hub._sio.of("/a").emit_with_acks("q", callback=results.append, timeout=5)
    in_a.ack(in_a.receive(), 5)
    hub._sio.of("/a").to("lobby").emit_with_acks("q", 6, callback=results.append, timeout=5)
    event = in_a.receive()
    assert event.args == (6,)
    in_a.ack(event, 6)
    assert results[3:] == [{in_a.uuid: (5,)}, {in_a.uuid: (6,)}]


def test_a_broadcast_with_acks_to_nobody_answers_at_once() -> None:
    hub = hub_with()
    results: list[Mapping[str, Any]] = []
    hub.emit_with_acks("q", callback=results.append, timeout=5, to="empty")
    assert results == [{}]


def test_ended_held_or_saturated_targets_are_marked() -> None:
    hub = hub_with(recovery=Recovery(), max_pending_acks=1)
    client = TestClient(hub)
    ann = client.socketio_connect()
    held = client.socketio_connect()
    busy = client.socketio_connect()
    busy.kws.emit_event("first", ack=lambda answer: None, timeout=60)
    held.ws.abort()
    results: list[Mapping[str, Any]] = []
    hub.emit_with_acks("q", callback=results.append, timeout=5)
    ann.close()  # its pending ack fails with the connection
    (answers,) = results
    assert isinstance(answers[held.uuid], ConnectionClosed)
    assert isinstance(answers[busy.uuid], LocalProtocolError)
    assert isinstance(answers[ann.uuid], ConnectionClosed)


def test_the_callback_may_be_async_or_fail() -> None:
    hub = hub_with()
    errors: list[BaseException | None] = []
    hub.on(EVENT_ERROR, lambda ep: errors.append(ep.error))
    seen: list[Mapping[str, Any]] = []

    async def later(answers: Mapping[str, Any]) -> None:
        await asyncio.sleep(0)
        seen.append(answers)

    def broken(answers: Mapping[str, Any]) -> None:
        raise RuntimeError("callback bug")

    client = TestClient(hub, run_async=asyncio.run)
    ann = client.socketio_connect()
    hub.emit_with_acks("q", callback=later, timeout=5)
    ann.ack(ann.receive(), "ok")
    assert seen == [{ann.uuid: ("ok",)}]
    hub.emit_with_acks("q", callback=broken, timeout=5)
    ann.ack(ann.receive())
    assert [str(e) for e in errors] == ["callback bug"]


def test_broadcast_acks_check_their_arguments() -> None:
    hub = hub_with()
    with pytest.raises(LocalProtocolError, match="positive timeout"):
        hub.emit_with_acks("q", callback=print, timeout=0)
    with pytest.raises(LocalProtocolError, match="reserved"):
        hub.emit_with_acks("connect", callback=print, timeout=1)
    with pytest.raises(LocalProtocolError, match="mount it"):
        Hub().emit_with_acks("q", callback=print, timeout=1)
