"""Socket.IO connection-state recovery across nodes: a claim, a handoff, no gap.

Two or three federated hubs share an in-memory *ordered* backplane, as the
Redis backplane's Streams mode is: one log of every node's relays, which
each node reads in order (its own relays come back as echoes). A client
dropped on node A comes back to node B with its ``pid`` and offset.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

import pytest

from ikisocket_core import (
    EVENT_CONNECT,
    EVENT_DISCONNECT,
    ClaimRelay,
    EventRelay,
    HandoffRelay,
    Hub,
    LocalProtocolError,
    Recovery,
    Relay,
)
from ikisocket_core._socketio._handoff import owner_of
from ikisocket_core._socketio._packets import SocketPacket, SocketType
from ikisocket_core._socketio._testclient import _Wire
from ikisocket_core.testing import (
    SocketIORefused,
    SocketIOTestSession,
    TestClient,
    WebSocketTestSession,
)

WINDOW = 30.0
WAIT = 5.0


class Node:
    """One federated hub with recovery on, its virtual client, and its event log."""

    def __init__(self, name: str, *, ordered: bool = True, **recovery: Any) -> None:
        numbers = iter(range(1, 1000))
        self.name = name
        self.hub = hub = Hub(uuid_factory=lambda: f"{name}{next(numbers)}")
        hub.socketio(
            namespaces=["/admin"],
            recovery=Recovery(max_disconnection_duration=WINDOW, claim_timeout=WAIT, **recovery),
        )
        hub.federate(name, ordered=ordered)
        self.client = TestClient(hub)
        self.log: list[tuple[str, str]] = []
        for event in (EVENT_CONNECT, EVENT_DISCONNECT, "recover"):
            hub.on(event, lambda ep, event=event: self.log.append((event, ep.kws.uuid)))


class Stream:
    """An ordered backplane: one log of every node's relays, read by every node in order."""

    def __init__(self, *nodes: Node) -> None:
        self.nodes = nodes
        self.log: list[Relay] = []
        self.carried: list[Relay] = []

    def collect(self, *nodes: Node) -> None:
        """Append what these nodes (default: all, in order) queued to the log."""
        for node in nodes or self.nodes:
            self.log.extend(node.hub.drain_relays())

    def deliver(self) -> None:
        """Every node reads the log up to its end, in order."""
        while self.log:
            relay = self.log.pop(0)
            self.carried.append(relay)
            for node in self.nodes:
                if relay.node == node.name:
                    node.hub.receive_echo(relay)
                else:
                    node.hub.receive_relay(relay)
                node.client.pump()

    def flush(self) -> None:
        for _ in range(20):
            self.collect()
            if not self.log:
                return
            self.deliver()
        raise AssertionError("relays keep coming")  # pragma: no cover


class _Waiting(_Wire):
    """A virtual client whose writes are followed by ``then`` (what happens while it waits)."""

    def __init__(self, client: TestClient, then: Callable[[], None]) -> None:
        super().__init__(client, client.websocket_connect("/socket.io/?EIO=4&transport=websocket"))
        self.then = then

    def write(self, packet: SocketPacket) -> None:
        super().write(packet)
        if packet.type is SocketType.CONNECT:
            self.then()


def come_back(
    node: Node, old: SocketIOTestSession, then: Callable[[], None], **auth: Any
) -> SocketIOTestSession:
    """Reconnect to ``node`` as socket.io-client does, running ``then`` while it waits."""
    asked: dict[str, Any] = {"pid": old.pid}
    if old.offset is not None:
        asked["offset"] = old.offset
    asked.update(auth)
    return SocketIOTestSession._join(_Waiting(node.client, then), old.namespace, asked)


def events(sio: SocketIOTestSession) -> list[tuple[Any, ...]]:
    found = []
    while sio.pending:
        found.append(sio.receive_event())
    return found


@pytest.fixture
def nodes() -> tuple[Node, Node, Node, Stream]:
    a, b, c = Node("a"), Node("b"), Node("c")
    return a, b, c, Stream(a, b, c)


