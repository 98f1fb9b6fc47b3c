"""Per-namespace views of the hub for Socket.IO users, and broadcasts that collect acks.

Hub rooms are the hub's: ``hub.to("lobby")`` reaches every member, plain
WebSocket and Socket.IO ones, in any namespace. ``sio.of("/chat").to("lobby")``
is what socket.io users expect of ``io.of("/chat").to("lobby")``: the members
of ``lobby`` whose connection belongs to ``/chat`` only (plain WebSocket
connections belong to ``/``), so a room name used in ``/a`` never reaches
``/b``'s connections.

A broadcast with acks (:meth:`Namespace.emit_with_acks`,
:meth:`NamespaceRoom.emit_with_acks`) sends the event to each Socket.IO
target (on every node, when the hub is federated: see
:meth:`~ikisocket_core.Hub.emit_with_acks`) with its own ack id and one
timeout, and calls its callback once with a mapping UUID -> answer: the
tuple of the client's answer arguments, or the exception that stands for it
(:class:`~ikisocket_core.AckTimeout` when the client did not answer in time,
:class:`~ikisocket_core.ConnectionClosed` when its connection ended or is
held for recovery, ``LocalProtocolError`` when it already had
``max_pending_acks`` acks pending). Plain WebSocket connections
cannot answer acks: they are not asked, and not in the mapping.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Final

from ikisocket_core._errors import LocalProtocolError
from ikisocket_core._events import MessageKind
from ikisocket_core._state import ConnectionState

from ._acks import check_event

if TYPE_CHECKING:
    from ikisocket_core._websocket import Websocket

    from ._mount import SocketIO

__all__ = ["AcksCallback", "Namespace", "NamespaceRoom"]

#: What a broadcast with acks calls once every target answered or failed: the
#: answers by UUID (a tuple, or the exception that stands for the answer).
AcksCallback = Callable[[Mapping[str, Any]], Any]

_OPEN: Final[ConnectionState] = ConnectionState.OPEN


class _Collector:
    """The answers of one broadcast with acks, and its callback called once at the end."""

    __slots__ = ("_callback", "_mount", "_waiting", "answers")

    def __init__(self, mount: SocketIO, callback: AcksCallback, targets: list[Websocket]) -> None:
        self._mount = mount
        self._callback = callback
        self._waiting = len(targets)
        self.answers: dict[str, Any] = {kws.uuid: None for kws in targets}

    def for_one(self, kws: Websocket) -> Callable[[Any], None]:
        uuid = kws.uuid

        def answered(answer: Any) -> None:
            self.answers[uuid] = answer
            self._waiting -= 1
            if not self._waiting:
                self._mount._call_back(kws, self._callback, self.answers)

        return answered


def emit_with_acks(
    mount: SocketIO,
    targets: Iterable[Websocket],
    event: str,
    args: tuple[Any, ...],
    *,
    callback: AcksCallback,
    timeout: float,
) -> None:
    """Ask each Socket.IO connection among ``targets`` for an ack of one event; one timeout.

    Args:
        mount: The mount.
        targets: The connections (plain ones are skipped).
        event: The event name.
        args: Its arguments.
        callback: Called once with the answers by UUID.
        timeout: Seconds each client has to answer (from the same tick).

    Raises:
        LocalProtocolError: A reserved event name, or a timeout that is not
            a positive number.
        TypeError: An argument cannot travel as JSON.
    """
    check_event(event)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
        raise LocalProtocolError("an ack needs a positive timeout (seconds)")
    asked = [k for k in targets if k.transport is not None and k.state is _OPEN]
    if not asked:
        callback({})
        return
    collector = _Collector(mount, callback, asked)
    for kws in asked:
        answered = collector.for_one(kws)
        try:
            mount._emit_with_ack(kws, event, args, answered, float(timeout))
        except LocalProtocolError as exc:  # too many acks pending on that one
            answered(exc)


class Namespace:
    """One Socket.IO namespace of a mount (``sio.of("/chat")``): its connections and rooms.

    Args:
        mount: The mount.
        name: The namespace (declared or not: an undeclared one has no connections).
    """

    __slots__ = ("_mount", "name")

    def __init__(self, mount: SocketIO, name: str) -> None:
        self._mount = mount
        self.name = name

    def __repr__(self) -> str:
        return f"<Namespace {self.name}>"

    def _members(self) -> list[Websocket]:
        name = self.name
        return [k for k in self._mount.hub._conns.values() if k.namespace == name]

    @property
    def uuids(self) -> tuple[str, ...]:
        """The UUIDs of the namespace's live connections on this node."""
        return tuple(k.uuid for k in self._members())

    def to(self, room: str, *, exclude: Websocket | None = None) -> NamespaceRoom:
        """The members of a hub room that belong to this namespace.

        Args:
            room: The room name.
            exclude: A connection never sent to (the sender).

        Returns:
            The view.
        """
        return NamespaceRoom(self, room, exclude)

    def emit_event(self, event: str, *args: Any) -> None:
        """Send a named event to every connection of the namespace (see :meth:`Hub.emit_event`).

        Args:
            event: The event name.
            *args: Its arguments.
        """
        self._mount.hub.emit_event(event, *args, namespace=self.name)

    def emit_with_acks(
        self, event: str, *args: Any, callback: AcksCallback, timeout: float
    ) -> None:
        """Send a named event to every Socket.IO connection of the namespace, asking each an ack.

        Args:
            event: The event name.
            *args: Its arguments.
            callback: Called once with the answers by UUID (see the module docstring).
            timeout: Seconds each client has to answer.
        """
        self._mount.hub.emit_with_acks(
            event, *args, callback=callback, timeout=timeout, namespace=self.name
        )


