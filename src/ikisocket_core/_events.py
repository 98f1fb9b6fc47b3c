"""Event names, message kinds and the payload handed to listeners."""

from __future__ import annotations

import enum
import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from ._websocket import Websocket

__all__ = [
    "BINARY",
    "EVENT_CLOSE",
    "EVENT_CONNECT",
    "EVENT_DISCONNECT",
    "EVENT_ERROR",
    "EVENT_MESSAGE",
    "EVENT_PING",
    "EVENT_PONG",
    "RESERVED_EVENTS",
    "TEXT",
    "AckCallback",
    "EventPayload",
    "Listener",
    "MessageKind",
]

#: A text or binary message arrived.
EVENT_MESSAGE: Final = "message"
#: A ping frame arrived (the pong is sent for you).
EVENT_PING: Final = "ping"
#: A pong frame arrived.
EVENT_PONG: Final = "pong"
#: The peer went away: it closed, the transport dropped, it timed out or broke the protocol.
EVENT_DISCONNECT: Final = "disconnect"
#: The connection was accepted; fired right after the route callback.
EVENT_CONNECT: Final = "connect"
#: The server closed the connection (``kws.close()``, ``hub.close_all()``, a policy).
EVENT_CLOSE: Final = "close"
#: Something went wrong: a listener raised, or the peer misbehaved.
EVENT_ERROR: Final = "error"

#: The built-in event names; any other name is a custom event.
RESERVED_EVENTS = frozenset(
    {
        EVENT_MESSAGE,
        EVENT_PING,
        EVENT_PONG,
        EVENT_DISCONNECT,
        EVENT_CONNECT,
        EVENT_CLOSE,
        EVENT_ERROR,
    }
)


class MessageKind(enum.IntEnum):
    """How a message travels: a text frame or a binary frame.

    The values are the RFC 6455 opcodes (section 5.2), as in gorilla/websocket's
    ``TextMessage`` and ``BinaryMessage``.
    """

    TEXT = 1
    BINARY = 2


#: A text message (UTF-8).
TEXT = MessageKind.TEXT
#: A binary message.
BINARY = MessageKind.BINARY


def _message_kind(kind: object) -> MessageKind:
    """``kind``, not a :class:`MessageKind`, as one, or a clear error (the slow path of a send).

    The opcodes 1 and 2 (plain ints) are accepted. A ``bool`` is
    refused although it is an ``int``: ``True`` would be ``TEXT`` and hide a
    misplaced argument (``kws.broadcast(data, BINARY)`` style mistakes).
    """
    if isinstance(kind, bool) or not isinstance(kind, int):
        raise TypeError(f"a message kind is TEXT or BINARY, not {kind!r}")
    try:
        return MessageKind(kind)
    except ValueError:
        raise ValueError(f"a message kind is TEXT (1) or BINARY (2), not {kind!r}") from None


@dataclass(frozen=True, slots=True, kw_only=True)
class EventPayload:
    """What a listener receives: the event and the connection it concerns.

    Attributes:
        kws: The connection's handle; answer through it (``ep.kws.emit(...)``).
        name: The event name (``"message"``, ``"connect"``, a custom name...).
        socket_uuid: The connection's UUID when the event fired.
        socket_attributes: A read-only snapshot of the connection's attributes
            when the event fired; later ``set_attribute`` calls do not change it.
        error: The exception for ``error``, ``disconnect`` and ``close`` events.
        data: The message or custom-event data (bytes; UTF-8 for text).
        kind: ``TEXT`` or ``BINARY``: how the message arrived.
        arguments: A Socket.IO event's arguments as the client sent them, or
            ``None`` for any other event (read :attr:`args`).
    """

    kws: Websocket
    name: str
    socket_uuid: str
    socket_attributes: Mapping[str, Any]
    error: BaseException | None = None
    data: bytes = b""
    kind: MessageKind = field(default=MessageKind.TEXT)
    arguments: tuple[Any, ...] | None = None

    @property
    def args(self) -> tuple[Any, ...]:
        """A Socket.IO event's arguments, or ``(data,)`` for any other event."""
        arguments = self.arguments
        return (self.data,) if arguments is None else arguments

    @property
    def namespace(self) -> str:
        """The namespace of the connection (``"/"`` for plain WebSocket connections)."""
        return self.kws.namespace

    @property
    def text(self) -> str:
        """The data decoded as UTF-8.

        Raises:
            UnicodeDecodeError: The data is not valid UTF-8.
        """
        return self.data.decode("utf-8")

    def json(self) -> Any:
        """The data parsed as JSON.

        Raises:
            ValueError: The data is not valid JSON (``json.JSONDecodeError``).
        """
        return json.loads(self.data)


#: A listener: called with the event's payload; may be ``async def``. For a
#: Socket.IO event that asks for an ack, what it returns is the answer.
Listener = Callable[[EventPayload], Awaitable[Any] | Any]

#: What ``emit_event(..., ack=)`` calls once: with the tuple of the client's
#: answer, or with the exception that ended the wait (``AckTimeout``,
#: ``ConnectionClosed``). It may be ``async def``.
AckCallback = Callable[[Any], Awaitable[Any] | Any]


class _PayloadFields:
    """An :class:`EventPayload` being filled in: the same slots, none of the frozen ``__setattr__``.

    The hub builds one payload per event. A frozen dataclass ``__init__`` sets
    each field through ``object.__setattr__``, and setting the slots through
    their descriptors is a call per field too, which together cost more than
    the rest of a dispatch. The fields of one of these are plain attribute
    stores; assigning ``__class__`` then makes it an ``EventPayload`` (Python
    allows it between classes whose slots are the same, and refuses it
    otherwise), frozen like any other: same type, equality, ``repr`` and
    ``dataclasses`` behaviour.
    """

    __slots__ = EventPayload.__slots__  # (made by dataclass, in field order)


def _event_payload(  # noqa: PLR0917 (positional: called once per event)
    kws: Websocket,
    name: str,
    socket_uuid: str,
    socket_attributes: Mapping[str, Any],
    error: BaseException | None,
    data: bytes,
    kind: MessageKind,
    arguments: tuple[Any, ...] | None = None,
) -> EventPayload:
    """``EventPayload(kws=kws, name=name, ...)``, built faster (every field given)."""
    ep: Any = _PayloadFields()
    ep.kws = kws
    ep.name = name
    ep.socket_uuid = socket_uuid
    ep.socket_attributes = socket_attributes
    ep.error = error
    ep.data = data
    ep.kind = kind
    ep.arguments = arguments
    ep.__class__ = EventPayload
    return ep  # type: ignore[no-any-return]
