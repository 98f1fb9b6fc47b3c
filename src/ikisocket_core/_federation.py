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

from ._dispatch import _Dispatcher, _payload
from ._errors import LocalProtocolError
from ._events import MessageKind, _message_kind
from ._relays import (
    AbsenceRelay,
    BroadcastRelay,
    EmitRelay,
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

    def federate(self, node_id: str) -> None:
        """Make this hub one node of several that share connections through a backplane.

        From now on broadcasts, room emits and fires, hub-wide fires, emits
        to remote connections, and the opening and ending of connections are
        also queued as :class:`~ikisocket_core.Relay` values for the backplane
        (:meth:`drain_relays`), and the backplane feeds other nodes' relays in
        with :meth:`receive_relay`.
        Calling it again with the same id does nothing.

        Args:
            node_id: This node's id, unique among the nodes.

        Raises:
            LocalProtocolError: The id is empty, or the hub is already a node
                with another id.
        """
        if not isinstance(node_id, str) or not node_id:
            raise LocalProtocolError("a node id is a non-empty string")
        if self._node is not None and self._node != node_id:
            raise LocalProtocolError(f"this hub is already federated as node {self._node!r}")
        self._node = node_id

    def drain_relays(self) -> list[Relay]:
        """Take every queued relay, oldest first, and clear the queue.

        Returns:
            The relays for the backplane to publish, in order.
        """
        relays = self._relays
        self._relays = []
        self._relay_wakeup_pending = False
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

    def receive_relay(self, relay: Relay) -> None:
        """Apply a relay another node published; it is not relayed again.

        Messages go to this node's connections (honouring ``exclude``), a
        :class:`~ikisocket_core.FireRelay` runs listeners on this node's
        connections (or its room's members), presence and absence relays
        update what this hub knows of the other node, and a
        :class:`~ikisocket_core.HelloRelay` is answered with a
        :class:`~ikisocket_core.PresenceRelay` listing this node's
        connections. Relays from this node itself are ignored. Commands queue
        actions as commands from a background job do: the driver's wakeup
        (see :meth:`set_wakeup`) is called.

        Args:
            relay: The relay.

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
            self._remote.setdefault(node, {}).update(dict.fromkeys(relay.uuids))
        elif isinstance(relay, AbsenceRelay):
            known = self._remote.get(node)
            if known is not None:
                for u in relay.uuids:
                    known.pop(u, None)
        elif isinstance(relay, HelloRelay):
            self._remote.setdefault(node, {})
            self._push_relay(PresenceRelay(node=self._node, uuids=tuple(self._conns)))
        elif isinstance(relay, (BroadcastRelay, RoomRelay, EmitRelay, FireRelay)):
            self._depth += 1
            try:
                self._apply(relay)
            finally:
                self._depth -= 1
                self._flush_outside()
        else:
            raise LocalProtocolError(f"unknown relay {relay!r}")

    def forget_node(self, node_id: str) -> None:
        """Drop what this hub knows of another node's connections (it is gone).

        Args:
            node_id: The node's id.
        """
        self._remote.pop(node_id, None)

    # -- internals -----------------------------------------------------------------------

    def _apply(self, relay: BroadcastRelay | RoomRelay | EmitRelay | FireRelay) -> None:
        conns = self._conns
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
