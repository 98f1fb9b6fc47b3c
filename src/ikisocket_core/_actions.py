"""Actions: what the hub asks its driver (an adapter, a server, a test) to do.

The hub never performs I/O. Every outbound effect of an input or a command is
queued as one of these frozen values; the driver takes them with
:meth:`Hub.drain_actions` and performs them in order.
"""

from __future__ import annotations

from collections.abc import Awaitable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ._errors import LocalProtocolError
from ._events import MessageKind

if TYPE_CHECKING:
    from ._websocket import Websocket

__all__ = ["Accept", "Action", "Close", "Reject", "RunHandler", "Send"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Send:
    """Write one message to every target.

    One ``Send`` stands for a whole emit, broadcast or room emit: the driver
    encodes the frame once and writes the same bytes to each target (see the
    protocol engine). Targets that closed since the action was queued are
    skipped by the driver.

    Attributes:
        targets: The connections to write to, in routing order.
        data: The payload; UTF-8 when ``kind`` is ``TEXT``.
        kind: Text or binary frame.
    """

    targets: tuple[Websocket, ...]
    data: bytes
    kind: MessageKind = MessageKind.TEXT


@dataclass(frozen=True, slots=True, kw_only=True)
class Close:
    """Close one connection with a close frame (RFC 6455 section 5.5.1).

    The hub has already removed the connection from routing and fired its
    ``close`` event; the driver completes the closing handshake and then
    reports the end with :meth:`Hub.receive_disconnect`.

    Attributes:
        target: The connection to close.
        code: The close code.
        reason: The close reason (at most 123 UTF-8 bytes).
    """

    target: Websocket
    code: int = 1000
    reason: str = ""

    def __post_init__(self) -> None:
        _check_close(self.code, self.reason)


@dataclass(frozen=True, slots=True, kw_only=True)
class RunHandler:
    """Await the awaitable an ``async def`` listener returned.

    The awaitable never raises an ``Exception`` (the hub wraps it and reports
    failures through the ``error`` event). Drivers run the ``RunHandler``
    actions of one target one after another, in order, and stop reading from
    that target until they are done, so each connection's events stay in
    order while other connections carry on.

    Attributes:
        target: The connection the listener runs for, or ``None`` for work that
            belongs to no connection.
        awaitable: What to await.
    """

    target: Websocket | None
    awaitable: Awaitable[None]


class _SendFields:
    """A :class:`Send` being filled in (see ``_events._PayloadFields``): every emit makes one."""

    __slots__ = Send.__slots__  # (made by dataclass, in field order)


def _send_action(targets: tuple[Websocket, ...], data: bytes, kind: MessageKind) -> Send:
    """``Send(targets=targets, data=data, kind=kind)``, built faster."""
    send: Any = _SendFields()
    send.targets = targets
    send.data = data
    send.kind = kind
    send.__class__ = Send
    return send  # type: ignore[no-any-return]


#: Everything :meth:`Hub.drain_actions` can return.
Action = Send | Close | RunHandler


@dataclass(frozen=True, slots=True, kw_only=True)
class Accept:
    """A ``before_upgrade`` hook's "yes", optionally choosing the connection's identity.

    Attributes:
        uuid: The UUID to give the connection instead of a generated one.
        attributes: Attributes the connection starts with.
        subprotocol: The subprotocol to select (must be one the client offered).
    """

    uuid: str | None = None
    attributes: Mapping[str, Any] = field(default_factory=dict)
    subprotocol: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Reject:
    """Refuse a WebSocket request with an HTTP status instead of upgrading.

    Attributes:
        status: The HTTP status (4xx or 5xx).
        reason: A short text sent as the response body.
        headers: Extra response headers.
    """

    status: int = 403
    reason: str = ""
    headers: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if not 400 <= self.status <= 599:
            raise LocalProtocolError(f"a rejection needs a 4xx or 5xx status, not {self.status}")


def _check_close(code: int, reason: str) -> None:
    """Refuse close codes an endpoint may not send (RFC 6455 section 7.4)."""
    if not (
        code in (1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014)
        or 3000 <= code <= 4999
    ):
        raise LocalProtocolError(f"close code {code} may not be sent (RFC 6455 section 7.4)")
    if len(reason.encode("utf-8")) > 123:
        raise LocalProtocolError("a close reason is at most 123 UTF-8 bytes (RFC 6455 5.5)")
