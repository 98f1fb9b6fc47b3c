"""Connection-state recovery across nodes: a claim, a handoff, and no gap (ordered backplanes).

Theory of operation. Node A holds a dropped connection (see ``_recovery``);
its client comes back to node B with its ``pid`` and last ``offset``. B does
not hold the ``pid``, so (only when its backplane delivers relays to every
node in one order, its own included: ``Hub.federate(..., ordered=True)``)
B queues a :class:`~ikisocket_core.ClaimRelay` and leaves the ``CONNECT``
pending, as for an ``async def`` connect hook, with a deadline
(``Recovery.claim_timeout``) on the mount's timers. Every node sees the
claim; the one holding the ``pid`` (A) answers at the claim's place in the
order: it checks the offset, builds the handoff (UUID, rooms, attributes as
JSON, the backlog's events after the offset, its offset counter), releases
the connection without a terminal event (it leaves A's routing: an
``absent`` relay) and queues a :class:`~ikisocket_core.HandoffRelay` for B.
B adopts it (registered: a ``present`` relay), recovers it on the waiting
session exactly as a local recovery, and replays what A could not have
delivered. No answer within the deadline, a refusal, or an unknown ``pid``
give the client a fresh connection (``recovered`` false).

No gap, no duplicate. Let *c* be the claim's place in the order and *h* the
handoff's. A applied everything before *c* to the held connection's backlog
(A's own sends at once), so the handoff carries it. After *c* A no longer
has the connection, so B must deliver, exactly once:

- the other nodes' relays placed between *c* and *h*: B reads them after
  its own claim came back (:meth:`~ikisocket_core.Hub.receive_echo`) and
  before the handoff, and keeps those that may concern a connection of
  the claimed namespace. A's own relays in that span are skipped: A queued
  them before it answered, so it had applied them already;
- B's own relays queued since the claim: placed after *c*, and applied
  locally while the connection was not there yet. Those that came back
  before the handoff join the others at their place; the rest follow.

Relays after *h* reach the connection on B as for any connection of B. The
kept relays are bounded by the backlog's limits; past them the claim
cannot be answered whole, and the handed-over connection ends with its
``disconnect`` on B while its client starts afresh. Everything runs on the
hub's clock and inputs: no I/O.
"""

from __future__ import annotations

import base64
import json
import secrets
from collections import deque
from typing import TYPE_CHECKING, Any

from ikisocket_core._errors import LocalProtocolError
from ikisocket_core._federation import _Federation
from ikisocket_core._handoff_relays import ClaimRelay, HandoffRelay
from ikisocket_core._log import logger
from ikisocket_core._relays import (
    BroadcastRelay,
    EmitRelay,
    EventRelay,
    FireRelay,
    Relay,
    RoomRelay,
)
from ikisocket_core._state import StateInput, transition
from ikisocket_core._websocket import Websocket

from ._acks import check_event
from ._connect import recovered, resume_fresh
from ._packets import PacketError, _loads, _reconstruct
from ._recovery import Backlog, _offset
from ._session import Joined
from ._timer import Callback, Timer

if TYPE_CHECKING:
    from ikisocket_core._hub import Hub

    from ._mount import SocketIO
    from ._recovery import Recoveries
    from ._session import EngineSession

__all__: list[str] = []

#: The relays that carry something to connections (what a claim keeps).
_MESSAGES = (BroadcastRelay, RoomRelay, EmitRelay, FireRelay, EventRelay)
#: The longest ``pid`` a claim carries (ours are 24 characters, a dot and a node id).
_MAX_PID = 256


def owner_of(pid: str) -> str | None:
    """The node a ``pid`` names (after its last dot), or ``None`` for one that names none."""
    head, dot, node = pid.rpartition(".")
    return node if dot and head and node else None