def dropped_on_a(a: Node, stream: Stream) -> SocketIOTestSession:
    """Ann, on node A in room lobby with an attribute, saw event 1, missed 2, then dropped."""
    ann = a.client.socketio_connect()
    ann.kws.join("lobby")
    ann.kws.set_attribute("user", {"name": "ann", "tags": ["x"]})
    a.hub.to("lobby").emit_event("n", 1)
    assert ann.receive_event("n") == (1,)
    a.hub.to("lobby").emit_event("n", 2)  # written, never read: lost in flight
    ann.ws.abort()
    stream.flush()
    return ann


def test_a_client_that_comes_back_to_another_node_gets_its_connection_and_missed_events(
    nodes: tuple[Node, Node, Node, Stream],
) -> None:
    a, b, c, stream = nodes
    ann = dropped_on_a(a, stream)
    b.hub.to("lobby").emit_event("n", 3)  # another node's event while held: A keeps it
    stream.flush()
    a.log.clear()

    again = come_back(b, ann, stream.flush)
    assert again.recovered
    assert (again.uuid, again.pid) == (ann.uuid, ann.pid)
    kws = b.hub.get(ann.uuid)
    assert kws.recovered
    assert kws.rooms == frozenset({"lobby"})
    assert kws.get_attribute("user") == {"name": "ann", "tags": ["x"]}
    assert events(again) == [(2,), (3,)]
    assert b.log == [("recover", ann.uuid)]
    assert a.log == []  # no disconnect: the connection goes on, on B
    assert ann.uuid not in a.hub
    assert a.hub.node_of(ann.uuid) == "b"
    assert c.hub.node_of(ann.uuid) == "b"
    assert a.hub._sio is not None
    assert a.hub._sio.connections == 0

    a.hub.to("lobby").emit_event("n", 4)  # live on B now, from every node
    a.hub.emit_to(ann.uuid, "to ann")
    c.hub.emit_event("n", 5, to=[ann.uuid])
    stream.flush()
    assert events(again) == [(4,), ("to ann",), (5,)]

    again.ws.abort()  # offsets go on rising on B: a local recovery on B works too
    c.hub.to("lobby").emit_event("n", 6)
    stream.flush()
    third = come_back(b, again, stream.flush)
    assert third.recovered
    assert events(third) == [(6,)]


def test_events_placed_during_the_handoff_arrive_once_in_order(
    nodes: tuple[Node, Node, Node, Stream],
) -> None:
    a, b, c, stream = nodes
    ann = dropped_on_a(a, stream)
    uuid = ann.uuid
    carl = a.client.socketio_connect()
    stream.flush()

    def meanwhile() -> None:
        # Queued before A reads the claim: A applies its own at once (kept in the backlog).
        a.hub.to("lobby").emit_event("n", "a1")
        c.hub.to("lobby").emit_event("n", "c1")
        b.hub.to("lobby").emit_event("n", "b1")  # B's own, after its claim
        b.hub.to("elsewhere").emit_event("n", "not for ann")
        b.hub.emit_event("other namespace", namespace="/admin")
        stream.collect(b, a, c)  # the claim, b1..., a1, c1
        stream.deliver()  # A answers the claim: its handoff is queued, not read yet
        c.hub.broadcast("c2")
        c.hub.emit_to(uuid, "c3")
        c.hub.emit_event("n", "c4", to=[uuid])
        c.hub.emit_event("n", "c5", to=["someone else"])
        c.hub.to("lobby").fire("ping", "c6")
        c.hub.broadcast("not for ann", exclude=uuid)
        c.hub.emit_to(carl.uuid, "not for ann")
        for odd in (b"not json", b'{"not": "a list"}'):  # a peer's mistake: skipped
            stream.log.append(EventRelay(node="c", event="n", data=odd))
        b.hub.emit_event("n", "b2")
        stream.collect(c, b)
        b.hub.emit_event("n", "b3")  # queued on B, not placed before the handoff
        stream.collect(a)  # the handoff
        stream.deliver()
        stream.flush()

    pinged: list[str] = []
    b.hub.on("ping", lambda ep: pinged.append(ep.kws.uuid))
    again = come_back(b, ann, meanwhile)
    assert again.recovered
    assert events(again) == [
        (2,),
        ("a1",),
        ("b1",),
        ("c1",),
        ("c2",),
        ("c3",),
        ("c4",),
        ("b2",),
        ("b3",),
    ]
    assert pinged == [uuid]
    stream.flush()
    a.hub.to("lobby").emit_event("n", "a2")
    stream.flush()
    b.hub.emit_event("n", "b4")
    stream.flush()
    assert events(again) == [("a2",), ("b4",)]


