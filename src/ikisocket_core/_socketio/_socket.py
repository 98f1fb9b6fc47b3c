"""The transport of an Engine.IO session: a ``Websocket`` that the hub never registers.

Apart from the session so that the compiled build (docs/howto/compiled.md), which compiles
the session, leaves it pure Python: it subclasses the public ``Websocket``, and mypyc compiles
no class whose base is an interpreted class with ``__slots__``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from ikisocket_core._websocket import Websocket

if TYPE_CHECKING:
    from ikisocket_core._events import MessageKind

__all__: list[str] = []


class Receiver(Protocol):
    """What an :class:`EngineSocket` hands its messages and its end to.

    Its ``EngineSession``, or, while a WebSocket probes a polling session,
    the polling module's ``Probe``.
    """

    @property
    def joined(self) -> dict[str, Any]:
        """The namespace connections that the transport's errors reach."""

    def receive(self, data: bytes, kind: MessageKind) -> None:
        """One message of the transport."""

    def transport_gone(self, code: int, reason: str, error: BaseException | None) -> None:
        """The transport ended."""


class EngineSocket(Websocket):
    """The transport of a Socket.IO session: a WebSocket the hub does not register.

    Attributes:
        session: The Engine.IO session it carries.
    """

    __slots__ = ("session",)

    session: Receiver


class _Ended:
    """What an :class:`EngineSocket` hands to once it ended: nothing more comes.

    The socket and its receiver refer to each other; once the socket is
    ``CLOSED`` (the hub and the engine read ``session`` only while it is not)
    and its receiver is done with it, the receiver (the session, or a probe)
    puts this in its place, so neither waits for the garbage collector.
    """

    __slots__ = ()

    @property
    def joined(self) -> dict[str, Any]:
        """None left."""
        return {}  # pragma: no cover (the hub reads it only while the socket is open)

    def receive(self, data: bytes, kind: MessageKind) -> None:
        """Nothing is received after the end."""

    def transport_gone(self, code: int, reason: str, error: BaseException | None) -> None:
        """Reported once already."""


#: The receiver of every ended :class:`EngineSocket`.
ENDED: Receiver = _Ended()