class Claim(Timer):
    """A ``CONNECT`` waiting for another node's handoff, until its deadline.

    Attributes:
        handoffs: The node's claims (it tells them when this one expires).
        session: The session the client came back on.
        name: The namespace.
        auth: The ``CONNECT`` payload.
        pid: The private session id asked for.
        request: The claim's id.
        echoed: Whether the claim came back from the backplane (its place is known).
        heard: The relays placed after the claim, in order (see the module docstring).
        own: This node's relays queued since the claim that did not come back yet.
        size: The bytes of ``heard`` and ``own``.
        spilled: More was kept than the backlog's bounds: it cannot be answered whole.
    """

    __slots__ = (
        "auth",
        "echoed",
        "handoffs",
        "heard",
        "name",
        "own",
        "pid",
        "request",
        "session",
        "size",
        "spilled",
    )

    def __init__(
        self, handoffs: Handoffs, session: EngineSession, name: str, auth: dict[str, Any]
    ) -> None:
        super().__init__()
        self.handoffs = handoffs
        self.session = session
        self.name = name
        self.auth = auth
        self.pid: str = auth["pid"]
        self.request = secrets.token_urlsafe(9)
        self.echoed = False
        self.heard: list[Relay] = []
        self.own: deque[Relay] = deque()
        self.size = 0
        self.spilled = False

    def fire(self, now: float) -> None:
        """No handoff came in time (see :meth:`Handoffs.expired`).

        Args:
            now: The hub's time.
        """
        self.handoffs.expired(self)