def test_an_unknown_pid_gets_a_fresh_connection_after_the_bounded_wait(
    nodes: tuple[Node, Node, Node, Stream],
) -> None:
    a, b, _c, stream = nodes
    ann = dropped_on_a(a, stream)

    def nobody_answers() -> None:
        stream.flush()
        assert b.log == []  # still waiting
        b.client.advance(WAIT)

    fresh = come_back(b, ann, nobody_answers, pid="forged")
    assert not fresh.recovered
    assert fresh.uuid != ann.uuid
    assert b.log == [("connect", fresh.uuid)]
    assert a.hub.get(ann.uuid).is_alive  # A still holds the real one
    b.client.advance(WINDOW)  # the late claim is forgotten
    assert not b.hub._sio._recovery.handoffs.late  # type: ignore[union-attr]


def test_a_session_that_expired_on_its_node_is_not_found(
    nodes: tuple[Node, Node, Node, Stream],
) -> None:
    a, b, _c, stream = nodes
    ann = dropped_on_a(a, stream)
    a.client.advance(WINDOW)
    assert ("disconnect", ann.uuid) in a.log
    stream.flush()

    fresh = come_back(b, ann, stream.flush)  # A says so at once: no waiting
    assert not fresh.recovered
    assert fresh.uuid != ann.uuid


def test_a_pid_names_its_node_so_a_gone_node_or_this_one_is_not_asked(
    nodes: tuple[Node, Node, Node, Stream],
) -> None:
    a, b, _c, stream = nodes
    ann = dropped_on_a(a, stream)
    assert ann.pid is not None
    assert ann.pid.endswith(".a")
    assert owner_of(ann.pid) == "a"
    assert [owner_of(p) for p in ("plain", ".a", "x.", "x.y.b")] == [None, None, None, "b"]
    b.hub.forget_node("a")  # A went away, as far as B knows
    fresh = come_back(b, ann, lambda: None)  # answered at once, no claim
    assert not fresh.recovered
    mine = b.client.socketio_connect(auth={"pid": "secret.b"})  # B's own: not held, not asked
    assert not mine.recovered
    stream.flush()
    assert not any(isinstance(r, ClaimRelay) for r in stream.carried)


@pytest.mark.parametrize("why", ["offset", "too big", "attributes"])
def test_a_handoff_the_holder_cannot_make_is_refused_at_once(
    why: str, caplog: pytest.LogCaptureFixture
) -> None:
    a, b = Node("a"), Node("b")
    stream = Stream(a, b)
    ann = dropped_on_a(a, stream)
    auth: dict[str, Any] = {}
    if why == "offset":
        auth["offset"] = "999999"
    elif why == "too big":
        a.hub.federate("a", max_relay_size=100)
    else:
        ann.kws.set_attribute("socket", object())
    a.log.clear()
    with caplog.at_level(logging.WARNING, "ikisocket"):
        fresh = come_back(b, ann, stream.flush, **auth)  # no waiting for the deadline
    assert not fresh.recovered
    assert a.log == [("disconnect", ann.uuid)]  # its client started afresh: the hold ends
    if why != "offset":
        assert "not handed over" in caplog.text


