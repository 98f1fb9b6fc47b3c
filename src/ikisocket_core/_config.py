"""The engine's settings, counters and the actions it hands to its driver."""

from __future__ import annotations

from collections.abc import Awaitable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from ._errors import LocalProtocolError, RemoteProtocolError

if TYPE_CHECKING:
    from ._connection import ServerConnection

# Public through ikisocket_core.protocol, not the package top level.
__all__: list[str] = []


class KeepaliveTimeout(RemoteProtocolError):
    """The peer did not answer a keepalive ping within ``ping_timeout``."""

    def __init__(self, timeout: float) -> None:
        super().__init__(f"no pong within {timeout:g} s", close_code=1011)


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerConfig:
    """Limits and timings of every connection of a server; adapters take the same keywords.

    Attributes:
        max_message_size: Largest message accepted, in bytes (1 MiB); more
            closes the connection with 1009. ``None`` lifts the limit.
        max_queue: Outbound bytes a connection may have waiting before the
            ``backpressure`` policy applies (4 MiB). A message is always
            accepted into an empty buffer, whatever its size. Control frames
            (pongs, close frames) are never dropped but count too: while a
            connection is over the bound its driver stops reading it.
        backpressure: ``"drop"`` the message for that connection, or
            ``"close"`` the connection with 1013 ("try again later").
        ping_interval: Seconds between keepalive pings (20); ``None`` disables them.
        ping_timeout: Seconds to wait for the pong (20) before closing with 1011.
        handshake_timeout: Seconds a client has to complete its HTTP request (10).
        close_timeout: Seconds to wait for the peer's close frame (10); the
            socket adapters also wait at most this long, after ending a plain
            TCP connection, for the client to close its end (they linger).
        max_request_size: Largest HTTP request head, in bytes (16 KiB); 431 beyond.
        compression: Negotiate permessage-deflate (RFC 7692) when offered.
        static: Plain HTTP responses for ``GET`` paths: ``{path: (content type, body)}``.
        max_connections: Open WebSocket connections of the node (``None``: no
            limit, the default); one more upgrade gets ``503`` with
            ``Retry-After`` before the hub sees it.
        max_connections_per_ip: Open WebSocket connections from one client
            host (1,000); ``None`` lifts the limit. Past it: ``503``, as above.
        max_handshakes: Connections still in their HTTP phase at once (1,000;
            byte entry only). One more is answered ``503`` as soon as it
            connects, without reading its request. ``None`` lifts the limit.
        handler_timeout: Seconds an ``async def`` listener may run (``None``: no
            limit, the default). One that runs longer is cancelled and its
            connection gets an ``error`` event with a
            :class:`~ikisocket_core.HandlerTimeout`; the hub's
            ``on_listener_error`` decides whether the connection is then closed
            (1011). The connection's later listeners still run, in order.
        slow_listener_threshold: Seconds a plain (not ``async def``) listener
            or route callback may take before it is logged, once per
            listener, at WARNING with its name (0.1; ``None``: never). Such a
            listener blocks the event loop, and every connection waits for it.
            Timing needs the driver's clock (``Server(..., clock=)``); every
            bundled driver and ``TestClient`` give one.
    """

    max_message_size: int | None = 1024 * 1024
    max_queue: int = 4 * 1024 * 1024
    backpressure: Literal["drop", "close"] = "drop"
    ping_interval: float | None = 20.0
    ping_timeout: float = 20.0
    handshake_timeout: float = 10.0
    close_timeout: float = 10.0
    max_request_size: int = 16 * 1024
    compression: bool = True
    static: Mapping[str, tuple[str, bytes]] = field(default_factory=dict)
    max_connections: int | None = None
    max_connections_per_ip: int | None = 1000
    max_handshakes: int | None = 1000
    handler_timeout: float | None = None
    slow_listener_threshold: float | None = 0.1

    def __post_init__(self) -> None:
        if self.backpressure not in ("drop", "close"):
            raise LocalProtocolError("backpressure is 'drop' or 'close'")
        for name in ("max_queue", "max_request_size"):
            if getattr(self, name) <= 0:
                raise LocalProtocolError(f"{name} must be positive")
        if self.max_message_size is not None and self.max_message_size <= 0:
            raise LocalProtocolError("max_message_size must be positive or None")
        for name in ("ping_timeout", "handshake_timeout", "close_timeout"):
            if getattr(self, name) <= 0:
                raise LocalProtocolError(f"{name} must be positive")
        for name in (
            "ping_interval",
            "handler_timeout",
            "slow_listener_threshold",
            "max_connections",
            "max_connections_per_ip",
            "max_handshakes",
        ):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise LocalProtocolError(f"{name} must be positive or None")


@dataclass(frozen=True, slots=True)
class Flush:
    """These connections have output waiting: write ``conn.take()`` to each."""

    connections: tuple[ServerConnection, ...]


@dataclass(frozen=True, slots=True)
class CloseTransport:
    """Close this connection's transport after writing what was taken from it.

    For a connection at the message level (ASGI), send a close with
    ``connection.close_code`` and ``connection.close_reason`` first when the
    code is not ``None``.

    Attributes:
        connection: The connection whose transport to close.
        linger: Whether the peer may still be sending: the engine ended the
            connection on its own (a protocol error, an overflow, an HTTP error
            answer). Closing a socket with unread input resets it, and the
            reset destroys what the peer has not read yet (the close frame or
            the status), so half-close it and read it to its end, at most
            ``close_timeout``. ``False`` once the peer closed (its close frame
            or end of stream) or a timeout passed: close at once.
    """

    connection: ServerConnection
    linger: bool = True


@dataclass(frozen=True, slots=True)
class RunHandler:
    """Await ``awaitable`` (it never raises), then call the connection's ``handler_done``."""

    connection: ServerConnection | None
    awaitable: Awaitable[None]
