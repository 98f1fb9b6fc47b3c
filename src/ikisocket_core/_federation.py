"""Federation: one application over several processes, through relays and a backplane.

The third layer of the :class:`~ikisocket_core.Hub`. After
:meth:`~ikisocket_core.Hub.federate`, what a command does on this node is also
queued as a :class:`~ikisocket_core.Relay` for the backplane (an output queue,
like the actions), and the backplane feeds the other nodes' relays in with
:meth:`~ikisocket_core.Hub.receive_relay`. The core never talks to the
backplane itself: ``ikisocket_adapters.redis`` is one backplane, the in-memory
bus of the tests another.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from ._ack_relays import AckAnswerRelay, AckRequestRelay, AckTargetsRelay
from ._dispatch import _Dispatcher, _payload
from ._errors import LocalProtocolError
from ._events import EVENT_ERROR, MessageKind, _message_kind
from ._handoff_relays import ClaimRelay, HandoffRelay
from ._relays import (
    _PRESENCE_CHUNK,
    AbsenceRelay,
    BroadcastRelay,
    EmitRelay,
    EventRelay,
    FireRelay,
    HelloRelay,
    PresenceRelay,
    Relay,
    RoomRelay,
)

if TYPE_CHECKING:
    from ._websocket import Websocket

__all__: list[str] = []


class _Federation(_Dispatcher):
    """The hub's federation layer: turning it on, the relay queue's outputs and inputs."""

    if TYPE_CHECKING:  # the Socket.IO layer above shows another node's named events

        def _apply_event(self, relay: EventRelay) -> None: ...

        def _apply_ack(self, relay: AckRequestRelay | AckTargetsRelay | AckAnswerRelay) -> None: ...

        def _acks_node_gone(self, node: str) -> None: ...

        def _apply_handoff(self, relay: ClaimRelay | HandoffRelay) -> None: ...

    #: Whether the backplane delivers every node's relays in one order (see ``federate``).
    _ordered = False

    def federate(
        self,
        node_id: str,
        *,
        node_ttl: float | None = None,
        presence_interval: float | None = None,
        max_relays: int | None = None,
        max_relay_size: int | None = None,
        ordered: bool | None = None,
    ) -> None:
        """Make this hub one node of several that share connections through a backplane.

        From now on broadcasts, room emits and fires, hub-wide fires, emits
        to remote connections, named events (``emit_event``), acks asked of
        other nodes' clients (``emit_with_ack``, ``emit_with_acks``), and the opening
        and ending of connections are
        also queued as :class:`~ikisocket_core.Relay` values for the backplane
        (:meth:`drain_relays`), and the backplane feeds other nodes' relays in
        with :meth:`receive_relay`. Calling it again with the same id changes
        the settings given and keeps the others.

        The hub has no clock: the backplane tells it the time with
        :meth:`tick_federation` (and ``receive_relay(..., now=...)``), and
        the two timed settings count on that clock.

        Args:
            node_id: This node's id, unique among the nodes.
            node_ttl: Forget another node (its connections leave
                :attr:`all_connections` and their UUIDs are free again) when
                nothing was heard from it for this many seconds. ``None``
                (the default) never forgets a node by itself.
            presence_interval: Queue this node's full membership (a
                :class:`~ikisocket_core.PresenceRelay` snapshot, which also
                serves as its heartbeat) every this many seconds. Keep it
                well under the other nodes' ``node_ttl``. ``None`` (the
                default) sends snapshots only when another node says hello.
            max_relays: How many relays wait for the backplane at most
                (default 10,000). When the queue is full (no backplane
                drains it, or it is far behind) the oldest relay is dropped,
                counted in :attr:`dropped_relays`, with one warning on the
                ``ikisocket`` logger per backlog.
            max_relay_size: The largest data (bytes) a broadcast, room emit,
                fire, remote emit or named event may carry to other nodes
                (default 512 KiB, far below Redis' pub/sub output-buffer
                limits); a larger one
                raises :class:`~ikisocket_core.RelayTooLarge` before anything is
                sent.
            ordered: Whether the backplane delivers every node's relays to
                every node in one order, and this node's own back to it with
                :meth:`receive_echo` (default ``False``). Socket.IO
                connection-state recovery works across nodes only then.

        Raises:
            LocalProtocolError: The id is empty, the hub is already a node
                with another id, or a setting is out of range.
        """
        if not isinstance(node_id, str) or not node_id:
            raise LocalProtocolError("a node id is a non-empty string")
        if self._node is not None and self._node != node_id:
            raise LocalProtocolError(f"this hub is already federated as node {self._node!r}")
        for name, value in (("node_ttl", node_ttl), ("presence_interval", presence_interval)):
            if value is not None and not value > 0:
                raise LocalProtocolError(f"{name} must be positive")
        for name, count in (("max_relays", max_relays), ("max_relay_size", max_relay_size)):
            if count is not None and (count.__class__ is not int or count < 1):
                raise LocalProtocolError(f"{name} must be an int >= 1")
        self._node = node_id
        if node_ttl is not None:
            self._node_ttl = node_ttl
        if presence_interval is not None:
            self._presence_interval = presence_interval
            self._next_presence = None  # at the next tick
        if max_relays is not None:
            self._max_relays = max_relays
            while len(self._relays) > max_relays:
                self._relays.popleft()
                self._relays_dropped += 1
        if max_relay_size is not None:
            self._max_relay_size = max_relay_size
        if ordered is not None:
            self._ordered = bool(ordered)

    @property
    def max_relays(self) -> int:
        """How many relays wait for the backplane at most (see :meth:`federate`)."""
        return self._max_relays

    @property
    def max_relay_size(self) -> int:
        """The largest data a relay carries, in bytes (see :meth:`federate`)."""
        return self._max_relay_size

    @property
    def dropped_relays(self) -> int:
        """How many relays the full queue dropped since the hub was made."""
        return self._relays_dropped

    def drain_relays(self) -> list[Relay]:
        """Take every queued relay, oldest first, and clear the queue.

        Returns:
            The relays for the backplane to publish, in order.
        """
        relays = list(self._relays)
        self._relays.clear()
        self._relay_wakeup_pending = False
        self._relays_overflowing = False
        return relays

    def set_relay_wakeup(self, callback: Callable[[], None] | None) -> None:
        """Register what to call when a relay is queued.

        The hub calls ``callback`` once when a relay is queued, then not again
        until the next :meth:`drain_relays`, also from inside input calls (the
        backplane is not the driver of the connections). The callback must
        not drain synchronously.

        Args:
            callback: A plain function, or ``None`` to remove it.
        """
        self._relay_wakeup = callback

    def presence_relays(self) -> list[PresenceRelay]:
        """This node's full membership as a snapshot, without queueing it.

        What a backplane publishes when it (re)connects; :meth:`tick_federation`
        and the answer to a :class:`~ikisocket_core.HelloRelay` queue the same.

        Returns:
            The snapshot's relays (one, possibly empty, up to 1,000 connections;
            more for a larger node), in order.

        Raises:
            LocalProtocolError: The hub is not federated.
        """
        node = self._node
        if node is None:
            raise LocalProtocolError("presence_relays needs a federated hub (see Hub.federate)")
        uuids = tuple(self._conns)
        chunk = _PRESENCE_CHUNK
        parts = max(1, -(-len(uuids) // chunk))
        return [
            PresenceRelay(node=node, uuids=uuids[i * chunk : (i + 1) * chunk], part=i, parts=parts)
            for i in range(parts)
        ]

    def tick_federation(self, now: float) -> tuple[str, ...]:
        """Tell the federation the time: send the periodic snapshot, forget silent nodes.

        Queues this node's membership (see :meth:`presence_relays`) when
        ``presence_interval`` passed since the last one (at the first call
        too), and forgets every other node not heard from for ``node_ttl``
        seconds (see :meth:`forget_node`). Call it from the backplane at
        least every ``presence_interval``; no actions come of it.

        Args:
            now: The current monotonic time (the clock ``receive_relay`` is given).

        Returns:
            The ids of the nodes it forgot.

        Raises:
            LocalProtocolError: The hub is not federated.
        """
        if self._node is None:
            raise LocalProtocolError("tick_federation needs a federated hub (see Hub.federate)")
        self._federation_now = now
        interval = self._presence_interval
        if interval is not None and (self._next_presence is None or now >= self._next_presence):
            self._next_presence = now + interval
            for relay in self.presence_relays():
                self._push_relay(relay)
        ttl = self._node_ttl
        if ttl is None:
            return ()
        gone = tuple(node for node, heard in self._heard.items() if now - heard >= ttl)
        for node in gone:
            self.forget_node(node)
        return gone

    def receive_relay(self, relay: Relay, *, now: float | None = None) -> None:
        """Apply a relay another node published; it is not relayed again.

        Messages go to this node's connections (honouring ``exclude``), a
        :class:`~ikisocket_core.FireRelay` runs listeners on this node's
        connections (or its room's members), an
        :class:`~ikisocket_core.EventRelay` sends its named event, an ack relay
        asks this node's clients or brings their answers back (see
        :meth:`emit_with_ack`), presence news and absence
        relays update what this hub knows of the other node, a presence
        snapshot replaces it, and a :class:`~ikisocket_core.HelloRelay` is
        answered with this node's snapshot, and a
        :class:`~ikisocket_core.ClaimRelay` or :class:`~ikisocket_core.HandoffRelay`
        goes to Socket.IO recovery across nodes. Any relay counts as a sign of
        life of its node (for ``node_ttl``). Relays from this node itself
        are ignored. Commands queue actions as commands from a background job
        do: the driver's wakeup (see :meth:`set_wakeup`) is called.

        Args:
            relay: The relay.
            now: When it arrived, on the clock :meth:`tick_federation` is
                given; by default the time of the last tick (not recorded
                before the first).

        Raises:
            LocalProtocolError: The hub is not federated, or the relay is of
                a kind this hub does not know.
        """
        if self._node is None:
            raise LocalProtocolError("receive_relay needs a federated hub (see Hub.federate)")
        node = relay.node
        if node == self._node:
            return
        if isinstance(relay, PresenceRelay):
            self._receive_presence(relay)
        elif isinstance(relay, AbsenceRelay):
            known = self._remote.get(node)
            if known is not None:
                for u in relay.uuids:
                    known.pop(u, None)
        elif isinstance(relay, HelloRelay):
            self._remote.setdefault(node, {})
            for presence in self.presence_relays():
                self._push_relay(presence)
        elif isinstance(relay, (BroadcastRelay, RoomRelay, EmitRelay, FireRelay, EventRelay)):
            self._depth += 1
            try:
                self._apply(relay)
            finally:
                self._depth -= 1
                self._flush_outside()
        elif isinstance(relay, (AckRequestRelay, AckTargetsRelay, AckAnswerRelay)):
            self._depth += 1
            try:
                self._apply_ack(relay)
            finally:
                self._depth -= 1
                self._flush_outside()
        elif isinstance(relay, (ClaimRelay, HandoffRelay)):  # Socket.IO recovery across nodes
            self._depth += 1
            try:
                self._apply_handoff(relay)
            finally:
                self._depth -= 1
                self._flush_outside()
        else:
            raise LocalProtocolError(f"unknown relay {relay!r}")
        when = self._federation_now if now is None else now
        if when is not None:
            self._heard[node] = when

    def receive_relay_loss(self, error: BaseException) -> None:
        """The backplane lost relays meant for this node: tell every connection.

        Runs the ``error`` listeners of each of this node's connections with
        ``error`` (its type and attributes say what was lost); the connections
        stay open, and the application resyncs them as it sees fit. Commands
        the listeners give queue actions as commands from a background job
        do: the driver's wakeup (see :meth:`set_wakeup`) is called.

        Args:
            error: What was lost (e.g. the Redis backplane's ``Resync``).

        Raises:
            LocalProtocolError: The hub is not federated.
        """
        if self._node is None:
            raise LocalProtocolError("receive_relay_loss needs a federated hub (see Hub.federate)")
        self._depth += 1
        try:
            for kws in tuple(self._conns.values()):
                self._dispatch(kws, EVENT_ERROR, b"", MessageKind.TEXT, error)
        finally:
            self._depth -= 1
            self._flush_outside()

    def node_of(self, uuid: str) -> str | None:
        """The id of the node that has a connection, as far as this hub knows.

        A backplane uses it to send a direct message to that node only.

        Args:
            uuid: The connection's UUID.

        Returns:
            This node's id for one of its own connections, another node's id
            for a connection that node announced, or ``None`` (unknown, or the
            hub is not federated).
        """
        if uuid in self._conns:
            return self._node
        for node, members in self._remote.items():
            if uuid in members:
                return node
        return None

    def forget_node(self, node_id: str) -> None:
        """Drop what this hub knows of another node's connections (it is gone).

        Its connections leave :attr:`all_connections`, ``emit_to`` one of
        them raises :class:`~ikisocket_core.UnknownConnection`, and their
        UUIDs may be used again. Acks still awaited from its clients fail
        with a :class:`~ikisocket_core.ConnectionClosed` (1006). A relay
        from the node later makes it known again.

        Args:
            node_id: The node's id.
        """
        self._remote.pop(node_id, None)
        self._heard.pop(node_id, None)
        self._snapshots.pop(node_id, None)
        self._depth += 1
        try:
            self._acks_node_gone(node_id)
        finally:
            self._depth -= 1
            self._flush_outside()

    # -- internals -----------------------------------------------------------------------

    def _receive_presence(self, relay: PresenceRelay) -> None:
        node = relay.node
        if not relay.parts:  # news: merged
            self._remote.setdefault(node, {}).update(dict.fromkeys(relay.uuids))
            return
        if relay.part == 0:
            members: dict[str, None] = {}
        else:
            expected, members = self._snapshots.pop(node, (0, {}))
            if expected != relay.part:  # a part went missing: wait for the next snapshot
                return
        members.update(dict.fromkeys(relay.uuids))
        if relay.part + 1 == relay.parts:
            self._remote[node] = members  # replaced, not merged: no ghosts survive it
        else:
            self._snapshots[node] = (relay.part + 1, members)

    def _apply(
        self, relay: BroadcastRelay | RoomRelay | EmitRelay | FireRelay | EventRelay
    ) -> None:
        conns = self._conns
        if isinstance(relay, EventRelay):
            self._apply_event(relay)
            return
        if isinstance(relay, EmitRelay):
            self._send(
                tuple({conns[u]: None for u in relay.uuids if u in conns}), relay.data, relay.kind
            )
            return
        skip = None if relay.exclude is None else conns.get(relay.exclude)
        room = None if isinstance(relay, BroadcastRelay) else relay.room
        found: tuple[Websocket, ...] | dict[Websocket, None]
        found = tuple(conns.values()) if room is None else self._room_members(room)
        targets = tuple(k for k in found if k is not skip)
        if isinstance(relay, FireRelay):
            for kws in targets:
                self._fire_one(kws, relay.event, relay.data)
        else:
            self._send(targets, relay.data, relay.kind)

    def _relay_data(self, data: bytes | str, kind: MessageKind) -> tuple[bytes, MessageKind]:
        """A message's data and kind as a relay carries them (validated as for a send)."""
        if kind.__class__ is not MessageKind:
            kind = _message_kind(kind)
        return _payload(data, kind), kind
