"""Who is where: the live connections by UUID, the rooms, and the other nodes' connections.

The registry is the bottom layer of the :class:`~ikisocket_core.Hub`. A
connection is in it exactly while it is ``OPEN``: it enters when accepted and
leaves the moment it starts closing, before its terminal listeners run. A
federated hub also remembers which connections the other nodes announced
(``present``/``absent`` relays), so that ``emit_to`` can tell "elsewhere" from
"nowhere", and it queues the relays that announce its own.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ._errors import DuplicateUUID, RelayTooLarge, UnknownConnection
from ._events import MessageKind
from ._relays import AbsenceRelay, FireRelay, PresenceRelay, Relay, RoomRelay

if TYPE_CHECKING:
    from ._hub import Hub
    from ._socketio._handoff import Handoffs
    from ._websocket import Websocket

__all__ = ["Room"]

logger = logging.getLogger("ikisocket")

#: Relays a federated hub keeps for its backplane before it drops the oldest.
_MAX_RELAYS = 10_000
#: The largest data a relay carries (bytes): a few of them stay far below Redis' default
#: pub/sub client-output-buffer limits (8 MiB soft, 32 MiB hard).
_MAX_RELAY_SIZE = 512 * 1024

#: Broadcasts that skip a connection (``except_self``) and find it by a scan before the
#: registry builds an index of positions: building one costs about as much as this many
#: scans (wall time, ``timeit``, 10,000 connections), so a registry that keeps changing
#: never pays more than twice what scanning alone would (the ski-rental bound).
_SCANS_BEFORE_INDEX = 8


class Room:
    """A named group of connections, from :meth:`Hub.to` or :meth:`Websocket.to`.

    Args:
        hub: The hub the room lives in.
        name: The room name.
        exclude: A connection that this view never sends to (the sender).
    """

    __slots__ = ("_exclude", "_hub", "name")

    def __init__(self, hub: Hub, name: str, exclude: Websocket | None = None) -> None:
        self._hub = hub
        self.name = name
        self._exclude = exclude

    @property
    def uuids(self) -> tuple[str, ...]:
        """The UUIDs of the room's members on this node, in joining order."""
        return tuple(k.uuid for k in self._hub._room_members(self.name))

    def __len__(self) -> int:
        return len(self._hub._room_members(self.name))

    def _targets(self) -> tuple[Websocket, ...]:
        """The members on this node but the excluded one, in joining order."""
        members = self._hub._room_members(self.name)
        exclude = self._exclude
        if exclude is None or exclude not in members:
            return tuple(members)
        # A copy without it: C loops, a third of a filter's cost per member.
        rest = members.copy()
        del rest[exclude]
        return tuple(rest)

    def emit(self, data: bytes | str, kind: MessageKind = MessageKind.TEXT) -> None:
        """Send a message to every member (but the excluded one), on every node.

        Args:
            data: Bytes or text.
            kind: ``TEXT`` or ``BINARY``.

        Raises:
            TypeError: ``kind`` is not a message kind.
            ValueError: ``kind`` is an int other than 1 and 2, or ``TEXT``
                data is not valid UTF-8.
            RelayTooLarge: The hub is federated and ``data`` is larger than
                its ``max_relay_size`` (nothing was sent).
        """
        hub = self._hub
        relay = None
        if hub._node is not None:  # checked (and refused if too large) before any send
            payload, relay_kind = hub._relay_data(data, kind)
            hub._check_relay_size(payload)
            relay = RoomRelay(
                node=hub._node,
                room=self.name,
                data=payload,
                kind=relay_kind,
                exclude=None if self._exclude is None else self._exclude.uuid,
            )
        targets = self._targets()
        hub._send(targets, data, kind)
        if relay is not None:
            hub._push_relay(relay)

    def emit_event(self, event: str, *args: Any) -> None:
        """Send a named event to every member (but the excluded one), on every node.

        Socket.IO members receive it as that event, in their namespace; plain
        WebSocket members the JSON text ``[event, *args]``.

        Args:
            event: The event name.
            *args: Its arguments (JSON values; ``bytes`` for Socket.IO only).

        Raises:
            LocalProtocolError: A reserved event name.
            TypeError: An argument cannot travel as JSON.
            RelayTooLarge: The hub is federated and the encoded arguments are
                larger than its ``max_relay_size`` (nothing was sent).
        """
        hub = self._hub
        relay = hub._event_relay(event, args, None, room=self.name, exclude=self._exclude)
        targets = self._targets()
        hub._emit_event(targets, event, args)
        if relay is not None:
            hub._push_relay(relay)

    def fire(self, event: str, data: bytes | str = b"") -> None:
        """Run ``event``'s listeners once for each member (but the excluded one), on every node.

        Args:
            event: The event name.
            data: The payload's data.

        Raises:
            RelayTooLarge: The hub is federated and ``data`` is larger than
                its ``max_relay_size`` (no listener ran).
        """
        hub = self._hub
        exclude = self._exclude
        relay = None
        if hub._node is not None:  # checked (and refused if too large) before any listener
            raw = data.encode("utf-8") if isinstance(data, str) else data
            hub._check_relay_size(raw)
            relay = FireRelay(
                node=hub._node,
                event=event,
                data=raw,
                room=self.name,
                exclude=None if exclude is None else exclude.uuid,
            )
        hub._depth += 1
        try:
            for kws in tuple(hub._room_members(self.name)):
                if kws is not exclude:
                    hub._fire_one(kws, event, data)
        finally:
            hub._depth -= 1
            hub._flush_outside()
        if relay is not None:
            hub._push_relay(relay)