def test_more_events_during_the_handoff_than_the_backlog_holds_start_afresh() -> None:
    a, b, c = Node("a"), Node("b", max_backlog=3), Node("c")
    stream = Stream(a, b, c)
    ann = dropped_on_a(a, stream)

    def busy() -> None:
        stream.collect(b)
        stream.deliver()  # the claim is placed and read
        for n in range(5):
            c.hub.to("lobby").emit_event("n", n)
        stream.collect(c)
        stream.deliver()
        stream.flush()

    fresh = come_back(b, ann, busy)
    assert not fresh.recovered
    assert ("disconnect", ann.uuid) in b.log  # handed over, but not whole: it ends on B
    assert ann.uuid not in b.hub


def test_a_handoff_after_the_deadline_ends_the_connection_on_the_new_node(
    nodes: tuple[Node, Node, Node, Stream],
) -> None:
    a, b, _c, stream = nodes
    ann = dropped_on_a(a, stream)

    def too_slow() -> None:
        b.client.advance(WAIT)  # the claim is still in B's queue: nobody read it
        stream.flush()

    fresh = come_back(b, ann, too_slow)
    assert not fresh.recovered
    assert b.log == [("connect", fresh.uuid), ("disconnect", ann.uuid)]
    assert ann.uuid not in a.hub
    assert ann.uuid not in b.hub


def test_a_client_that_leaves_while_its_claim_waits_is_not_answered(
    nodes: tuple[Node, Node, Node, Stream],
) -> None:
    a, b, _c, stream = nodes
    ann = dropped_on_a(a, stream)
    wire = _Waiting(b.client, lambda: None)
    wire.write(
        SocketPacket(
            type=SocketType.CONNECT, namespace="/", data={"pid": ann.pid, "offset": ann.offset}
        )
    )
    assert isinstance(wire.ws, WebSocketTestSession)
    wire.ws.abort()
    stream.flush()
    assert b.log == [("disconnect", ann.uuid)]
    assert ann.uuid not in b.hub


def test_one_claim_per_pid_at_a_time(nodes: tuple[Node, Node, Node, Stream]) -> None:
    a, b, _c, stream = nodes
    ann = dropped_on_a(a, stream)
    first = _Waiting(b.client, lambda: None)
    auth = {"pid": ann.pid, "offset": ann.offset}
    first.write(SocketPacket(type=SocketType.CONNECT, namespace="/", data=auth))
    second = SocketIOTestSession._join(_Waiting(b.client, lambda: None), "/", auth)
    assert not second.recovered  # fresh at once: the first claim waits
    first.write(SocketPacket(type=SocketType.CONNECT, namespace="/", data=auth))  # ignored
    other = _Waiting(b.client, lambda: None)  # another pid's claim waits at the same time
    other.write(SocketPacket(type=SocketType.CONNECT, namespace="/", data={"pid": "unknown"}))
    stream.flush()
    assert other.take("/") is None
    b.client.advance(WAIT)
    assert other.take("/") is not None
    answer = first.take("/")
    assert answer is not None
    assert answer.data["sid"] == ann.uuid
    missed = first.take("/")
    assert missed is not None
    assert missed.data[:2] == ["n", 2]
    assert first.take("/") is None  # the second CONNECT got no answer of its own


def test_without_an_ordered_backplane_there_is_no_claim() -> None:
    a, b = Node("a", ordered=False), Node("b", ordered=False)
    stream = Stream(a, b)
    ann = dropped_on_a(a, stream)
    fresh = come_back(b, ann, lambda: None)  # answered at once
    assert not fresh.recovered
    stream.flush()
    assert not any(isinstance(r, ClaimRelay) for r in stream.carried)
    assert a.hub.get(ann.uuid).is_alive  # still held on A, for a client that comes back there