class Handoffs:
    """The mount's claims (as node B) and its answers to other nodes' claims (as node A).

    Args:
        recoveries: The mount's recovery store.
    """

    __slots__ = ("by_pid", "claims", "handed", "late", "recoveries")

    def __init__(self, recoveries: Recoveries) -> None:
        self.recoveries = recoveries
        #: Pending claims by request id, and by pid (one claim per pid at a time).
        self.claims: dict[str, Claim] = {}
        self.by_pid: dict[str, Claim] = {}
        #: Claims whose deadline passed, kept for the window so that a late handoff
        #: still ends its connection with a ``disconnect`` (oldest first).
        self.late: dict[str, Claim] = {}
        #: The pids naming this node that it handed over (oldest first, bounded): it may
        #: not refuse a claim for them, another node holds them.
        self.handed: dict[str, None] = {}

    # -- node B: claiming ----------------------------------------------------------------

    def claim(self, session: EngineSession, name: str, auth: dict[str, Any]) -> bool:
        """Ask the cluster for a connection this node does not hold, if that can work.

        Args:
            session: The session the ``CONNECT`` came on.
            name: The namespace.
            auth: The ``CONNECT`` payload.

        Returns:
            Whether a claim now waits (the ``CONNECT`` is answered later).
        """
        mount = self.recoveries.mount
        hub = mount.hub
        node = hub._node
        pid = auth.get("pid")
        if (
            node is None
            or not hub._ordered
            or not isinstance(pid, str)
            or not 0 < len(pid) <= _MAX_PID
            or pid in self.by_pid
            or _offset(auth.get("offset")) is None
            or len(self.claims) >= self.recoveries.settings.max_sessions
        ):
            return False
        owner = owner_of(pid)
        if owner == node:
            if pid not in self.handed:
                return False  # ours, not held, never handed over: nobody has it
        elif owner is not None and owner not in hub._remote:
            return False  # a node that is gone
        claim = Claim(self, session, name, auth)
        offset = auth.get("offset")
        hub._push_relay(
            ClaimRelay(
                node=node,
                request=claim.request,
                pid=pid,
                namespace=name,
                offset="" if offset is None else offset,
            )
        )
        self.claims[claim.request] = claim
        self.by_pid[pid] = claim
        hub._watching = self
        mount._connecting[session, name] = None
        mount._arm(claim, self.recoveries.settings.claim_timeout)
        return True

    def _forget(self, claim: Claim) -> None:
        del self.claims[claim.request]
        del self.by_pid[claim.pid]
        mount = self.recoveries.mount
        mount._disarm(claim)
        del mount._connecting[claim.session, claim.name]
        if not self.claims:
            mount.hub._watching = None

    def expired(self, claim: Claim) -> None:
        """No handoff came in time: the client gets a fresh connection.

        The claim is kept (bounded) until the window passes: a handoff that
        comes later is adopted and ends at once with its ``disconnect``.

        Args:
            claim: The claim.
        """
        late = self.late
        if claim.request in late:  # the window passed too: forget it
            del late[claim.request]
            return
        self._forget(claim)
        claim.heard.clear()
        claim.own.clear()
        if len(late) >= self.recoveries.settings.max_sessions:
            oldest = late.pop(next(iter(late)))
            self.recoveries.mount._disarm(oldest)
        late[claim.request] = claim
        self.recoveries.mount._arm(claim, self.recoveries.settings.max_disconnection_duration)
        self._fresh(claim)

    def _fresh(self, claim: Claim) -> None:
        resume_fresh(self.recoveries.mount, claim.session, claim.name, claim.auth)

    def sent(self, relay: Relay) -> None:
        """This node queued a relay while claims wait: each claim keeps it.

        Args:
            relay: The relay.
        """
        if isinstance(relay, _MESSAGES):
            for claim in self.claims.values():
                if self._keep(claim, relay):
                    claim.own.append(relay)

    def heard(self, relay: Relay) -> None:
        """Another node's relay was applied: the claims whose place passed keep it.

        Args:
            relay: The relay (one of the kinds that reach connections).
        """
        for claim in self.claims.values():
            if claim.echoed and self._keep(claim, relay):
                claim.heard.append(relay)

    def echoed(self, relay: Relay) -> None:
        """One of this node's relays came back from the backplane, at its place.

        Args:
            relay: The relay.
        """
        if isinstance(relay, ClaimRelay):
            claim = self.claims.get(relay.request)
            if claim is not None:
                claim.echoed = True
            return
        for claim in self.claims.values():
            own = claim.own
            if claim.echoed and own and own[0] == relay:
                claim.heard.append(own.popleft())

    def lost(self) -> None:
        """The backplane lost relays: no waiting claim can be answered whole."""
        for claim in self.claims.values():
            claim.spilled = True
            claim.heard.clear()
            claim.own.clear()

    def _keep(self, claim: Claim, relay: Relay) -> bool:
        """Whether a claim keeps a relay (bounded: past the backlog's bounds it spills)."""
        if claim.spilled:
            return False
        if isinstance(relay, EventRelay):
            if relay.namespace is not None and relay.namespace != claim.name:
                return False
            size = len(relay.data) + sum(map(len, relay.attachments))
        else:
            size = len(relay.data)  # type: ignore[attr-defined]
        settings = self.recoveries.settings
        claim.size += size
        if (
            claim.size > settings.max_backlog_bytes
            or len(claim.heard) + len(claim.own) >= settings.max_backlog
        ):
            claim.spilled = True
            claim.heard.clear()
            claim.own.clear()
            return False
        return True

    def received(self, relay: HandoffRelay) -> None:
        """A node answered a claim of this node: recover the connection, or start afresh.

        Args:
            relay: The answer.
        """
        recoveries = self.recoveries
        mount = recoveries.mount
        claim = self.claims.get(relay.request)
        if claim is None:
            claim = self.late.pop(relay.request, None)
            if claim is None:
                logger.warning("ignoring a handoff for no claim of this node (%s)", relay.request)
                return
            mount._disarm(claim)
            state = _state(relay.data) if relay.data else None
            joined = None if state is None else self._adopt(relay.node, state, claim)
            if joined is not None:  # it came too late: its client started afresh
                recoveries.give_up(joined)
            return
        self._forget(claim)
        if not relay.data:
            self._fresh(claim)  # refused: no need to wait
            return
        state = _state(relay.data)
        joined = None if state is None else self._adopt(relay.node, state, claim)
        session = claim.session
        if joined is None or claim.spilled or session.ended:
            if joined is not None:
                recoveries.give_up(joined)
            self._fresh(claim)
            return
        found = recoveries.restore(session, claim.name, claim.auth)
        assert found is joined  # adopted with bounds that answer the claim's offset
        recovered(mount, session, joined, claim.auth)
        kws = joined.kws
        for kept in (*claim.heard, *claim.own):
            if kept.node != relay.node:  # the holder applied its own before it answered
                _replay(mount.hub, kws, kept)

    def _adopt(self, holder: str, state: dict[str, Any], claim: Claim) -> Joined | None:
        """Register a handed-over connection on this node, held as if it dropped here."""
        recoveries = self.recoveries
        mount = recoveries.mount
        hub = mount.hub
        uuid = state["uuid"]
        hub._remote.get(holder, {}).pop(uuid, None)
        if hub._is_taken(uuid) or state["pid"] in recoveries.held:
            logger.warning("a handed-over connection %s is already known here: dropped", uuid)
            return None
        session = claim.session
        kws = Websocket(
            hub._owner, uuid, session.socket.request, {}, attributes=state["attributes"]
        )
        kws.namespace = state["namespace"]
        kws.auth = claim.auth
        kws.transport = session.transport
        joined = Joined(session, kws)
        kws.conn = joined
        backlog = joined.backlog = Backlog(state["pid"])
        for offset, text, attachments in state["events"]:
            size = len(text) + sum(map(len, attachments))
            backlog.entries.append((offset, text, attachments, size))
            backlog.size += size
        backlog.floor = state["floor"]
        backlog.last = backlog.held_from = max(state["last"], backlog.floor)
        kws.state = transition(kws.state, StateInput.ACCEPT)
        kws.last_activity = hub._now
        hub._register(kws)
        hub._arm_idle(kws)
        for room in state["rooms"]:
            kws.join(room)
        recoveries.offset = max(recoveries.offset, state["top"])
        mount.connections += 1
        timer = backlog.held = Callback(lambda now: recoveries.give_up(joined))
        recoveries.held[backlog.pid] = joined
        mount._arm(timer, recoveries.settings.max_disconnection_duration)
        return joined

    # -- node A: answering ---------------------------------------------------------------

    def answer(self, relay: ClaimRelay) -> None:
        """Another node claims a connection: hand it over if this node holds it.

        Args:
            relay: The claim.
        """
        recoveries = self.recoveries
        hub = recoveries.mount.hub
        node = hub._node
        assert node is not None
        joined = recoveries.held.get(relay.pid)
        if joined is None or joined.kws.namespace != relay.namespace:
            if owner_of(relay.pid) == node and relay.pid not in self.handed:
                # Ours, and not held anywhere: no need to wait for it.
                hub._push_relay(HandoffRelay(node=node, to=relay.node, request=relay.request))
            return  # not ours: the holder (if any) answers
        backlog: Backlog = joined.backlog
        offset = _offset(relay.offset or None)
        data = None
        if not backlog.broken and offset is not None and backlog.floor <= offset <= backlog.last:
            data = _handoff_data(joined, offset, recoveries.offset)
            if data is not None and len(data) > hub.max_relay_size:
                logger.warning(
                    "connection %s not handed over: %d bytes, over max_relay_size",
                    joined.kws.uuid,
                    len(data),
                )
                data = None
        if data is None:  # its client starts afresh there: the hold ends here
            recoveries.give_up(joined)
            hub._push_relay(HandoffRelay(node=node, to=relay.node, request=relay.request))
            return
        kws = joined.kws
        recoveries.release(joined)
        backlog.entries.clear()
        backlog.size = 0
        recoveries.mount.connections -= 1
        kws.state = transition(kws.state, StateInput.PEER_GONE)
        hub._unregister(kws)  # no terminal event: it goes on, on the other node
        hub._remote.setdefault(relay.node, {})[kws.uuid] = None
        handed = self.handed
        if len(handed) >= recoveries.settings.max_sessions:
            del handed[next(iter(handed))]
        handed[backlog.pid] = None
        hub._push_relay(HandoffRelay(node=node, to=relay.node, request=relay.request, data=data))


