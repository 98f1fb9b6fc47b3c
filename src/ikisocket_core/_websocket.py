"""The per-connection handle, the seed's ``kws``."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, TypeVar, overload

from ._errors import LocalProtocolError
from ._events import AckCallback, EventPayload, Listener, MessageKind, _event_payload
from ._state import ConnectionState

if TYPE_CHECKING:
    from ._registry import Room
    from ._routing import Headers, Request

__all__ = ["Websocket"]

#: The attributes of every connection that has none yet: one read-only view, shared (a
#: connection's attributes are replaced on change, never mutated).
_NO_ATTRIBUTES: Mapping[str, Any] = MappingProxyType({})

_L = TypeVar("_L", bound=Listener)
_OPEN = ConnectionState.OPEN


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectionOwner:
    """What a :class:`Websocket` asks of the hub that owns it: the whole interface between them.

    The hub builds one for itself from its own (bound) methods, so a verb on a
    connection costs one call, as if it called the hub directly, and neither
    side reads the other's private names. A connection reads no more of the
    hub than this; the hub reads no more of a connection than its public
    names (``uuid``, ``state``, ``rooms``, ``listeners``, :meth:`~ikisocket_core.Websocket.payload`,
    :meth:`~ikisocket_core.Websocket.release`...).

    Attributes:
        send: Queue one message for some connections: ``(targets, data, kind)``.
        send_one: The same for one connection: ``(kws, data, kind)``.
        fire: Run an event's listeners for one connection: ``(kws, event, data)``.
        join: Add an open connection, already holding the room, to the room's members.
        leave: Remove an open connection from a room's members.
        rekey: Move an open connection to a new UUID (raises ``DuplicateUUID``);
            the connection then takes the UUID itself.
        close: Close a connection from the server: ``(kws, code, reason)``.
        room: The view of a room that skips one connection: ``(name, exclude)``.
        emit_to: :meth:`~ikisocket_core.Hub.emit_to`.
        emit_to_list: :meth:`~ikisocket_core.Hub.emit_to_list`.
        broadcast: ``(data, kind, exclude)``, as :meth:`~ikisocket_core.Hub.broadcast`.
        emit_event: Send a named event to one connection: ``(kws, event, args, ack, timeout)``.
    """

    send: Callable[[tuple[Websocket, ...], bytes | str, MessageKind], None]
    send_one: Callable[[Websocket, bytes | str, MessageKind], None]
    fire: Callable[[Websocket, str, bytes | str], None]
    join: Callable[[Websocket, str], None]
    leave: Callable[[Websocket, str], None]
    rekey: Callable[[Websocket, str], None]
    close: Callable[[Websocket, int, str], None]
    room: Callable[[str, Websocket], Room]
    emit_to: Callable[[str, bytes | str, MessageKind], None]
    emit_to_list: Callable[[Iterable[str], bytes | str, MessageKind], None]
    broadcast: Callable[[bytes | str, MessageKind, Websocket | None], None]
    emit_event: Callable[[Websocket, str, tuple[Any, ...], AckCallback | None, float | None], None]


class Websocket:
    """One connection: its identity, what its request carried, its attributes and its verbs.

    Handles are made by the hub when it accepts a connection; listeners get
    them as ``ep.kws`` and route callbacks as their argument.

    Attributes:
        params: Route parameters (``/ws/:id`` gives ``params["id"]``).
        query: Query parameters of the request (first value wins).
        headers: The request headers, case-insensitive.
        cookies: The request cookies.
        locals: A free dict for the application (Fiber's ``c.Locals``); not
            copied into payloads.
        request: The request the connection was opened with.
        subprotocol: The negotiated subprotocol, or ``None``.
        conn: The driver's own object for this connection (the seed's
            ``kws.Conn``): a transport, a stream, an ASGI ``send``. The hub
            never touches it.
        listeners: This connection's own listeners by event name, or ``None``
            while it has none (the hub reads it; change it with :meth:`on`
            and :meth:`off`).
        state: Where the connection is in its life (see ``_state``).
        last_activity: Hub time of the last message received (for ``idle_timeout``).
        namespace: The Socket.IO namespace the connection belongs to; ``"/"``
            for plain WebSocket connections, which share the main namespace.
        auth: The Socket.IO ``CONNECT`` payload (``socket.handshake.auth``),
            ``{}`` when none was sent and for plain WebSocket connections.
        transport: ``"websocket"`` or ``"polling"`` (HTTP long-polling) for a Socket.IO
            connection, ``None`` for a plain WebSocket connection.
        recovered: Whether Socket.IO connection-state recovery brought this
            connection back after its transport dropped (its ``recover``
            event fired); ``False`` otherwise.
    """

    __slots__ = (
        "__weakref__",
        "_attributes",
        "_busy",
        "_ending",
        "_owner",
        "_rooms",
        "_uuid",
        "auth",
        "conn",
        "cookies",
        "headers",
        "last_activity",
        "listeners",
        "locals",
        "namespace",
        "params",
        "query",
        "recovered",
        "request",
        "state",
        "subprotocol",
        "transport",
    )

    def __init__(
        self,
        owner: ConnectionOwner,
        uuid: str,
        request: Request,
        params: dict[str, str],
        *,
        attributes: Mapping[str, Any] | None = None,
        subprotocol: str | None = None,
    ) -> None:
        self._owner = owner
        self._uuid = uuid
        self.request = request
        self.params = params
        self.query = request.query()
        self.headers: Headers = request.headers
        self.cookies = request.cookies()
        self.locals: dict[str, Any] = {}
        self.subprotocol = subprotocol
        self.conn: Any = None
        #: A read-only view of a dict that is replaced, never mutated: payloads share it
        #: as a snapshot (one view per change of the attributes, not one per event).
        self._attributes: Mapping[str, Any] = (
            MappingProxyType(dict(attributes)) if attributes else _NO_ATTRIBUTES
        )
        self.listeners: dict[str, tuple[Listener, ...]] | None = None
        self._rooms: dict[str, None] = {}
        self.state = ConnectionState.CONNECTING
        self.last_activity = 0.0
        # ``async def`` listeners of this connection queued or running, and the terminal
        # event waiting for them to finish (so that it stays the last event).
        self._busy = 0
        self._ending: tuple[str, BaseException] | None = None
        self.namespace = "/"
        self.auth: dict[str, Any] = {}
        self.transport: str | None = None
        self.recovered = False

    def __repr__(self) -> str:
        return f"<Websocket {self._uuid} {self.state.value}>"

    # -- identity -------------------------------------------------------------------------

    @property
    def uuid(self) -> str:
        """The connection's UUID; assign to re-key it (the seed's ``SetUUID``).

        Raises:
            DuplicateUUID: On assignment, when another live connection has it.
        """
        return self._uuid

    @uuid.setter
    def uuid(self, value: str) -> None:
        if not isinstance(value, str) or not value:
            raise LocalProtocolError("a uuid is a non-empty string")
        if value != self._uuid and self.state is _OPEN:
            self._owner.rekey(self, value)  # raises DuplicateUUID; we keep the old one then
        self._uuid = value

    @property
    def is_alive(self) -> bool:
        """Whether the connection is open and routable."""
        return self.state is _OPEN

    @property
    def rooms(self) -> frozenset[str]:
        """The rooms this connection is in."""
        return frozenset(self._rooms)

    # -- what the hub asks of a connection ----------------------------------------------

    def payload(
        self,
        name: str,
        data: bytes = b"",
        kind: MessageKind = MessageKind.TEXT,
        error: BaseException | None = None,
        arguments: tuple[Any, ...] | None = None,
    ) -> EventPayload:
        """The payload of an event on this connection, with a snapshot of its attributes.

        The hub calls it once per event it dispatches.

        Args:
            name: The event name.
            data: The event's data.
            kind: How a message arrived.
            error: The event's exception, if any.
            arguments: A Socket.IO event's arguments, as the client sent them.

        Returns:
            The payload listeners receive.
        """
        # Attributes are replaced on change, never mutated, so their view is a snapshot.
        return _event_payload(
            self, name, self._uuid, self._attributes, error, data, kind, arguments
        )

    def release(self) -> None:
        """Drop this connection's rooms and own listeners: it is gone.

        The hub calls it once the connection's terminal event has run
        (terminal listeners can still read them).
        """
        self._rooms = {}
        self.listeners = None

    # -- attributes -----------------------------------------------------------------------

    def set_attribute(self, key: str, value: Any) -> None:
        """Store a value in the connection's attribute store.

        Args:
            key: The attribute name.
            value: Any value.
        """
        attributes = dict(self._attributes)
        attributes[key] = value
        self._attributes = MappingProxyType(attributes)

    def get_attribute(self, key: str, default: Any = None) -> Any:
        """Read an attribute.

        Args:
            key: The attribute name.
            default: What to return when it is not set.

        Returns:
            The value, or ``default``.
        """
        return self._attributes.get(key, default)

    def delete_attribute(self, key: str) -> None:
        """Remove an attribute if it is set.

        Args:
            key: The attribute name.
        """
        if key in self._attributes:
            attributes = dict(self._attributes)
            del attributes[key]
            self._attributes = MappingProxyType(attributes)

    @property
    def attributes(self) -> Mapping[str, Any]:
        """A read-only view of the current attributes."""
        return self._attributes

    # -- listeners on this connection only -----------------------------------------------

    @overload
    def on(self, event: str, callback: None = None) -> Callable[[_L], _L]: ...
    @overload
    def on(self, event: str, callback: _L) -> _L: ...
    def on(self, event: str, callback: _L | None = None) -> _L | Callable[[_L], _L]:
        """Add a listener that runs only for this connection (after the hub's).

        Usable as ``kws.on("message", fn)`` or as a decorator.

        Args:
            event: The event name.
            callback: The listener.

        Returns:
            The listener, or a decorator when ``callback`` is omitted.
        """
        if callback is None:
            return lambda fn: self.on(event, fn)
        if self.listeners is None:
            self.listeners = {}
        self.listeners[event] = (*self.listeners.get(event, ()), callback)
        return callback

    def off(self, event: str, callback: Listener | None = None) -> None:
        """Remove this connection's listener(s) for ``event``.

        Args:
            event: The event name.
            callback: The listener to remove; every one of ``event`` when omitted.
        """
        own = self.listeners
        if not own or event not in own:
            return
        remaining = () if callback is None else tuple(fn for fn in own[event] if fn != callback)
        if remaining:
            own[event] = remaining
        else:
            del own[event]

    # -- verbs ---------------------------------------------------------------------------

    def emit(self, data: bytes | str, kind: MessageKind = MessageKind.TEXT) -> None:
        """Send a message to this connection; a no-op once it is closed.

        Args:
            data: Bytes or text (text is UTF-8 encoded).
            kind: ``TEXT`` (default, like the seed) or ``BINARY``.

        Raises:
            ValueError: ``TEXT`` data is not valid UTF-8.
        """
        if self.state is _OPEN:
            send_one = self._owner.send_one  # (read, then called: see ServerConnection.deliver_own)
            send_one(self, data, kind)

    def emit_event(
        self,
        event: str,
        *args: Any,
        ack: AckCallback | None = None,
        timeout: float | None = None,
    ) -> None:
        """Send a named event with arguments to this connection; a no-op once it is closed.

        A Socket.IO client receives it as that event, with those arguments
        (``bytes`` travel as binary attachments). A plain WebSocket client
        receives the JSON text ``[event, *args]``.
        To ask an ack of a connection of another node (federated hubs), use
        :meth:`Hub.emit_with_ack` with its UUID.

        Args:
            event: The event name.
            *args: The arguments: JSON values, and ``bytes`` for Socket.IO clients.
            ack: Ask the client to acknowledge: called once with the tuple of
                the client's answer, or with an :class:`~ikisocket_core.AckTimeout`
                after ``timeout``, or a :class:`~ikisocket_core.ConnectionClosed`
                when the connection ends first. It may be ``async def``.
                Socket.IO clients only.
            timeout: Seconds to wait for the answer; required with ``ack``.

        Raises:
            LocalProtocolError: ``ack`` without a positive ``timeout`` (or the
                reverse), an ack asked of a plain WebSocket connection, a
                reserved event name, or too many acks pending on the connection.
            TypeError: An argument cannot travel as JSON.
        """
        self._owner.emit_event(self, event, args, ack, timeout)

    def emit_to(self, uuid: str, data: bytes | str, kind: MessageKind = MessageKind.TEXT) -> None:
        """Send a message to another connection by UUID.

        Args:
            uuid: The target's UUID.
            data: Bytes or text.
            kind: ``TEXT`` or ``BINARY``.

        Raises:
            UnknownConnection: No live connection has that UUID.
        """
        self._owner.emit_to(uuid, data, kind)

    def emit_to_list(
        self, uuids: Iterable[str], data: bytes | str, kind: MessageKind = MessageKind.TEXT
    ) -> None:
        """Send a message to each live connection of ``uuids``; unknown ones are ignored.

        Args:
            uuids: Target UUIDs.
            data: Bytes or text.
            kind: ``TEXT`` or ``BINARY``.
        """
        self._owner.emit_to_list(uuids, data, kind)

    def broadcast(
        self,
        data: bytes | str,
        except_self: bool = True,
        kind: MessageKind = MessageKind.TEXT,
    ) -> None:
        """Send a message to every live connection, by default all but this one.

        The parameters keep the seed's order, ``(data, except_self, kind)``; so
        that ``kws.broadcast(data, BINARY)`` cannot silently mean something
        else, ``except_self`` must be a real ``bool``.

        Args:
            data: Bytes or text.
            except_self: Skip this connection (the seed's ``except``).
            kind: ``TEXT`` or ``BINARY``.

        Raises:
            TypeError: ``except_self`` is not a bool (pass ``kind=`` by keyword),
                or ``kind`` is not a message kind.
            ValueError: ``kind`` is an int other than 1 and 2, or ``TEXT`` data
                is not valid UTF-8.
        """
        if except_self.__class__ is not bool:
            raise TypeError(
                f"except_self is a bool, not {except_self!r}"
                " (give the kind by keyword: kws.broadcast(data, kind=BINARY))"
            )
        self._owner.broadcast(data, kind, self if except_self else None)

    def fire(self, event: str, data: bytes | str = b"") -> None:
        """Run the listeners of a (custom) event for this connection.

        Args:
            event: The event name.
            data: The payload's data.
        """
        self._owner.fire(self, event, data)

    def join(self, room: str) -> None:
        """Add this connection to a room (a no-op when it is closed).

        Args:
            room: The room name.
        """
        if self.state is not _OPEN or room in self._rooms:
            return
        self._rooms[room] = None
        self._owner.join(self, room)

    def leave(self, room: str) -> None:
        """Remove this connection from a room.

        Args:
            room: The room name.
        """
        if room not in self._rooms:
            return
        del self._rooms[room]
        if self.state is _OPEN:
            self._owner.leave(self, room)

    def to(self, room: str) -> Room:
        """A view of a room that never sends to this connection (Socket.IO's ``socket.to``).

        Args:
            room: The room name.

        Returns:
            The room view.
        """
        return self._owner.room(room, self)

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Close the connection from the server; fires ``close`` once.

        A no-op when the connection is already closing or closed.

        Args:
            code: The close code (RFC 6455 section 7.4).
            reason: The close reason, at most 123 UTF-8 bytes.

        Raises:
            LocalProtocolError: The code may not be sent or the reason is too long.
        """
        self._owner.close(self, code, reason)