class NamespaceRoom:
    """The members of a hub room in one namespace (``sio.of("/chat").to("lobby")``).

    Args:
        namespace: The namespace.
        room: The room name.
        exclude: A connection never sent to.
    """

    __slots__ = ("_exclude", "_namespace", "name")

    def __init__(self, namespace: Namespace, room: str, exclude: Websocket | None) -> None:
        self._namespace = namespace
        self.name = room
        self._exclude = exclude

    def _members(self) -> tuple[Websocket, ...]:
        namespace = self._namespace
        exclude = self._exclude
        members = namespace._mount.hub._room_members(self.name)
        return tuple(k for k in members if k.namespace == namespace.name and k is not exclude)

    @property
    def uuids(self) -> tuple[str, ...]:
        """The UUIDs of the members in this namespace, in joining order."""
        return tuple(k.uuid for k in self._members())

    def __len__(self) -> int:
        return len(self._members())

    def emit(self, data: bytes | str, kind: MessageKind = MessageKind.TEXT) -> None:
        """Send a message (the ``message`` event of Socket.IO members), on this node.

        Args:
            data: Bytes or text.
            kind: ``TEXT`` or ``BINARY``.
        """
        self._namespace._mount.hub._send(self._members(), data, kind)

    def emit_event(self, event: str, *args: Any) -> None:
        """Send a named event to the members, on every node.

        Args:
            event: The event name.
            *args: Its arguments.

        Raises:
            RelayTooLarge: The hub is federated and the encoded arguments are
                larger than its ``max_relay_size`` (nothing was sent).
        """
        hub = self._namespace._mount.hub
        relay = hub._event_relay(
            event, args, self._namespace.name, room=self.name, exclude=self._exclude
        )
        hub._emit_event(self._members(), event, args)
        if relay is not None:
            hub._push_relay(relay)

    def emit_with_acks(
        self, event: str, *args: Any, callback: AcksCallback, timeout: float
    ) -> None:
        """Send a named event to the Socket.IO members, asking each an ack, with one timeout.

        Args:
            event: The event name.
            *args: Its arguments.
            callback: Called once with the answers by UUID (see the module docstring).
            timeout: Seconds each client has to answer.
        """
        mount = self._namespace._mount
        hub = mount.hub
        if hub._node is None:
            emit_with_acks(mount, self._members(), event, args, callback=callback, timeout=timeout)
            return
        exclude = self._exclude
        hub._ask_everywhere(
            mount,
            list(self._members()),
            event,
            args,
            callback=callback,
            timeout=timeout,
            room=self.name,
            namespace=self._namespace.name,
            exclude=None if exclude is None else exclude.uuid,
        )