def _handoff_data(joined: Joined, offset: int, top: int) -> bytes | None:
    """A held connection's state as a handoff's JSON, or ``None`` if its attributes are not JSON."""
    kws = joined.kws
    backlog: Backlog = joined.backlog
    state = {
        "uuid": kws.uuid,
        "pid": backlog.pid,
        "namespace": kws.namespace,
        "rooms": sorted(kws.rooms),
        "attributes": dict(kws.attributes),
        "events": [
            [o, text, [base64.b64encode(a).decode("ascii") for a in atts]]
            for o, text, atts, _ in backlog.entries
            if o > offset
        ],
        "floor": offset,
        "last": backlog.last,
        "top": top,
    }
    try:
        return json.dumps(state, separators=(",", ":"), allow_nan=False).encode("utf-8")
    except (TypeError, ValueError) as exc:
        logger.warning("connection %s not handed over: attributes not JSON (%s)", kws.uuid, exc)
        return None


def _state(data: bytes) -> dict[str, Any] | None:
    """A handoff's state, checked, or ``None`` (logged) when it is not one."""
    try:
        doc = json.loads(data)
        state = {
            "uuid": doc["uuid"],
            "pid": doc["pid"],
            "namespace": doc["namespace"],
            "rooms": doc["rooms"],
            "attributes": doc["attributes"],
            "events": [
                (o, text, tuple(base64.b64decode(a, validate=True) for a in atts))
                for o, text, atts in doc["events"]
            ],
            "floor": doc["floor"],
            "last": doc["last"],
            "top": doc["top"],
        }
        strings = (state["uuid"], state["pid"], state["namespace"], *state["rooms"])
        numbers = (state["floor"], state["last"], state["top"], *(e[0] for e in state["events"]))
        if (
            not all(isinstance(s, str) and s for s in strings)
            or not all(n.__class__ is int and n >= 0 for n in numbers)
            or not all(isinstance(e[1], str) for e in state["events"])
            or not isinstance(state["attributes"], dict)
        ):
            raise ValueError("a field has the wrong type")
    except (KeyError, TypeError, ValueError) as exc:
        logger.warning("ignoring a malformed handoff: %s", exc)
        return None
    return state


