"""Named events and acks: what answers a client's ack, and what the server may emit.

A client event that asks for an ack gets exactly one ``ACK``: :class:`_Reply`
counts the listeners still to answer (an ``async def`` one, through
:class:`_Answering`, once it finished) and sends the first value one of them
gives, or an empty answer when none does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ikisocket_core._dispatch import _Handler
from ikisocket_core._errors import LocalProtocolError
from ikisocket_core._events import MessageKind
from ikisocket_core._socketio._packets import dumps

if TYPE_CHECKING:
    from ikisocket_core._events import EventPayload
    from ikisocket_core._hub import Hub
    from ikisocket_core._socketio._mount import SocketIO
    from ikisocket_core._socketio._session import Joined
    from ikisocket_core._websocket import Websocket

__all__: list[str] = []

_TEXT = MessageKind.TEXT
_BINARY = MessageKind.BINARY

#: Event names a Socket.IO client keeps for itself: a server may not emit them.
_CLIENT_RESERVED = frozenset(
    {"connect", "connect_error", "disconnect", "disconnecting", "newListener", "removeListener"}
)


def _data_of(args: tuple[Any, ...]) -> tuple[bytes, MessageKind]:
    """An event's first argument as a payload's ``data`` and ``kind``, unless it is a ``str``.

    (A string, the most common, is encoded by the caller itself, with no call.)
    """
    if not args:
        return b"", _TEXT
    first = args[0]
    if isinstance(first, bytes):
        return first, _BINARY
    return dumps(first).encode("utf-8"), _TEXT


class _Reply:
    """The answer to one client event that asked for an ack: the first non-``None`` result.

    It is sent once every listener returned (an ``async def`` one once it
    finished), or as soon as one gives a value; with none, an empty answer.
    """

    __slots__ = ("_joined", "_mount", "_waiting", "id", "sent")

    def __init__(self, mount: SocketIO, joined: Joined, ack_id: int) -> None:
        self._mount = mount
        self._joined = joined
        self.id = ack_id
        self._waiting = 1  # the dispatch itself, until every listener was called
        self.sent = False

    def expect(self) -> None:
        self._waiting += 1

    def done(self, value: Any) -> None:
        self._waiting -= 1
        if self.sent:
            return
        if value is not None or not self._waiting:
            self.sent = True
            self._mount._answer(self._joined, self.id, value)


class _Answering(_Handler):
    """An ``async def`` listener of an event that wants an ack: its result is the answer."""

    __slots__ = ("_reply",)

    def __init__(self, hub: Hub, ep: EventPayload, awaitable: Any, reply: _Reply) -> None:
        super().__init__(hub, ep, awaitable)
        self._reply = reply

    async def _run(self) -> None:
        value = None
        try:
            value = await self._awaitable
        except Exception as exc:
            self._hub._listener_failed(self._ep, exc)
        self._reply.done(value)

    def timed_out(self, timeout: float) -> None:
        """The driver cancelled the listener: a failure, and no answer from it.

        Args:
            timeout: The configured handler timeout.
        """
        super().timed_out(timeout)
        self._reply.done(None)


def check_event(event: str) -> None:
    """Refuse an event name a server may not emit.

    Args:
        event: The name.

    Raises:
        LocalProtocolError: It is empty, not a string, or reserved by Socket.IO clients.
    """
    if not isinstance(event, str) or not event:
        raise LocalProtocolError("an event name is a non-empty string")
    if event in _CLIENT_RESERVED:
        raise LocalProtocolError(f"{event!r} is reserved by Socket.IO clients")


def emit_plain(hub: Hub, targets: tuple[Websocket, ...], event: str, args: tuple[Any, ...]) -> None:
    """Send a named event to plain WebSocket connections: the JSON text ``[event, *args]``.

    Args:
        hub: The hub.
        targets: Plain connections.
        event: The event name.
        args: Its arguments (JSON values).

    Raises:
        TypeError: An argument cannot travel as JSON (``bytes`` included).
    """
    if targets:
        hub._send(targets, dumps([event, *args]), _TEXT)