class _Registry:
    """The hub's bottom layer: live connections, rooms, remote presence, the relay queue."""

    # Slots for the attributes this layer sets (``_Dispatcher`` does the same for its own),
    # so that reading them, several times per message, is a slot read. The hub has more
    # attributes than CPython keeps in an instance's shared-key values (30): with all of
    # them in its ``__dict__`` every read was a dict lookup. ``Hub`` declares no slots, so
    # an instance keeps a ``__dict__`` for the rest (and for any attribute an application
    # adds) and can be weakly referenced.
    __slots__ = (
        "_all",
        "_conns",
        "_federation_now",
        "_heard",
        "_max_relay_size",
        "_max_relays",
        "_next_presence",
        "_node",
        "_node_ttl",
        "_positions",
        "_presence_interval",
        "_relay_wakeup",
        "_relay_wakeup_pending",
        "_relays",
        "_relays_dropped",
        "_relays_overflowing",
        "_remote",
        "_rooms",
        "_scans",
        "_snapshots",
        "_watching",
    )

    def __init__(self) -> None:
        self._conns: dict[str, Websocket] = {}
        #: ``tuple(self._conns.values())``, kept until the registry changes (broadcasts).
        self._all: tuple[Websocket, ...] | None = None
        #: Each connection's index in ``_all``, once ``_scans`` reached
        #: ``_SCANS_BEFORE_INDEX`` (see ``_all_but``); dropped with ``_all``.
        self._positions: dict[Websocket, int] | None = None
        self._scans = 0
        self._rooms: dict[str, dict[Websocket, None]] = {}
        # Federation (off until ``federate``): relays for the backplane, remote presence.
        self._node: str | None = None
        self._relays: deque[Relay] = deque()
        self._max_relays = _MAX_RELAYS
        self._max_relay_size = _MAX_RELAY_SIZE
        self._relays_dropped = 0
        self._relays_overflowing = False  # dropped since the last drain (warned once)
        self._relay_wakeup: Callable[[], None] | None = None
        self._relay_wakeup_pending = False
        #: Each other node's connections, as its last snapshot and news since then say.
        self._remote: dict[str, dict[str, None]] = {}
        #: When each other node was last heard from (the ``now`` of ``receive_relay``).
        self._heard: dict[str, float] = {}
        #: A node's snapshot being received: the next part expected, the connections so far.
        self._snapshots: dict[str, tuple[int, dict[str, None]]] = {}
        self._node_ttl: float | None = None
        self._presence_interval: float | None = None
        self._next_presence: float | None = None
        self._federation_now: float | None = None
        #: Socket.IO claims to other nodes waiting, which keep what this node relays
        #: meanwhile (see ``_socketio._handoff``), or ``None``.
        self._watching: Handoffs | None = None

    # -- looking connections up -----------------------------------------------------------

    @property
    def connections(self) -> tuple[str, ...]:
        """The UUIDs of the live connections."""
        return tuple(self._conns)

    def __len__(self) -> int:
        return len(self._conns)

    def __contains__(self, uuid: object) -> bool:
        return uuid in self._conns

    def get(self, uuid: str) -> Websocket:
        """The live connection with this UUID.

        Args:
            uuid: The UUID.

        Returns:
            Its handle.

        Raises:
            UnknownConnection: No live connection has it.
        """
        try:
            return self._conns[uuid]
        except KeyError:
            raise UnknownConnection(uuid) from None

    @property
    def rooms(self) -> dict[str, tuple[str, ...]]:
        """Every non-empty room and its members' UUIDs."""
        return {name: tuple(k.uuid for k in m) for name, m in self._rooms.items()}

    @property
    def node_id(self) -> str | None:
        """This hub's node id, or ``None`` when it is not federated."""
        return self._node

    @property
    def remote_nodes(self) -> tuple[str, ...]:
        """The other nodes this hub knows connections of."""
        return tuple(self._remote)

    @property
    def all_connections(self) -> tuple[str, ...]:
        """The UUIDs of the live connections on this node and, when federated, on the others."""
        every = dict.fromkeys(self._conns)
        for members in self._remote.values():
            every.update(members)
        return tuple(every)

    # -- changes ---------------------------------------------------------------------------

    def _is_taken(self, uuid: str) -> bool:
        return uuid in self._conns or self._is_remote(uuid)

    def _is_remote(self, uuid: str) -> bool:
        return any(uuid in members for members in self._remote.values())

    def _push_relay(self, relay: Relay) -> None:
        relays = self._relays
        if len(relays) >= self._max_relays:
            # Nobody drains (no backplane runs, or it is far behind): the oldest goes, so
            # memory stays bounded; one warning per backlog, every drop counted.
            relays.popleft()
            self._relays_dropped += 1
            if not self._relays_overflowing:
                self._relays_overflowing = True
                logger.warning(
                    "federated hub %s: relay queue full (max_relays=%d), dropping the oldest",
                    self._node,
                    self._max_relays,
                )
        relays.append(relay)
        watching = self._watching
        if watching is not None:
            watching.sent(relay)
        if not self._relay_wakeup_pending and self._relay_wakeup is not None:
            self._relay_wakeup_pending = True
            self._relay_wakeup()

    def _check_relay_size(self, data: bytes) -> None:
        if len(data) > self._max_relay_size:
            raise RelayTooLarge(len(data), self._max_relay_size)

    def _all_but(self, skip: Websocket | None) -> tuple[Websocket, ...]:
        """Every live connection but ``skip``, in registration order (all if it is not one).

        A chat's every broadcast skips its sender (the seed's ``except``). A scan
        compares it with each connection (about 120 instructions apiece); once
        the same registry has been scanned ``_SCANS_BEFORE_INDEX`` times, an index
        of positions makes each later skip a lookup, until the registry changes.
        """
        everyone = self._all
        if everyone is None:
            everyone = self._all = tuple(self._conns.values())
        if skip is None:
            return everyone
        positions = self._positions
        if positions is None and self._scans >= _SCANS_BEFORE_INDEX:
            positions = self._positions = dict(zip(everyone, range(len(everyone)), strict=True))
        if positions is not None:
            at = positions.get(skip)
        else:
            self._scans += 1
            try:
                at = everyone.index(skip)
            except ValueError:
                at = None
        if at is None:  # closed, or another hub's: nothing to skip
            return everyone
        return everyone[:at] + everyone[at + 1 :]

    def _reorder(self) -> None:
        """The set or order of connections changed: drop ``_all`` and what was learnt of it."""
        self._all = self._positions = None
        self._scans = 0

    def _register(self, kws: Websocket) -> None:
        uuid = kws.uuid
        self._conns[uuid] = kws
        self._reorder()
        if self._node is not None:
            self._push_relay(PresenceRelay(node=self._node, uuids=(uuid,)))

    def _unregister(self, kws: Websocket) -> None:
        uuid = kws.uuid
        del self._conns[uuid]
        self._reorder()
        if self._node is not None:
            self._push_relay(AbsenceRelay(node=self._node, uuids=(uuid,)))
        for room in kws.rooms:
            members = self._rooms[room]
            del members[kws]
            if not members:
                del self._rooms[room]

    def _rekey(self, kws: Websocket, new: str) -> None:
        # Only for an open connection with a different UUID (the Websocket checks both).
        if self._is_taken(new):
            raise DuplicateUUID(new)
        old = kws.uuid
        del self._conns[old]
        self._conns[new] = kws
        self._reorder()
        if self._node is not None:
            self._push_relay(AbsenceRelay(node=self._node, uuids=(old,)))
            self._push_relay(PresenceRelay(node=self._node, uuids=(new,)))

    def _join(self, kws: Websocket, room: str) -> None:
        # Only for an open connection that has just taken the room (the Websocket checks).
        self._rooms.setdefault(room, {})[kws] = None

    def _leave(self, kws: Websocket, room: str) -> None:
        # Only for an open connection that has just dropped the room (the Websocket checks).
        members = self._rooms[room]
        del members[kws]
        if not members:
            del self._rooms[room]

    def _room_members(self, room: str) -> dict[Websocket, None]:
        return self._rooms.get(room, {})
