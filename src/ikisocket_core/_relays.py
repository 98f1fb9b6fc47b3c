"""Relays: what a federated hub asks its backplane to tell the other nodes.

A hub queues relays only after :meth:`~ikisocket_core.Hub.federate`; a
backplane takes them with :meth:`~ikisocket_core.Hub.drain_relays`, carries
them to every other node, and each of those applies them with
:meth:`~ikisocket_core.Hub.receive_relay`.

There is one frozen value per thing a node can say, named as a noun
(:class:`BroadcastRelay`, :class:`RoomRelay`, :class:`FireRelay`,
:class:`EmitRelay`, :class:`EventRelay`, :class:`PresenceRelay`,
:class:`AbsenceRelay`, :class:`HelloRelay`); :class:`Relay` is their common base, so
``isinstance(x, Relay)`` and ``Relay`` in type hints mean "any relay". Each
class names its wire operation in :attr:`Relay.op` (``"broadcast"``,
``"room"``...), which a backplane can use as the tag of its encoding.

The first release had a single ``Relay(op=..., ...)`` class with optional
fields; that spelling still works (it returns the concrete class for ``op``)
and warns with a :class:`DeprecationWarning`.

Wire compatibility: a new kind of relay gets a new ``op``, and a node that
does not know an ``op`` refuses it (:meth:`Relay.for_op` raises; the Redis
backplane counts it as ``malformed``, logs a warning and goes on), so a
cluster that mixes versions loses only what the older nodes cannot show (for
:class:`EventRelay`, added with Socket.IO: the named events, on those nodes).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, ClassVar

from ._errors import LocalProtocolError
from ._events import MessageKind

__all__ = [
    "AbsenceRelay",
    "BroadcastRelay",
    "EmitRelay",
    "EventRelay",
    "FireRelay",
    "HelloRelay",
    "PresenceRelay",
    "Relay",
    "RoomRelay",
]


#: The most connection UUIDs one :class:`PresenceRelay` of a snapshot carries (about 40 kB).
_PRESENCE_CHUNK = 1000


class _RelayType(type):
    """The metaclass of :class:`Relay`: calling ``Relay`` itself is the old spelling."""

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        if cls is Relay:
            return _legacy_relay(*args, **kwargs)
        return super().__call__(*args, **kwargs)


class _ConcreteRelayType(_RelayType):
    # The concrete classes are built by ``type.__call__`` directly (in C, as any class).
    __call__ = type.__call__


class Relay(metaclass=_RelayType):
    """Any relay: the common base of the concrete relay classes.

    Use it in ``isinstance`` checks and type hints. Calling it with the first
    release's arguments (``Relay(op="broadcast", node=..., data=...)``) still
    builds the matching concrete relay, with a :class:`DeprecationWarning`.

    Attributes:
        op: The wire name of the relay's kind (a class attribute).
        node: The id of the node that queued it.
    """

    __slots__ = ()

    op: ClassVar[str]
    node: str
    # Every concrete relay is a dataclass: say so, so ``dataclasses.fields(relay)`` type-checks.
    __dataclass_fields__: ClassVar[dict[str, Any]]

    def __post_init__(self) -> None:
        if not isinstance(self.node, str) or not self.node:
            raise LocalProtocolError("a relay needs the id of the node that sent it")

    @staticmethod
    def for_op(op: str) -> type[Relay]:
        """The relay class whose ``op`` is ``op`` (what a backplane decodes a tag with).

        Args:
            op: A wire name: ``"broadcast"``, ``"room"``, ``"fire"``, ``"emit"``,
                ``"present"``, ``"absent"`` or ``"hello"``.

        Returns:
            The concrete relay class.

        Raises:
            LocalProtocolError: No relay has that name.
        """
        try:
            return _BY_OP[op]
        except (KeyError, TypeError):
            raise LocalProtocolError(f"unknown relay op {op!r}") from None


@dataclass(frozen=True, slots=True, kw_only=True)
class BroadcastRelay(Relay, metaclass=_ConcreteRelayType):
    """A message for every connection of every other node.

    Attributes:
        node: The id of the node that queued it.
        data: The message.
        kind: Text or binary.
        exclude: A connection UUID not to send to (the sender), or ``None``.
    """

    op: ClassVar[str] = "broadcast"
    node: str
    data: bytes = b""
    kind: MessageKind = MessageKind.TEXT
    exclude: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class RoomRelay(Relay, metaclass=_ConcreteRelayType):
    """A message for the members of a room on every other node.

    Attributes:
        node: The id of the node that queued it.
        room: The room.
        data: The message.
        kind: Text or binary.
        exclude: A connection UUID not to send to (the sender), or ``None``.
    """

    op: ClassVar[str] = "room"
    node: str
    room: str
    data: bytes = b""
    kind: MessageKind = MessageKind.TEXT
    exclude: str | None = None

    def __post_init__(self) -> None:
        Relay.__post_init__(self)
        if not isinstance(self.room, str) or not self.room:
            raise LocalProtocolError("a room relay needs a room name")


@dataclass(frozen=True, slots=True, kw_only=True)
class FireRelay(Relay, metaclass=_ConcreteRelayType):
    """An event whose listeners run on every other node's connections, or a room's members.

    Attributes:
        node: The id of the node that queued it.
        event: The event name.
        data: The event's data.
        room: Only the members of this room (a room fire), or ``None`` for
            every connection (a hub-wide fire).
        exclude: A connection UUID not to fire for (the sender), or ``None``.
    """

    op: ClassVar[str] = "fire"
    node: str
    event: str
    data: bytes = b""
    room: str | None = None
    exclude: str | None = None

    def __post_init__(self) -> None:
        Relay.__post_init__(self)
        if not isinstance(self.event, str) or not self.event:
            raise LocalProtocolError("a fire relay needs an event name")
        if self.room is not None and (not isinstance(self.room, str) or not self.room):
            raise LocalProtocolError("a room fire relay needs a room name")


@dataclass(frozen=True, slots=True, kw_only=True)
class EmitRelay(Relay, metaclass=_ConcreteRelayType):
    """A message for the listed connections, wherever they are.

    Attributes:
        node: The id of the node that queued it.
        uuids: The target connections.
        data: The message.
        kind: Text or binary.
    """

    op: ClassVar[str] = "emit"
    node: str
    uuids: tuple[str, ...] = ()
    data: bytes = b""
    kind: MessageKind = MessageKind.TEXT


@dataclass(frozen=True, slots=True, kw_only=True)
class EventRelay(Relay, metaclass=_ConcreteRelayType):
    """A named event (Socket.IO's ``emit``) for connections of every other node.

    The targets are the listed connections when ``uuids`` is not empty, else
    the members of ``room``, else every connection; of those, only the ones
    in ``namespace`` (unless it is ``None``), and never ``exclude``. The
    arguments are encoded once, by the sending node: ``data`` is the JSON
    array of the arguments where each ``bytes`` argument is a Socket.IO
    placeholder ``{"_placeholder":true,"num":n}`` for ``attachments[n]``.

    Attributes:
        node: The id of the node that queued it.
        event: The event name.
        data: The arguments, as UTF-8 JSON (an array).
        attachments: The binary arguments, in placeholder order.
        namespace: The namespace of the targets, or ``None`` for any.
        room: Only the members of this room, or ``None``.
        uuids: Only these connections (when not empty).
        exclude: A connection UUID not to send to (the sender), or ``None``.
    """

    op: ClassVar[str] = "event"
    node: str
    event: str
    data: bytes = b"[]"
    attachments: tuple[bytes, ...] = ()
    namespace: str | None = None
    room: str | None = None
    uuids: tuple[str, ...] = ()
    exclude: str | None = None

    def __post_init__(self) -> None:
        Relay.__post_init__(self)
        if not isinstance(self.event, str) or not self.event:
            raise LocalProtocolError("an event relay needs an event name")
        if self.room is not None and (not isinstance(self.room, str) or not self.room):
            raise LocalProtocolError("a room event relay needs a room name")
        if not all(isinstance(a, bytes) for a in self.attachments):
            raise LocalProtocolError("an event relay's attachments are bytes")


@dataclass(frozen=True, slots=True, kw_only=True)
class PresenceRelay(Relay, metaclass=_ConcreteRelayType):
    """These connections are open on the sending node.

    With ``parts == 0`` (the default) it is news: the connections just
    opened, and receivers add them to what they know of the node. A node's
    full membership is sent as a *snapshot* of ``parts`` relays in a row
    (``part`` 0, 1, ... ``parts - 1``, at most
    1,000 connections each, so a large node never makes one
    oversized message): when the last part arrives, receivers *replace* what
    they knew of the node with the snapshot, so a lost ``absent`` relay
    leaves no ghost beyond the next snapshot. A snapshot whose parts do not
    arrive in a row is ignored (the next one is complete).

    Attributes:
        node: The id of the node that queued it.
        uuids: The connections.
        part: This relay's index in its snapshot (0 for news).
        parts: How many relays the snapshot has, or 0 for news.
    """

    op: ClassVar[str] = "present"
    node: str
    uuids: tuple[str, ...] = ()
    part: int = 0
    parts: int = 0

    def __post_init__(self) -> None:
        Relay.__post_init__(self)
        for value in (self.part, self.parts):
            if value.__class__ is not int or value < 0:
                raise LocalProtocolError("a presence relay's part and parts are ints >= 0")
        if self.part >= max(self.parts, 1):
            raise LocalProtocolError("a presence relay's part is less than its parts")


@dataclass(frozen=True, slots=True, kw_only=True)
class AbsenceRelay(Relay, metaclass=_ConcreteRelayType):
    """These connections of the sending node ended (or were re-keyed away).

    Attributes:
        node: The id of the node that queued it.
        uuids: The connections.
    """

    op: ClassVar[str] = "absent"
    node: str
    uuids: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class HelloRelay(Relay, metaclass=_ConcreteRelayType):
    """A node joined: every other node answers with a :class:`PresenceRelay` of its connections.

    Attributes:
        node: The id of the node that joined.
    """

    op: ClassVar[str] = "hello"
    node: str


# The concrete relay class of each wire operation name (see ``Relay.for_op``).
_BY_OP: dict[str, type[Relay]] = {
    cls.op: cls
    for cls in (
        BroadcastRelay,
        RoomRelay,
        FireRelay,
        EmitRelay,
        EventRelay,
        PresenceRelay,
        AbsenceRelay,
        HelloRelay,
    )
}


def _legacy_relay(*, op: str, node: str, **fields: Any) -> Relay:
    """``Relay(op=..., node=..., ...)``, the first release's spelling, as its concrete class."""
    warnings.warn(
        "Relay(op=...) is deprecated: build the concrete relay (BroadcastRelay, RoomRelay, "
        "FireRelay, EmitRelay, PresenceRelay, AbsenceRelay, HelloRelay)",
        DeprecationWarning,
        stacklevel=3,
    )
    cls: Any = Relay.for_op(op)
    # The old class had every field on every op; keep the ones this kind has, and
    # refuse a value the new class could not carry rather than drop it silently.
    names = cls.__dataclass_fields__
    kept: dict[str, Any] = {}
    for name, value in fields.items():
        if name in names:
            kept[name] = value
        elif value not in (None, b"", (), MessageKind.TEXT):
            raise LocalProtocolError(f"a {op!r} relay has no {name!r}")
    if cls is RoomRelay:
        kept.setdefault("room", "")  # refused by RoomRelay's own check, with its message
    if cls is FireRelay:
        kept.setdefault("event", "")
    relay: Relay = cls(node=node, **kept)
    return relay