def test_a_pid_held_here_in_another_namespace_is_not_claimed(
    nodes: tuple[Node, Node, Node, Stream],
) -> None:
    a, _b, _c, stream = nodes
    ann = dropped_on_a(a, stream)
    fresh = a.client.socketio_connect(namespace="/admin", auth={"pid": ann.pid})
    assert not fresh.recovered
    assert not a.hub.drain_relays()[1:]  # its presence only: no claim
    bad = a.client.socketio_connect(auth={"pid": ann.pid, "offset": "x"})  # ends the hold
    assert not bad.recovered


def test_odd_claims_and_handoffs_are_ignored(
    nodes: tuple[Node, Node, Node, Stream], caplog: pytest.LogCaptureFixture
) -> None:
    a, b, c, stream = nodes
    ann = dropped_on_a(a, stream)
    pending: list[str] = []

    def odd() -> None:
        stream.collect(b)
        claim = stream.log[-1]
        assert isinstance(claim, ClaimRelay)
        pending.append(claim.request)
        # Another namespace, another node's handoff, no claim of ours, a malformed one.
        a.hub.receive_relay(ClaimRelay(node="b", request="r", pid=str(ann.pid), namespace="/admin"))
        c.hub.receive_relay(HandoffRelay(node="a", to="b", request=claim.request, data=b"{}"))
        b.hub.receive_relay(HandoffRelay(node="a", to="b", request="nothing", data=b"{}"))
        wrong = {"uuid": 1, "pid": "p", "namespace": "/", "rooms": [], "attributes": {}}
        wrong.update(events=[], floor=0, last=0, top=0)
        data = json.dumps(wrong).encode()
        b.hub.receive_relay(HandoffRelay(node="a", to="b", request=claim.request, data=data))

    with caplog.at_level(logging.WARNING, "ikisocket"):
        fresh = come_back(b, ann, odd)
    assert not fresh.recovered
    assert "for no claim" in caplog.text
    assert "malformed handoff" in caplog.text
    assert a.hub.get(ann.uuid).is_alive

    plain = Hub()
    plain.federate("p", ordered=True)
    plain.receive_relay(ClaimRelay(node="b", request="r", pid="x"))  # no Socket.IO here
    plain.receive_echo(ClaimRelay(node="p", request="r", pid="x"))


def test_a_handed_over_uuid_already_known_here_is_dropped(
    nodes: tuple[Node, Node, Node, Stream], caplog: pytest.LogCaptureFixture
) -> None:
    a, b, _c, stream = nodes
    ann = dropped_on_a(a, stream)
    bob = b.client.socketio_connect()
    state = {
        "uuid": bob.uuid,
        "pid": "p",
        "namespace": "/",
        "rooms": [],
        "attributes": {},
        "events": [],
        "floor": 0,
        "last": 0,
        "top": 0,
    }

    def clash() -> None:
        stream.collect(b)
        claim = stream.log.pop()
        assert isinstance(claim, ClaimRelay)
        data = json.dumps(state).encode()
        b.hub.receive_relay(HandoffRelay(node="a", to="b", request=claim.request, data=data))

    with caplog.at_level(logging.WARNING, "ikisocket"):
        fresh = come_back(b, ann, clash)
    assert not fresh.recovered
    assert "already known here" in caplog.text
    # A late handoff that cannot be adopted either is dropped the same way.
    late = come_back(b, ann, lambda: b.client.advance(WAIT))
    assert not late.recovered
    claim = b.hub.drain_relays()[-2]
    assert isinstance(claim, ClaimRelay)
    data = json.dumps(state).encode()
    b.hub.receive_relay(HandoffRelay(node="a", to="b", request=claim.request, data=data))
    b.hub.receive_relay(HandoffRelay(node="a", to="b", request="gone", data=b""))