def _replay(hub: Hub, kws: Websocket, relay: Relay) -> None:
    """Apply a kept relay to one recovered connection only (if it was one of its targets)."""
    uuid = kws.uuid
    if isinstance(relay, EmitRelay):
        if uuid in relay.uuids:
            hub._send((kws,), relay.data, relay.kind)
        return
    if isinstance(relay, EventRelay):
        _replay_event(hub, kws, relay)
        return
    assert isinstance(relay, (BroadcastRelay, RoomRelay, FireRelay))
    room = None if isinstance(relay, BroadcastRelay) else relay.room
    if relay.exclude == uuid or (room is not None and room not in kws.rooms):
        return
    if isinstance(relay, FireRelay):
        hub._fire_one(kws, relay.event, relay.data)
    else:
        hub._send((kws,), relay.data, relay.kind)


def _replay_event(hub: Hub, kws: Websocket, relay: EventRelay) -> None:
    uuid = kws.uuid
    room = relay.room
    aimed = uuid in relay.uuids if relay.uuids else room is None or room in kws.rooms
    namespace = relay.namespace
    if not aimed or relay.exclude == uuid or namespace not in (None, kws.namespace):
        return
    try:
        check_event(relay.event)
        args = _reconstruct(_loads(relay.data.decode("utf-8")), relay.attachments)
    except (UnicodeDecodeError, PacketError, LocalProtocolError):
        return  # the node that applied it when it came logged it already
    if isinstance(args, list):
        hub._emit_event((kws,), relay.event, tuple(args))


class _HandoffLayer(_Federation):
    """The hub's side of recovery across nodes: claims, handoffs and echoes (see the module)."""

    _sio: SocketIO | None

    def receive_echo(self, relay: Relay) -> None:
        """A relay of this node came back from the backplane, in its place among the others.

        A backplane that delivers every node's relays to every node in one
        order (``Hub.federate(..., ordered=True)``, e.g. the Redis backplane
        in Streams mode) calls it for each of this node's own relays, where
        :meth:`receive_relay` is called for the others'. Socket.IO recovery
        across nodes uses it to know which relays a claimed connection's old
        node could not deliver. Other relays are ignored; it is cheap while
        no claim waits.

        Args:
            relay: The relay, as read back.
        """
        watching = self._watching
        if watching is not None and relay.node == self._node:
            watching.echoed(relay)

    def _apply_handoff(self, relay: ClaimRelay | HandoffRelay) -> None:
        """Another node's claim or handoff (ignored without Socket.IO recovery here)."""
        sio = self._sio
        recoveries = None if sio is None else sio._recovery
        if recoveries is None:
            return
        if isinstance(relay, ClaimRelay):
            recoveries.handoffs.answer(relay)
        elif relay.to == self._node:
            recoveries.handoffs.received(relay)

    def _apply(
        self, relay: BroadcastRelay | RoomRelay | EmitRelay | FireRelay | EventRelay
    ) -> None:
        super()._apply(relay)
        watching = self._watching
        if watching is not None:
            watching.heard(relay)

    def receive_relay_loss(self, error: BaseException) -> None:
        """The backplane lost relays meant for this node: tell every connection.

        Runs the ``error`` listeners of each of this node's connections with
        ``error``; the connections stay open. A claim for a Socket.IO
        connection of another node that waits meanwhile can no longer be
        answered without a gap: its client gets a fresh connection.

        Args:
            error: What was lost (e.g. the Redis backplane's ``Resync``).

        Raises:
            LocalProtocolError: The hub is not federated.
        """
        watching = self._watching
        if watching is not None:
            watching.lost()
        super().receive_relay_loss(error)
