"""The engine's node: every :class:`ServerConnection` of one driver, and their deadlines.

An adapter, a custom server, the ASGI adapter and the test client all drive
the same per-connection object, :class:`ServerConnection` (see its module for
the theory). The :class:`Server` here is the thin registry around them: it
makes connections, routes the hub's actions to them, keeps one heap of their
deadlines, and collects their output for the driver. It holds no policy of
its own.

=========================================  ==============================================
Driver input                               When
=========================================  ==============================================
``conn = server.connect(now=...)``          a transport was accepted (byte entry)
``server.receive_data(conn, data, now)``    bytes arrived
``server.receive_eof(conn)``                the peer half-closed (read returned EOF)
``server.connection_lost(conn)``            the transport is gone
``server.accept(request, now=...)``         an ASGI server upgraded a request (message entry)
``conn.receive_message(data, kind)``        a whole message arrived (message entry)
``conn.receive_close(code, reason)``        the peer closed (message entry)
``server.handler_done(conn)``               a :class:`RunHandler` of ``conn`` finished
``server.tick(now)``                        the clock reached ``server.next_deadline()``
=========================================  ==============================================

After every input, call :meth:`Server.drain_actions`. It returns, in order:

* :class:`Flush` first: the connections with output waiting; write
  ``conn.take()`` to each (unless its transport is paused: take it later);
* :class:`CloseTransport`: close a transport once what was taken is written;
* :class:`RunHandler`: await ``awaitable`` for ``conn``; stop reading ``conn``
  until :meth:`Server.handler_done` makes ``conn.can_read`` true again.

Sleep until :meth:`Server.next_deadline`, then call :meth:`Server.tick`; a tick
costs what expired, not what is connected.
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Callable
from typing import Any

from ._actions import Close, Reject, Send
from ._config import (
    CloseTransport,
    Flush,
    KeepaliveTimeout,
    RunHandler,
    ServerConfig,
    ServerStats,
)
from ._connection import ServerConnection, deliver, log_refusal
from ._events import MessageKind
from ._http import HTTPPhase
from ._hub import Hub
from ._routing import Request
from ._state import ConnectionState
from ._timers import Deadlines

__all__ = [
    "CloseTransport",
    "Flush",
    "KeepaliveTimeout",
    "RunHandler",
    "Server",
    "ServerAction",
    "ServerConfig",
    "ServerConnection",
    "ServerStats",
]

#: What :meth:`Server.drain_actions` returns.
ServerAction = Flush | CloseTransport | RunHandler


_new = object.__new__
_set_flush_connections = Flush.__dict__["connections"].__set__


def _as_tuple(kind: MessageKind, data: bytes) -> tuple[MessageKind, bytes]:
    return (kind, data)


class Server:
    """The connections of one driver, from the first request byte to the last close frame.

    Args:
        hub: The application. The server becomes its driver (it installs the
            hub's wakeup).
        config: Limits and timings; keywords given here override it.
        encode_message: For message-level connections (:meth:`accept`): turns
            an outgoing message into what :meth:`ServerConnection.take`
            returns, once per message whatever the number of targets
            (default: a ``(kind, data)`` tuple).
        **options: :class:`ServerConfig` fields.
    """

    def __init__(
        self,
        hub: Hub,
        config: ServerConfig | None = None,
        *,
        encode_message: Callable[[MessageKind, bytes], Any] | None = None,
        **options: Any,
    ) -> None:
        if options:
            base = config or ServerConfig()
            merged = {f: getattr(base, f) for f in base.__dataclass_fields__}
            merged.update(options)
            config = ServerConfig(**merged)
        self.config = config or ServerConfig()
        self.hub = hub
        self.stats = ServerStats()
        self.encode_message = encode_message or _as_tuple
        self._conns: dict[ServerConnection, None] = {}
        self._dirty: list[ServerConnection] = []
        self._actions: list[ServerAction] = []
        self._deadlines: Deadlines[ServerConnection] = Deadlines()
        self._now = 0.0
        self._pings = itertools.count(1)
        self._wakeup: Callable[[], None] | None = None
        # The hub's only timer is idle_timeout (fixed when the hub is made): a read
        # gives the hub the clock only when it has one, at no cost otherwise.
        self._hub_timers = hub.idle_timeout is not None
        hub.set_wakeup(self._hub_woke)

    # -- making connections ---------------------------------------------------------------

    def connect(
        self,
        *,
        now: float,
        client: tuple[str, int] | None = None,
        scheme: str = "ws",
        transport: Any = None,
    ) -> ServerConnection:
        """A transport was accepted: start its HTTP phase and handshake deadline (byte entry).

        Args:
            now: The current monotonic time.
            client: The peer's ``(host, port)``.
            scheme: ``"ws"``, or ``"wss"`` behind TLS.
            transport: The driver's object, stored as ``conn.transport``.

        Returns:
            The connection to pass to later inputs.
        """
        self._now = max(self._now, now)
        conn = ServerConnection(self, client=client, scheme=scheme, transport=transport)
        conn._http = HTTPPhase(self.config.max_request_size)
        self._conns[conn] = None
        self._deadlines.arm(conn, now + self.config.handshake_timeout)
        self.stats.connections += 1
        return conn

    def accept(
        self, request: Request, *, now: float, transport: Any = None
    ) -> ServerConnection | Reject:
        """A server that does the handshake itself upgraded ``request`` (message entry).

        The hub routes the request and runs its hooks; an accepted connection
        starts OPEN and takes whole messages (:meth:`ServerConnection.receive_message`).
        After calling this, answer the handshake (accept, or the rejection's
        HTTP status) and drain actions.

        Args:
            request: The request as the server saw it.
            now: The current monotonic time.
            transport: The driver's object, stored as ``conn.transport``.

        Returns:
            The connection, or the :class:`~ikisocket_core.Reject` to answer with.
        """
        self._now = max(self._now, now)
        self.stats.connections += 1
        conn = ServerConnection(
            self,
            client=request.client,
            scheme=request.scheme,
            transport=transport,
            message_level=True,
        )
        result = self.hub.open(request, conn=conn)
        if isinstance(result, Reject):
            self.stats.rejected += 1
            log_refusal(request.client, result.status, result.reason)
            return result
        conn.kws = result
        self._conns[conn] = None
        self.stats.upgrades += 1
        return conn

    # -- inputs ---------------------------------------------------------------------------

    def receive_data(self, conn: ServerConnection, data: bytes, now: float | None = None) -> None:
        """Bytes arrived on ``conn``. Never raises because of what the peer sent.

        After calling this, you must call :meth:`drain_actions`.

        Args:
            conn: The connection.
            data: The bytes (empty is ignored; use :meth:`receive_eof`).
            now: The current monotonic time, when the driver has it at hand:
                activity is then stamped exactly (``idle_timeout``).
        """
        if now is not None:
            self._now = now
            if self._hub_timers:
                self.hub.tick(now)
        conn.receive_data(data)

    def receive_eof(self, conn: ServerConnection) -> None:
        """The peer half-closed its side; the connection ends (1006 without a close frame).

        After calling this, you must call :meth:`drain_actions`.

        Args:
            conn: The connection.
        """
        conn.receive_eof()

    def connection_lost(self, conn: ServerConnection, error: BaseException | None = None) -> None:
        """The transport is gone; forget the connection.

        After calling this, you must call :meth:`drain_actions`.

        Args:
            conn: The connection.
            error: The transport error, if any.
        """
        conn.connection_lost(error)

    def handler_done(self, conn: ServerConnection | None) -> None:
        """A :class:`RunHandler` of ``conn`` finished; parse input held back meanwhile.

        After calling this, you must call :meth:`drain_actions`.

        Args:
            conn: The connection the handler ran for (``None`` for none).
        """
        if conn is not None:
            conn.handler_done()

    def tick(self, now: float) -> None:
        """Run the deadlines that expired (handshake, keepalive, closing handshake) and the hub's.

        After calling this, you must call :meth:`drain_actions`.

        Args:
            now: The current monotonic time.
        """
        self._now = now
        for conn in self._deadlines.expired(now):
            conn.on_deadline(now)
        self.hub.tick(now)

    def next_deadline(self) -> float | None:
        """When :meth:`tick` next has work to do, or ``None``.

        Returns:
            A time on the clock given to :meth:`tick` and :meth:`connect`.
        """
        ours = self._deadlines.next()
        hubs = self.hub.next_deadline()
        if ours is None:
            return hubs
        if hubs is None:
            return ours
        return min(ours, hubs)

    def shutdown(self, code: int = 1001, reason: str = "server shutting down") -> None:
        """Begin a graceful shutdown: refuse new connections, close every open one.

        Open connections get a close frame with ``code`` (their ``close`` events
        fire); connections still in their HTTP phase are dropped at once (a
        browser's spare pre-connections would otherwise hold the shutdown for
        ``handshake_timeout``). The driver then keeps pumping until every
        connection is gone, at most ``close_timeout``. After calling this, you
        must call :meth:`drain_actions`.

        Args:
            code: The close code (1001 "going away").
            reason: The close reason.
        """
        self.hub.stop_accepting()
        self.hub.close_all(code, reason)
        for conn in tuple(self._conns):
            if conn.state is ConnectionState.CONNECTING:
                conn._http = None
                conn._end(1006, "", None)
                conn._close_transport()

    def set_wakeup(self, callback: Callable[[], None] | None) -> None:
        """Register what to call when actions appear outside an input call.

        Async listeners and background jobs (``hub.broadcast`` from a timer)
        queue work while no input is running; the server then calls
        ``callback()`` once so the driver can schedule :meth:`drain_actions`.

        Args:
            callback: A plain function, or ``None``.
        """
        self._wakeup = callback

    # -- output ---------------------------------------------------------------------------

    def drain_actions(self) -> list[ServerAction]:
        """Everything to do now: a :class:`Flush` first, then closes and handlers, in order.

        Returns:
            The actions; the list is the caller's.
        """
        if self.hub._queue:
            self._pump_hub()
        actions = self._actions
        self._actions = []
        dirty = self._dirty
        if dirty:
            self._dirty = []
            for conn in dirty:
                conn.dirty = False
            flush: Flush = _new(Flush)  # Flush(tuple(dirty)), without the frozen __init__
            _set_flush_connections(flush, tuple(dirty))
            actions.insert(0, flush)
        return actions

    @property
    def connections(self) -> tuple[ServerConnection, ...]:
        """Every connection the server holds (any state)."""
        return tuple(self._conns)

    # -- for the connections (package-private) --------------------------------------------

    def _next_ping_number(self) -> int:
        return next(self._pings) & 0xFFFFFFFF

    def _forget(self, conn: ServerConnection, *, close: bool = False) -> None:
        if conn in self._conns:
            del self._conns[conn]
            if close:
                self._actions.append(CloseTransport(conn))

    def _hub_woke(self) -> None:
        if self._wakeup is not None:
            self._wakeup()

    def _pump_hub(self) -> None:
        """Route the hub's actions to their connections."""
        hub = self.hub
        while hub._queue:
            for action in hub.drain_actions():
                if action.__class__ is Send:
                    deliver(self, action)
                elif isinstance(action, Close):
                    conn = action.target.conn
                    if isinstance(conn, ServerConnection):
                        conn.close(action.code, action.reason)
                else:  # a RunHandler
                    target = action.target  # type: ignore[union-attr]
                    conn = target.conn if target is not None else None
                    if not isinstance(conn, ServerConnection):
                        conn = None
                    if conn is not None:
                        conn.blocked += 1
                    self._actions.append(RunHandler(conn, action.awaitable))  # type: ignore[union-attr]


def __getattr__(name: str) -> Any:
    # ``Connection`` was the engine's per-connection class before it became one object
    # per connection with its own inputs; the old name keeps working for a while.
    if name == "Connection":
        warnings.warn(
            "ikisocket_core.protocol.Connection is now ServerConnection",
            DeprecationWarning,
            stacklevel=2,
        )
        return ServerConnection
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
