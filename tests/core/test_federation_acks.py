"""Socket.IO acks across nodes: hubs paired in memory, no Redis.

A node asks an ack of a client of another node (``hub.emit_with_ack``) or of
clients on every node (``emit_with_acks``); the timeout runs on the asking
node, the answers come back to it only.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import pytest
from pairing import Network
from test_federation import Bus, make_hub

from ikisocket_core import (
    AckAnswerRelay,
    AckRequestRelay,
    AckTargetsRelay,
    AckTimeout,
    ConnectionClosed,
    HelloRelay,
    Hub,
    LocalProtocolError,
    PresenceRelay,
    Relay,
    RelayTooLarge,
    RunHandler,
    UnknownConnection,
)
from ikisocket_core.protocol import Flush
from ikisocket_core.testing import SocketIOTestSession, TestClient


def mounted(node: str, **options: Any) -> tuple[Hub, TestClient]:
    hub = make_hub(node)
    hub.socketio(namespaces=["/chat"], **options)
    return hub, TestClient(hub)


Three = tuple[list[Hub], list[TestClient], Bus]


def three_nodes(**options: Any) -> Three:
    nodes = [mounted(name, **options) for name in ("node-a", "node-b", "node-c")]
    return [h for h, _ in nodes], [c for _, c in nodes], Bus(*nodes)


@pytest.fixture
def three() -> Three:
    return three_nodes()


def sio(
    client: TestClient, bus: Bus, room: str | None = None, ns: str = "/"
) -> SocketIOTestSession:
    session = client.socketio_connect(namespace=ns)
    if room is not None:
        session.kws.join(room)
    bus.flush()
    return session


def introduce(bus: Bus) -> None:
    """Make every node know every other (as their hello relays do)."""
    for hub, _ in bus.nodes:
        for other, _ in bus.nodes:
            if other is not hub:
                assert hub._node is not None
                other.receive_relay(HelloRelay(node=hub._node))
    bus.flush()


def carried(bus: Bus, kind: type[Relay]) -> list[Any]:
    return [r for r in bus.carried if isinstance(r, kind)]


# -- one client of another node ------------------------------------------------------------


def test_a_client_of_another_node_answers_the_asking_node(three: Three) -> None:
    (a, _b, _c), (_ca, cb, cc), bus = three
    there, far = sio(cb, bus), sio(cc, bus)
    answers: list[Any] = []
    a.emit_with_ack(there.uuid, "question", 1, b"\x02", callback=answers.append, timeout=5)
    bus.flush()
    event = there.receive()
    assert (event.name, event.args) == ("question", (1, b"\x02"))
    assert far.pending == 0  # node-c ignores a request addressed to node-b
    assert answers == []
    there.ack(event, "yes", b"\x03")
    bus.flush()
    assert answers == [("yes", b"\x03")]
    (request,) = carried(bus, AckRequestRelay)
    assert (request.node, request.to, request.uuids) == ("node-a", "node-b", (there.uuid,))
    (answer,) = carried(bus, AckAnswerRelay)
    assert (answer.node, answer.to, answer.uuid) == ("node-b", "node-a", there.uuid)
    there.ack(event, "again")  # answered already: the client's node ignores it
    bus.flush()
    assert len(answers) == 1
    assert a.late_acks == 0


def test_emit_with_ack_of_a_local_connection_is_its_emit_event(three: Three) -> None:
    (a, _b, _c), (ca, _cb, _cc), bus = three
    here = sio(ca, bus)
    answers: list[Any] = []
    a.emit_with_ack(here.uuid, "q", callback=answers.append, timeout=5)
    here.ack(here.receive(), 7)
    assert answers == [(7,)]
    assert carried(bus, AckRequestRelay) == []
    with pytest.raises(UnknownConnection):
        a.emit_with_ack("nobody", "q", callback=answers.append, timeout=5)


def test_the_timeout_runs_on_the_asking_node_and_a_late_answer_is_dropped(three: Three) -> None:
    (a, b, _c), (ca, cb, _cc), bus = three
    there = sio(cb, bus)
    answers: list[Any] = []
    a.emit_with_ack(there.uuid, "q", callback=answers.append, timeout=5)
    bus.flush()
    event = there.receive()
    ca.advance(4.9)
    assert answers == []
    ca.advance(0.2)
    (timeout,) = answers
    assert isinstance(timeout, AckTimeout)
    assert timeout.timeout == 5
    there.ack(event, "late")  # the client's node still waits (its clock did not move)
    bus.flush()
    assert len(answers) == 1  # never delivered twice
    assert a.late_acks == 1
    assert b.late_acks == 0
    cb.advance(11)  # the client's node forgets its pending ack after 2 x 5 s, tells nobody
    assert bus.nodes[1][0].drain_relays() == []


def test_a_timed_out_client_sends_nothing_back(three: Three) -> None:
    (a, _b, _c), (ca, cb, _cc), bus = three
    there = sio(cb, bus)
    answers: list[Any] = []
    a.emit_with_ack(there.uuid, "q", callback=answers.append, timeout=5)
    bus.flush()
    there.receive()
    cb.advance(11)  # the client's node times out first: the asking node decides
    bus.flush()
    assert answers == []
    assert carried(bus, AckAnswerRelay) == []
    ca.advance(6)
    assert isinstance(answers[0], AckTimeout)


def test_the_pending_table_is_bounded_per_client_as_for_local_acks() -> None:
    (a, _b, _c), (ca, cb, _cc), bus = three_nodes(max_pending_acks=2)
    there = sio(cb, bus)
    answers: list[Any] = []
    a.emit_with_ack(there.uuid, "q", callback=answers.append, timeout=5)
    a.emit_with_ack(there.uuid, "q", callback=answers.append, timeout=5)
    with pytest.raises(LocalProtocolError, match="max_pending_acks=2"):
        a.emit_with_ack(there.uuid, "q", callback=answers.append, timeout=5)
    bus.flush()
    there.ack(there.receive(), 1)
    bus.flush()
    assert answers == [(1,)]
    a.emit_with_ack(there.uuid, "q", callback=answers.append, timeout=5)  # room again
    ca.advance(6)
    assert len(answers) == 3
    assert a._asks is not None
    assert a._asks.per_uuid == {}
    assert a._asks.asks == {}


def test_a_client_that_ends_fails_the_ack_as_a_local_one(three: Three) -> None:
    (a, _b, _c), (_ca, cb, _cc), bus = three
    there = sio(cb, bus)
    answers: list[Any] = []
    a.emit_with_ack(there.uuid, "q", callback=answers.append, timeout=5)
    bus.flush()
    there.disconnect()
    bus.flush()
    (closed,) = answers
    assert isinstance(closed, ConnectionClosed)
    assert closed.code == 1000


def test_a_forgotten_node_fails_its_clients_acks_and_their_answers_are_late(
    three: Three,
) -> None:
    (a, _b, _c), (_ca, cb, _cc), bus = three
    there = sio(cb, bus)
    answers: list[Any] = []
    a.emit_with_ack(there.uuid, "q", callback=answers.append, timeout=5)
    bus.flush()
    a.forget_node("node-b")
    (closed,) = answers
    assert isinstance(closed, ConnectionClosed)
    assert closed.code == 1006
    assert "node-b" in closed.reason
    there.ack(there.receive(), "too late")
    bus.flush()
    assert len(answers) == 1
    assert a.late_acks == 1


def test_what_a_local_ack_would_raise_reaches_the_callback(three: Three) -> None:
    (a, _b, _c), (_ca, cb, _cc), bus = three
    gone, plain = sio(cb, bus), cb.websocket_connect("/ws/p")
    bus.flush()
    answers: list[Any] = []
    a.emit_with_ack(plain.uuid, "q", callback=answers.append, timeout=5)
    gone.disconnect()  # before the request arrives (node-a still thinks it is there)
    a.emit_with_ack(gone.uuid, "q", callback=answers.append, timeout=5)
    bus.flush()
    refused, unknown = answers
    assert isinstance(refused, LocalProtocolError)
    assert "plain WebSocket" in str(refused)
    assert isinstance(unknown, UnknownConnection)
    assert unknown.uuid == gone.uuid


def test_too_many_acks_pending_on_the_client_node_is_reported() -> None:
    (a, ca), (b, cb) = mounted("node-a"), mounted("node-b", max_pending_acks=1)
    bus = Bus((a, ca), (b, cb))
    there = sio(cb, bus)
    answers: list[Any] = []
    a.emit_with_ack(there.uuid, "q", callback=answers.append, timeout=5)
    a.emit_with_ack(there.uuid, "q", callback=answers.append, timeout=5)
    bus.flush()
    (refused,) = answers
    assert isinstance(refused, LocalProtocolError)
    assert "max_pending_acks=1" in str(refused)


def test_a_large_answer_is_refused_by_the_client_node(three: Three) -> None:
    (a, b, _c), (_ca, cb, _cc), bus = three
    b.federate("node-b", max_relay_size=64)
    there = sio(cb, bus)
    answers: list[Any] = []
    a.emit_with_ack(there.uuid, "q", callback=answers.append, timeout=5)
    bus.flush()
    there.ack(there.receive(), "x" * 100)
    bus.flush()
    (refused,) = answers
    assert isinstance(refused, LocalProtocolError)
    assert "larger than max_relay_size" in str(refused)


def test_asking_another_node_is_checked_before_anything_is_sent(three: Three) -> None:
    (a, _b, _c), (_ca, cb, _cc), bus = three
    a.federate("node-a", max_relay_size=64)
    there = sio(cb, bus)
    with pytest.raises(RelayTooLarge):
        a.emit_with_ack(there.uuid, "q", "x" * 80, callback=print, timeout=5)
    with pytest.raises(LocalProtocolError, match="positive timeout"):
        a.emit_with_ack(there.uuid, "q", callback=print, timeout=0)
    with pytest.raises(LocalProtocolError, match="reserved"):
        a.emit_with_ack(there.uuid, "connect", callback=print, timeout=5)
    with pytest.raises(LocalProtocolError, match="at most 86,400 s"):
        a.emit_with_ack(there.uuid, "q", callback=print, timeout=float("inf"))
    with pytest.raises(LocalProtocolError, match="at most 86,400 s"):
        a.emit_with_acks("q", callback=print, timeout=86_401)
    with pytest.raises(LocalProtocolError, match="room name"):
        a.emit_with_acks("q", callback=print, timeout=5, to="")
    with pytest.raises(TypeError):
        a.emit_with_ack(there.uuid, "q", object(), callback=print, timeout=5)
    assert a.drain_relays() == []
    assert a._asks is None or a._asks.asks == {}
    unmounted = make_hub("node-d")
    bus.nodes.append((unmounted, TestClient(unmounted)))
    unmounted.receive_relay(PresenceRelay(node="node-b", uuids=(there.uuid,)))
    with pytest.raises(LocalProtocolError, match=r"need Socket\.IO"):
        unmounted.emit_with_ack(there.uuid, "q", callback=print, timeout=5)


def test_an_async_callback_runs_for_no_connection_and_failures_are_logged(
    three: Three, caplog: pytest.LogCaptureFixture
) -> None:
    (a, _b, _c), (ca, cb, _cc), bus = three
    there = sio(cb, bus)
    seen: list[Any] = []

    async def later(answer: Any) -> None:
        seen.append(answer)
        raise RuntimeError("async boom")

    def broken(answer: Any) -> None:
        raise RuntimeError("sync boom")

    a.emit_with_ack(there.uuid, "q", callback=later, timeout=5)
    a.emit_with_ack(there.uuid, "q", callback=broken, timeout=5)
    bus.flush()
    with caplog.at_level(logging.ERROR, logger="ikisocket"):
        there.ack(there.receive(), 1)
        there.ack(there.receive(), 2)
        bus.flush()
        ca.pump()
    assert seen == [(1,)]
    messages = [r.getMessage() for r in caplog.records]
    assert messages.count("an ack callback failed") == 2


def test_a_detached_callback_left_unrun_is_closed() -> None:
    hub, _client = mounted("node-a")

    async def never(answer: Any) -> None:  # pragma: no cover (closed unrun)
        raise AssertionError

    hub._call_detached(never, ())
    (action,) = hub.drain_actions()
    assert isinstance(action, RunHandler)
    assert action.target is None
    action.awaitable.close()  # type: ignore[attr-defined]

    class Plain:
        def __await__(self) -> Any:  # pragma: no cover (closed unrun)
            yield

    hub._call_detached(lambda _: Plain(), ())
    (action,) = hub.drain_actions()
    action.awaitable.close()  # type: ignore[union-attr]  # no close of its own: nothing to do


# -- clients on every node ------------------------------------------------------------------


def test_a_broadcast_with_acks_collects_every_node_with_one_timeout(three: Three) -> None:
    (a, _b, _c), (ca, cb, cc), bus = three
    here, b1, b2, c1 = sio(ca, bus), sio(cb, bus), sio(cb, bus), sio(cc, bus)
    mute = sio(ca, bus)
    cb.websocket_connect("/ws/p")  # plain: not asked
    chat = sio(cc, bus, ns="/chat")  # another namespace: not asked
    bus.flush()
    results: list[Mapping[str, Any]] = []
    a.emit_with_acks("vote", "lunch?", callback=results.append, timeout=5)
    bus.flush()
    (request,) = carried(bus, AckRequestRelay)
    assert request.to is None
    assert request.uuids == ()
    targets = {r.node: r.uuids for r in carried(bus, AckTargetsRelay)}
    assert targets == {"node-b": (b1.uuid, b2.uuid), "node-c": (c1.uuid,)}
    assert chat.pending == 0
    here.ack(here.receive(), "here")
    b1.ack(b1.receive(), "b1")
    c1.ack(c1.receive(), "c1", 2)
    b2.receive()  # never answers
    mute.receive()  # nor this one of the asking node
    bus.flush()
    assert results == []
    ca.advance(6)
    (answers,) = results
    assert answers[here.uuid] == ("here",)
    assert answers[b1.uuid] == ("b1",)
    assert answers[c1.uuid] == ("c1", 2)
    assert isinstance(answers[b2.uuid], AckTimeout)
    assert isinstance(answers[mute.uuid], AckTimeout)
    assert set(answers) == {here.uuid, mute.uuid, b1.uuid, b2.uuid, c1.uuid}
    ca.advance(1)  # the local ack's own timer: the request has ended already
    assert len(results) == 1


def test_a_broadcast_with_acks_ends_when_the_last_answer_arrives(three: Three) -> None:
    (a, _b, _c), (_ca, cb, _cc), bus = three
    b1 = sio(cb, bus)
    results: list[Mapping[str, Any]] = []
    a.emit_with_acks("vote", callback=results.append, timeout=5)
    bus.flush()  # node-c, which node-a did not know of, says it asked nobody: ignored
    assert results == []
    b1.ack(b1.receive(), "yes")
    bus.flush()
    assert results == [{b1.uuid: ("yes",)}]


def test_a_room_and_a_namespace_room_with_acks_cross_nodes(three: Three) -> None:
    (a, _b, _c), (ca, cb, cc), bus = three
    here = sio(ca, bus, "lobby", ns="/chat")
    there = sio(cb, bus, "lobby", ns="/chat")
    root = sio(cc, bus, "lobby")
    results: list[Mapping[str, Any]] = []
    a.emit_with_acks("q", callback=results.append, timeout=5, to="lobby", namespace=None)
    bus.flush()
    for session, answer in ((here, 1), (there, 2), (root, 3)):
        session.ack(session.receive(), answer)
    bus.flush()
    assert results == [{here.uuid: (1,), there.uuid: (2,), root.uuid: (3,)}]
    sio_b = bus.nodes[1][0]._sio
    assert sio_b is not None
    sio_b.of("/chat").to("lobby", exclude=there.kws).emit_with_acks(
        "q", callback=results.append, timeout=5
    )
    bus.flush()
    here.ack(here.receive(), "from a")
    bus.flush()
    assert results[1] == {here.uuid: ("from a",)}
    assert there.pending == 0
    assert root.pending == 0
    sio_a = a._sio
    assert sio_a is not None
    sio_a.of("/chat").emit_with_acks("q", callback=results.append, timeout=5)
    bus.flush()
    here.ack(here.receive(), "a")
    there.ack(there.receive(), "b")
    bus.flush()
    assert results[2] == {here.uuid: ("a",), there.uuid: ("b",)}
    assert root.pending == 0
    del cc


def test_acks_of_listed_uuids_go_to_their_nodes_only(three: Three) -> None:
    (a, _b, _c), (ca, cb, cc), bus = three
    here, there, far = sio(ca, bus), sio(cb, bus), sio(cc, bus)
    chat = sio(cc, bus, ns="/chat")
    plain = cb.websocket_connect("/ws/p")
    bus.flush()
    results: list[Mapping[str, Any]] = []
    listed = iter([here.uuid, there.uuid, far.uuid, chat.uuid, plain.uuid, "nobody"])
    a.emit_with_acks("q", callback=results.append, timeout=5, to=listed)
    bus.flush()
    requests = carried(bus, AckRequestRelay)
    assert {(r.to, r.uuids) for r in requests} == {
        ("node-b", (there.uuid, plain.uuid)),
        ("node-c", (far.uuid, chat.uuid)),
    }
    assert carried(bus, AckTargetsRelay) == []
    assert chat.pending == 0  # another namespace: left out, as locally
    for session in (here, there, far):
        session.ack(session.receive(), session.uuid[:4])
    bus.flush()
    (answers,) = results
    assert list(answers) == [here.uuid, there.uuid, far.uuid]
    assert answers[far.uuid] == (far.uuid[:4],)


def test_a_listed_client_over_the_bound_is_marked_not_asked() -> None:
    (a, _b, _c), (_ca, cb, _cc), bus = three_nodes(max_pending_acks=1)
    there = sio(cb, bus)
    results: list[Any] = []
    a.emit_with_ack(there.uuid, "q", callback=results.append, timeout=5)
    a.emit_with_acks("q", callback=results.append, timeout=5, to=[there.uuid])
    (answers,) = results
    assert isinstance(answers[there.uuid], LocalProtocolError)


def test_broadcasts_with_acks_to_other_nodes_are_bounded() -> None:
    (a, _b, _c), (ca, _cb, _cc), bus = three_nodes(max_pending_acks=1)
    introduce(bus)
    results: list[Any] = []
    a.emit_with_acks("q", callback=results.append, timeout=5)
    with pytest.raises(LocalProtocolError, match="broadcasts with acks"):
        a.emit_with_acks("q", callback=results.append, timeout=5)
    bus.flush()  # nobody anywhere: both other nodes say so
    assert results == [{}]
    a.emit_with_acks("q", callback=results.append, timeout=5)
    assert a._asks is not None
    assert a._asks.broadcasts == 1
    ca.advance(6)
    assert results == [{}, {}]
    assert a._asks.broadcasts == 0


def test_a_silent_node_adds_nobody_and_a_forgotten_one_ends_the_wait(three: Three) -> None:
    (a, _b, _c), (ca, cb, _cc), bus = three
    there = sio(cb, bus)
    a.receive_relay(PresenceRelay(node="node-old", uuids=("ghost",)))  # never answers
    results: list[Mapping[str, Any]] = []
    a.emit_with_acks("q", callback=results.append, timeout=5)
    bus.flush()
    there.ack(there.receive(), 1)
    bus.flush()
    assert results == []  # node-old never said whom it asked
    ca.advance(6)
    assert results == [{there.uuid: (1,)}]
    a.emit_with_acks("q", callback=results.append, timeout=5)
    bus.flush()
    there.receive()
    a.forget_node("node-b")
    a.forget_node("node-old")
    (_, answers) = results
    assert isinstance(answers[there.uuid], ConnectionClosed)


def test_a_federated_hub_alone_asks_its_own_clients_only() -> None:
    hub, client = mounted("node-a")
    here = client.socketio_connect()
    results: list[Mapping[str, Any]] = []
    hub.emit_with_acks("q", callback=results.append, timeout=5)
    here.ack(here.receive(), 1)
    assert results == [{here.uuid: (1,)}]
    assert hub.drain_relays() != []  # presence only
    assert not any(isinstance(r, AckRequestRelay) for r in hub.drain_relays())


def test_late_and_stray_relays_are_counted_and_dropped(three: Three) -> None:
    (a, _b, _c), _clients, _bus = three
    a.receive_relay(AckTargetsRelay(node="node-b", to="node-a", request=99))  # ignored
    a.receive_relay(AckAnswerRelay(node="node-b", to="node-a", request=99, uuid="u"))
    assert a.late_acks == 1
    a.receive_relay(AckAnswerRelay(node="node-b", to="node-c", request=99, uuid="u"))
    assert a.late_acks == 1  # someone else's


def test_a_malformed_request_is_ignored_and_a_malformed_answer_reported(
    three: Three, caplog: pytest.LogCaptureFixture
) -> None:
    (a, b, _c), (_ca, cb, _cc), bus = three
    there = sio(cb, bus)
    with caplog.at_level(logging.WARNING, logger="ikisocket"):
        b.receive_relay(
            AckRequestRelay(
                node="node-a", request=1, event="q", timeout=5, data=b"{}", uuids=(there.uuid,)
            )
        )
    assert "ignoring ack request" in caplog.text
    assert there.pending == 0
    answers: list[Any] = []
    a.emit_with_ack(there.uuid, "q", callback=answers.append, timeout=5)
    request = a.drain_relays()[-1]
    assert isinstance(request, AckRequestRelay)
    with caplog.at_level(logging.WARNING, logger="ikisocket"):
        a.receive_relay(
            AckAnswerRelay(
                node="node-b", to="node-a", request=request.request, uuid=there.uuid, data=b"\xff"
            )
        )
    (malformed,) = answers
    assert isinstance(malformed, LocalProtocolError)
    assert "malformed" in str(malformed)


def test_request_ids_skip_those_still_waiting(three: Three) -> None:
    (a, _b, _c), (_ca, cb, _cc), bus = three
    there = sio(cb, bus)
    a.emit_with_ack(there.uuid, "q", callback=print, timeout=5)
    asks = a._asks
    assert asks is not None
    asks.next_id = 0  # as after 2**53 requests
    a.emit_with_ack(there.uuid, "q", callback=print, timeout=5)
    assert sorted(asks.asks) == [0, 1]


def test_a_node_without_socketio_answers_for_its_plain_clients(three: Three) -> None:
    (a, _b, _c), _clients, bus = three
    bare = make_hub("node-d")
    client = TestClient(bare)
    bus.nodes.append((bare, client))
    plain = client.websocket_connect("/ws/p")
    bare.receive_relay(PresenceRelay(node="node-a", uuids=()))
    bus.flush()
    results: list[Any] = []
    a.emit_with_acks("q", callback=results.append, timeout=5)
    a.emit_with_acks("q", callback=results.append, timeout=5, to=[plain.uuid])
    bus.flush()
    assert results == [{}, {}]


def test_ack_relays_are_validated_and_found_by_their_op() -> None:
    assert Relay.for_op("ack_request") is AckRequestRelay
    assert Relay.for_op("ack_targets") is AckTargetsRelay
    assert Relay.for_op("ack_answer") is AckAnswerRelay
    ok: dict[str, Any] = {"node": "n", "request": 1, "event": "e", "timeout": 5.0}
    AckRequestRelay(**ok)
    bad_requests: list[dict[str, Any]] = [
        {"request": -1},
        {"request": 2**53},
        {"request": True},
        {"to": ""},
        {"event": ""},
        {"timeout": 0},
        {"timeout": float("inf")},
        {"timeout": 86_401},
        {"timeout": "5"},
        {"room": ""},
        {"attachments": ("x",)},
    ]
    for bad in bad_requests:
        with pytest.raises(LocalProtocolError):
            AckRequestRelay(**{**ok, **bad})
    with pytest.raises(LocalProtocolError):
        AckTargetsRelay(node="n", to="", request=1)
    with pytest.raises(LocalProtocolError):
        AckTargetsRelay(node="n", to="m", request=1, final=1)  # type: ignore[arg-type]
    answer: dict[str, Any] = {"node": "n", "to": "m", "request": 1, "uuid": "u"}
    bad_answers: list[dict[str, Any]] = [
        {"uuid": ""},
        {"error": "boom"},
        {"code": 5000},
        {"code": 1.0},
        {"reason": "x" * 1025},
        {"attachments": ("x",)},
    ]
    for bad in bad_answers:
        with pytest.raises(LocalProtocolError):
            AckAnswerRelay(**{**answer, **bad})


def test_a_local_client_over_the_bound_is_marked_in_a_federated_broadcast() -> None:
    (a, _b, _c), (ca, cb, _cc), bus = three_nodes(max_pending_acks=1)
    here, there = sio(ca, bus), sio(cb, bus)
    results: list[Any] = []
    a.emit_with_ack(here.uuid, "q", callback=results.append, timeout=5)
    a.emit_with_acks("q", callback=results.append, timeout=5)
    bus.flush()
    there.ack(there.receive(), 1)
    bus.flush()
    (answers,) = results
    assert isinstance(answers[here.uuid], LocalProtocolError)
    assert answers[there.uuid] == (1,)


def test_targets_naming_a_client_already_awaited_count_once(three: Three) -> None:
    (a, _b, _c), (ca, cb, _cc), bus = three
    here = sio(ca, bus)
    sio(cb, bus)
    results: list[Any] = []
    a.emit_with_acks("q", callback=results.append, timeout=5)
    (request,) = [r for r in a.drain_relays() if isinstance(r, AckRequestRelay)]
    a.receive_relay(
        AckTargetsRelay(node="node-b", to="node-a", request=request.request, uuids=(here.uuid,))
    )
    here.ack(here.receive(), 1)
    assert results == [{here.uuid: (1,)}]


def test_a_listener_asks_a_client_of_another_node(three: Three) -> None:
    (a, _b, _c), (ca, cb, _cc), bus = three
    here, there = sio(ca, bus), sio(cb, bus)
    answers: list[Any] = []

    @a.on("ask")
    def ask(ep: Any) -> None:
        a.emit_with_ack(ep.args[0], "q", callback=answers.append, timeout=5)

    here.emit("ask", there.uuid)
    bus.flush()
    there.ack(there.receive(), "ok")
    bus.flush()
    assert answers == [("ok",)]


def test_forgetting_a_node_before_any_request_is_harmless() -> None:
    hub, _client = mounted("node-a")
    hub.forget_node("node-b")
    assert hub.late_acks == 0


def test_a_node_lists_many_targets_in_parts(three: Three, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("ikisocket_core._socketio._remote_acks._PRESENCE_CHUNK", 2)
    (a, _b, _c), (_ca, cb, _cc), bus = three
    sessions = [sio(cb, bus, "lobby") for _ in range(5)]
    results: list[Mapping[str, Any]] = []
    a.emit_with_acks("q", callback=results.append, timeout=5, to="lobby")
    bus.flush()
    parts = [r for r in carried(bus, AckTargetsRelay) if r.node == "node-b"]
    assert [len(r.uuids) for r in parts] == [2, 2, 1]
    assert [r.final for r in parts] == [False, False, True]
    for n, session in enumerate(sessions):
        session.ack(session.receive(), n)
    bus.flush()
    assert results == [{s.uuid: (n,) for n, s in enumerate(sessions)}]


def test_a_node_the_asking_one_did_not_know_of_is_waited_for_too(three: Three) -> None:
    (a, _b, _c), (_ca, cb, cc), bus = three
    there = sio(cb, bus)
    unknown = cc.socketio_connect()  # node-a has not heard of node-c yet
    assert "node-c" not in a._remote
    results: list[Mapping[str, Any]] = []
    a.emit_with_acks("q", callback=results.append, timeout=5)
    bus.flush()
    unknown.ack(unknown.receive(), "c")
    there.ack(there.receive(), "b")
    bus.flush()
    assert results == [{unknown.uuid: ("c",), there.uuid: ("b",)}]


def test_a_relay_asking_a_byte_level_client_wakes_its_driver_and_flushes_it() -> None:
    """What a relay writes to a client of the byte-level engine reaches the driver.

    A relay is applied outside any input of the engine, so its output must go
    through the hub's queue (the wakeup, then a ``Flush``): written straight
    onto the connection, as an ACK is during that connection's own input, it
    would wait unseen until something else flushed the connection.
    """
    a, b = make_hub("node-a"), make_hub("node-b")
    a.socketio()
    b.socketio()
    tb = TestClient(b)
    net = Network(a)
    woke: list[bool] = []
    net.server.set_wakeup(lambda: woke.append(True))

    def carry() -> None:
        for _ in range(10):
            from_a, from_b = a.drain_relays(), b.drain_relays()
            for relay in from_a:
                b.receive_relay(relay)
                tb.pump()
            for relay in from_b:
                a.receive_relay(relay)  # as a backplane does: outside any input
            if not from_a and not from_b:
                return
        raise AssertionError("relays keep coming")  # pragma: no cover

    p = net.pair("/socket.io/?EIO=4&transport=websocket")
    p.send_text("40")
    assert str(p.messages[-1]).startswith("40{")
    (uuid,) = a.connections
    carry()
    answers: list[Any] = []
    b.emit_with_ack(uuid, "question", 1, callback=answers.append, timeout=5)
    woke.clear()
    carry()
    assert woke  # the driver was told to drain
    seen = len(p.messages)
    net.drain()
    assert any(isinstance(x, Flush) and p.conn in x.connections for x in net.actions)
    (event,) = p.messages[seen:]
    assert isinstance(event, str)
    assert event.endswith('["question",1]')
    ack_id = event[2 : event.index("[")]
    p.send_text(f'43{ack_id}["yes"]')  # answered during its own input: written directly
    carry()
    assert answers == [("yes",)]