def test_the_claims_kept_relays_and_waiting_claims_are_bounded() -> None:
    a, b = Node("a"), Node("b", max_sessions=1, max_backlog_bytes=10)
    stream = Stream(a, b)
    ann = dropped_on_a(a, stream)
    bob_wire = _Waiting(b.client, lambda: None)
    bob_wire.write(SocketPacket(type=SocketType.CONNECT, namespace="/", data={"pid": "unknown"}))
    fresh = come_back(b, ann, lambda: None)  # one claim waits already: no second one
    assert not fresh.recovered
    b.client.advance(WAIT)  # the first claim is late now; another one replaces it there
    answer = bob_wire.take("/")
    assert answer is not None
    assert answer.type is SocketType.CONNECT

    def big() -> None:
        stream.collect(b)
        stream.deliver()
        b.hub.emit_event("n", "more than ten bytes")
        b.client.advance(WAIT)

    spilled = come_back(b, ann, big)
    assert not spilled.recovered


def test_claim_and_handoff_relays_are_validated() -> None:
    with pytest.raises(LocalProtocolError, match="pid"):
        ClaimRelay(node="b", request="r", pid="")
    with pytest.raises(LocalProtocolError, match="request"):
        ClaimRelay(node="b", request="", pid="p")
    with pytest.raises(LocalProtocolError, match="to"):
        HandoffRelay(node="a", to="", request="r")
    assert Relay.for_op("claim") is ClaimRelay
    assert Relay.for_op("handoff") is HandoffRelay
    with pytest.raises(LocalProtocolError, match="claim_timeout"):
        Recovery(claim_timeout=0)


def test_relays_lost_while_a_claim_waits_start_the_client_afresh(
    nodes: tuple[Node, Node, Node, Stream],
) -> None:
    a, b, _c, stream = nodes
    ann = dropped_on_a(a, stream)

    def lossy() -> None:
        stream.collect(b)
        stream.deliver()
        b.hub.receive_relay_loss(RuntimeError("lost relays"))
        stream.flush()

    fresh = come_back(b, ann, lossy)
    assert not fresh.recovered
    assert ("disconnect", ann.uuid) in b.log


def test_a_node_that_stops_accepting_while_a_claim_waits_refuses_afresh(
    nodes: tuple[Node, Node, Node, Stream],
) -> None:
    a, b, _c, stream = nodes
    ann = dropped_on_a(a, stream)

    def closing() -> None:
        b.hub.stop_accepting()
        b.client.advance(WAIT)

    with pytest.raises(SocketIORefused, match="not accepting"):
        come_back(b, ann, closing, pid="unknown")


def test_a_connection_hops_from_node_to_node_with_its_first_pid(
    nodes: tuple[Node, Node, Node, Stream],
) -> None:
    a, b, c, stream = nodes
    ann = dropped_on_a(a, stream)
    on_b = come_back(b, ann, stream.flush)
    assert on_b.recovered
    assert events(on_b) == [(2,)]  # socket.io-client keeps the last offset it saw
    on_b.ws.abort()
    c.hub.to("lobby").emit_event("n", "while held on b")
    stream.flush()
    on_a = come_back(a, on_b, stream.flush)  # the pid names A, but B holds it
    assert on_a.recovered
    assert on_a.pid == ann.pid
    assert events(on_a) == [("while held on b",)]
    on_a.ws.abort()
    b.hub.to("lobby").emit_event("n", "while held on a")
    stream.flush()
    on_c = come_back(c, on_a, stream.flush)
    assert on_c.recovered
    assert events(on_c) == [("while held on a",)]
    assert c.hub.get(ann.uuid).rooms == frozenset({"lobby"})
    assert ("disconnect", ann.uuid) not in a.log + b.log + c.log


def test_the_pids_a_node_handed_over_are_remembered_within_bounds() -> None:
    a, b = Node("a", max_sessions=1), Node("b")
    stream = Stream(a, b)
    ann = dropped_on_a(a, stream)
    assert come_back(b, ann, stream.flush).recovered
    bob = a.client.socketio_connect()
    bob.ws.abort()
    stream.flush()
    assert come_back(b, bob, stream.flush).recovered  # ann's pid is forgotten for this one
    handoffs = a.hub._sio._recovery.handoffs  # type: ignore[union-attr]
    assert list(handoffs.handed) == [bob.pid]
