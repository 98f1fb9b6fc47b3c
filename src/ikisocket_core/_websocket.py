"""The per-connection handle, the seed's ``kws``."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, TypeVar, overload

from ._errors import LocalProtocolError
from ._events import MessageKind
from ._state import ConnectionState

if TYPE_CHECKING:
    from ._hub import Hub, Listener, Room
    from ._routing import Headers, Request

__all__ = ["Websocket"]

_L = TypeVar("_L", bound="Listener")


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
    """

    __slots__ = (
        "__weakref__",
        "_attributes",
        "_hub",
        "_listeners",
        "_rooms",
        "_uuid",
        "conn",
        "cookies",
        "headers",
        "last_activity",
        "locals",
        "params",
        "query",
        "request",
        "state",
        "subprotocol",
    )

    def __init__(
        self,
        hub: Hub,
        uuid: str,
        request: Request,
        params: dict[str, str],
        *,
        attributes: Mapping[str, Any] | None = None,
        subprotocol: str | None = None,
    ) -> None:
        self._hub = hub
        self._uuid = uuid
        self.request = request
        self.params = params
        self.query = request.query()
        self.headers: Headers = request.headers
        self.cookies = request.cookies()
        self.locals: dict[str, Any] = {}
        self.subprotocol = subprotocol
        self.conn: Any = None
        #: Replaced, never mutated, so payloads can share it as a snapshot.
        self._attributes: dict[str, Any] = dict(attributes or {})
        self._listeners: dict[str, tuple[Listener, ...]] | None = None
        self._rooms: dict[str, None] = {}
        #: Where the connection is in its life (see ``_state``).
        self.state = ConnectionState.CONNECTING
        #: Hub time of the last message received (for ``idle_timeout``).
        self.last_activity = 0.0

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
        self._hub._rekey(self, value)

    @property
    def is_alive(self) -> bool:
        """Whether the connection is open and routable."""
        return self.state is ConnectionState.OPEN

    @property
    def rooms(self) -> frozenset[str]:
        """The rooms this connection is in."""
        return frozenset(self._rooms)

    # -- attributes -----------------------------------------------------------------------

    def set_attribute(self, key: str, value: Any) -> None:
        """Store a value in the connection's attribute store.

        Args:
            key: The attribute name.
            value: Any value.
        """
        attributes = dict(self._attributes)
        attributes[key] = value
        self._attributes = attributes

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
            self._attributes = attributes

    @property
    def attributes(self) -> Mapping[str, Any]:
        """A read-only view of the current attributes."""
        return MappingProxyType(self._attributes)

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
        if self._listeners is None:
            self._listeners = {}
        self._listeners[event] = (*self._listeners.get(event, ()), callback)
        return callback

    def off(self, event: str, callback: Listener | None = None) -> None:
        """Remove this connection's listener(s) for ``event``.

        Args:
            event: The event name.
            callback: The listener to remove; every one of ``event`` when omitted.
        """
        if not self._listeners or event not in self._listeners:
            return
        remaining = (
            () if callback is None else tuple(fn for fn in self._listeners[event] if fn != callback)
        )
        if remaining:
            self._listeners[event] = remaining
        else:
            del self._listeners[event]

    # -- verbs ---------------------------------------------------------------------------

    def emit(self, data: bytes | str, kind: MessageKind = MessageKind.TEXT) -> None:
        """Send a message to this connection; a no-op once it is closed.

        Args:
            data: Bytes or text (text is UTF-8 encoded).
            kind: ``TEXT`` (default, like the seed) or ``BINARY``.

        Raises:
            ValueError: ``TEXT`` data is not valid UTF-8.
        """
        if self.state is ConnectionState.OPEN:
            self._hub._send((self,), data, kind)

    def emit_to(self, uuid: str, data: bytes | str, kind: MessageKind = MessageKind.TEXT) -> None:
        """Send a message to another connection by UUID.

        Args:
            uuid: The target's UUID.
            data: Bytes or text.
            kind: ``TEXT`` or ``BINARY``.

        Raises:
            UnknownConnection: No live connection has that UUID.
        """
        self._hub.emit_to(uuid, data, kind)

    def emit_to_list(
        self, uuids: Iterable[str], data: bytes | str, kind: MessageKind = MessageKind.TEXT
    ) -> None:
        """Send a message to each live connection of ``uuids``; unknown ones are ignored.

        Args:
            uuids: Target UUIDs.
            data: Bytes or text.
            kind: ``TEXT`` or ``BINARY``.
        """
        self._hub.emit_to_list(uuids, data, kind)

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
        self._hub.broadcast(data, kind, exclude=self if except_self else None)

    def fire(self, event: str, data: bytes | str = b"") -> None:
        """Run the listeners of a (custom) event for this connection.

        Args:
            event: The event name.
            data: The payload's data.
        """
        self._hub._fire_one(self, event, data)

    def join(self, room: str) -> None:
        """Add this connection to a room (a no-op when it is closed).

        Args:
            room: The room name.
        """
        self._hub._join(self, room)

    def leave(self, room: str) -> None:
        """Remove this connection from a room.

        Args:
            room: The room name.
        """
        self._hub._leave(self, room)

    def to(self, room: str) -> Room:
        """A view of a room that never sends to this connection (Socket.IO's ``socket.to``).

        Args:
            room: The room name.

        Returns:
            The room view.
        """
        from ._hub import Room  # noqa: PLC0415 (the hub module imports this one)

        return Room(self._hub, room, exclude=self)

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Close the connection from the server; fires ``close`` once.

        A no-op when the connection is already closing or closed.

        Args:
            code: The close code (RFC 6455 section 7.4).
            reason: The close reason, at most 123 UTF-8 bytes.

        Raises:
            LocalProtocolError: The code may not be sent or the reason is too long.
        """
        self._hub._server_close(self, code, reason)
