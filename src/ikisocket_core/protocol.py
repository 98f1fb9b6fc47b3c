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
``server.handler_timed_out(conn, aw)``      the driver cancelled ``aw`` at ``handler_timeout``
``server.tick(now)``                        the clock reached ``server.next_deadline()``
=========================================  ==============================================

The node also keeps the connection limits (``max_connections``,
``max_connections_per_ip``, ``max_handshakes``): an upgrade past one is
answered ``503 Service Unavailable`` with ``Retry-After`` before the hub sees
the request, on both entries. A connection counts against the first two from
its upgrade until the node forgets it (whatever ended it), and against the
third while it is in its HTTP phase.

After every input, call :meth:`Server.drain_actions`. It returns, in order:

* :class:`Flush` first: the connections with output waiting; write
  ``conn.take()`` to each (unless its transport is paused: take it later);
* :class:`CloseTransport`: close a transport once what was taken is written;
* :class:`RunHandler`: await ``awaitable`` for ``conn``; stop reading ``conn``
  until :meth:`Server.handler_done` makes ``conn.can_read`` true again. With a
  ``config.handler_timeout``, cancel the awaitable once it has run that long
  and call :meth:`Server.handler_timed_out` before ``handler_done``: what
  follows (the ``error`` event, a 1011 close) is decided here, not by drivers.

Sleep until :meth:`Server.next_deadline`, then call :meth:`Server.tick`; a tick
costs what expired, not what is connected.
"""

from __future__ import annotations

import itertools
import sys
import warnings
from collections.abc import Awaitable, Callable
from typing import Any

from ._actions import Close, Reject, Send
from ._config import (
    CloseTransport,
    Flush,
    KeepaliveTimeout,
    RunHandler,
    ServerConfig,
)
from ._connection import (
    COUNTED_HANDSHAKE,
    COUNTED_OPEN,
    UNCOUNTED,
    ServerConnection,
)
from ._delivery import deliver
from ._events import MessageKind
from ._handshake import refuse_early, serve_request
from ._http import HTTPPhase
from ._hub import Hub
from ._log import log_refusal
from ._routing import Request
from ._socketio._polling import Polling, Waiter
from ._state import ConnectionState
from ._stats import ServerStats
from ._timers import ARMED, Deadlines

__all__ = [
    "CloseTransport",
    "Flush",
    "KeepaliveTimeout",
    "RETRY_AFTER",
    "RunHandler",
    "Server",
    "ServerAction",
    "ServerConfig",
    "ServerConnection",
    "ServerStats",
]

#: What :meth:`Server.drain_actions` returns.
ServerAction = Flush | CloseTransport | RunHandler

#: Seconds a client refused by a connection limit is told to wait (``Retry-After``):
#: long enough not to hammer a full server, short enough for a reconnecting browser.
RETRY_AFTER = 5


def _refusal(reason: str) -> Reject:
    return Reject(status=503, reason=reason, headers=(("retry-after", str(RETRY_AFTER)),))


_new = object.__new__
_set_flush_connections = Flush.__dict__["connections"].__set__


def _flush_of(connections: tuple[ServerConnection, ...]) -> Flush:
    """``Flush(connections)``, without the frozen ``__init__``."""
    flush: Flush = _new(Flush)
    _set_flush_connections(flush, connections)
    return flush


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
        clock: The driver's monotonic clock (``time.perf_counter``), to time
            plain listeners against ``config.slow_listener_threshold``; the
            engine reads no clock without it.
        **options: :class:`ServerConfig` fields.
    """

    def __init__(
        self,
        hub: Hub,
        config: ServerConfig | None = None,
        *,
        encode_message: Callable[[MessageKind, bytes], Any] | None = None,
        clock: Callable[[], float] | None = None,
        **options: Any,
    ) -> None:
        if options:
            base = config or ServerConfig()
            merged = {f: getattr(base, f) for f in base.__dataclass_fields__}
            merged.update(options)
            config = ServerConfig(**merged)
        self.config = config or ServerConfig()
        # max_message_size as a number to compare with (read per message, and once here,
        # like the slow listener threshold below).
        limit = self.config.max_message_size
        self._message_limit = sys.maxsize if limit is None else limit
        self.hub = hub
        self.stats = ServerStats()
        self.encode_message = encode_message or _as_tuple
        self._conns: dict[ServerConnection, None] = {}
        # The connection limits' counts: open (upgraded) connections, by client host,
        # and connections in their HTTP phase. Changed only by _count_open and _forget.
        self._open = 0
        self._per_host: dict[str, int] = {}
        self._handshakes = 0
        self._dirty: list[ServerConnection] = []
        self._actions: list[ServerAction] = []
        self._polls: list[Polling] = []  # Socket.IO polling transports with a GET to answer
        self._deadlines: Deadlines[ServerConnection] = Deadlines()
        self._now = 0.0
        self._pings = itertools.count(1)
        self._wakeup: Callable[[], None] | None = None
        # The hub's only timer is idle_timeout (fixed when the hub is made): a read
        # gives the hub the clock only when it has one, at no cost otherwise.
        self._hub_timers = hub.idle_timeout is not None
        hub.set_wakeup(self._hub_woke)
        threshold = self.config.slow_listener_threshold
        if clock is not None and threshold is not None:
            hub.set_listener_clock(clock, threshold)

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

        Past ``max_handshakes`` the connection is answered ``503`` at once,
        without waiting for its request, and closed (drain actions as usual).

        Returns:
            The connection to pass to later inputs.
        """
        self._now = max(self._now, now)
        conn = ServerConnection(self, client=client, scheme=scheme, transport=transport)
        self._conns[conn] = None
        self.stats.connections += 1
        limit = self.config.max_handshakes
        if limit is not None and self._handshakes >= limit:
            # Refused before any parser exists: this is what bounds a slow-request flood.
            self.stats.over_max_handshakes += 1
            refuse_early(conn, _refusal("too many handshakes in progress"))
            return conn
        conn._http = HTTPPhase(self.config.max_request_size)
        conn._counted = COUNTED_HANDSHAKE
        self._handshakes += 1
        self._deadlines.arm(conn, now + self.config.handshake_timeout)
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
            The connection, or the :class:`~ikisocket_core.Reject` to answer with
            (``503`` with ``Retry-After`` past a connection limit, without
            asking the hub).
        """
        self._now = max(self._now, now)
        self.stats.connections += 1
        refusal = self._over_limit(request.client)
        if refusal is not None:
            log_refusal(request.client, refusal.status, refusal.reason)
            return refusal
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
        self._count_open(conn)
        self.stats.upgrades += 1
        return conn

    def serve_poll(
        self,
        request: Request,
        method: str,
        body: bytes | None,
        waiter: Waiter,
        *,
        now: float,
    ) -> bool:
        """A server that parses HTTP itself got a request for Socket.IO's long-polling.

        The message entry of the polling transport (the ASGI ``http`` scope):
        ``waiter.answer`` is called with the response, now or, for a GET with
        nothing to send yet, during a later :meth:`drain_actions`. If the
        client leaves first, call ``waiter``'s transport's ``gone(waiter)``
        (the transport is the one given to ``waiter.held``). After calling
        this, you must call :meth:`drain_actions`.

        Args:
            request: The request; its path is the mount's (``hub.socketio``).
            method: ``"GET"``, ``"POST"``, ``"OPTIONS"``...
            body: The body, or ``None`` when it was longer than the mount's
                ``max_payload`` (read no further: the answer is 413).
            waiter: What answers the request: ``node`` (this server),
                ``answer(answer)`` and ``held(transport)``.
            now: The current monotonic time.

        Returns:
            Whether the request waits for its answer.
        """
        self._now = max(self._now, now)
        return serve_request(self, request, method, body, waiter)

    # -- inputs ---------------------------------------------------------------------------

    def receive_data(
        self, conn: ServerConnection, data: bytes, now: float | None = None, *, take: bool = False
    ) -> list[Any] | None:
        """Bytes arrived on ``conn``. Never raises because of what the peer sent.

        After calling this, you must call :meth:`drain_actions`, unless you
        asked to ``take`` and got a list.

        Args:
            conn: The connection.
            data: The bytes (empty is ignored; use :meth:`receive_eof`).
            now: The current monotonic time, when the driver has it at hand:
                activity is then stamped exactly (``idle_timeout``).
            take: You can write ``conn``'s output at once: when it is all
                there is to do (an echo, a reply), it comes back taken
                (:meth:`ServerConnection.receive_data`).

        Returns:
            With ``take``, ``conn``'s output (write it) when it was all there
            was to do; else ``None`` (drain the actions).
        """
        if now is not None:
            self._now = now
            if self._hub_timers:
                self.hub.tick(now)
        return conn.receive_data(data, take=take)

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

    def handler_timed_out(self, conn: ServerConnection | None, awaitable: Awaitable[None]) -> None:
        """The driver cancelled ``awaitable`` after it ran ``config.handler_timeout`` seconds.

        The connection's ``error`` listeners get a :class:`~ikisocket_core.HandlerTimeout`
        and the hub's ``on_listener_error`` policy applies (``"close"``: close
        with 1011). Call :meth:`handler_done` afterwards, as for any handler
        that finished. After calling this, you must call :meth:`drain_actions`.

        Args:
            conn: The connection the handler ran for (``None`` for none).
            awaitable: The :class:`RunHandler`'s awaitable that was cancelled.
        """
        self.stats.handler_timeouts += 1
        timed_out = getattr(awaitable, "timed_out", None)
        if timed_out is not None:  # the hub's guarded handler; anything else has no listener
            timed_out(self.config.handler_timeout or 0.0)

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

    @property
    def output_only(self) -> bool:
        """Whether all the node has to do now is write its connections' output.

        True when :meth:`drain_actions` would return nothing but a :class:`Flush`:
        no close to perform, no handler to run, no long-polling answer waiting. A
        driver that was just given input may then put the drain off to the end of
        its loop's turn and write the output of several inputs together (the ASGI
        adapter does, see ``ikisocket_adapters.asyncio`` for why).
        """
        return not self._actions and not self._polls and not self.hub._queue

    @property
    def deadlines_armed(self) -> int:
        """A count that grows whenever a deadline is armed (the hub's and Socket.IO's too).

        While it stays the same, :meth:`next_deadline` can only have moved
        later, never earlier: a driver whose timer fires early and re-arms
        (as the socket adapters' does) need not ask again after every input.
        """
        return ARMED[0]

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
            exchange = conn._exchange
            if exchange is not None and exchange.waiting is not None:
                continue  # a polling GET: its session's close packet answers it, then it closes
            if conn.state is ConnectionState.CONNECTING:
                conn._http = None
                conn._end(1006, "", None)
                conn._close_transport(linger=False)  # nothing was answered: nothing to keep

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
        while self._polls:  # pending GETs of polling sessions that have packets now
            polls = self._polls
            self._polls = []
            for transport in polls:
                transport.flush()
            if self.hub._queue:
                self._pump_hub()
        actions = self._actions
        dirty = self._dirty
        if not dirty:
            if not actions:
                return []
            self._actions = []
            return actions
        self._dirty = []
        if len(dirty) == 1:
            # One connection has output (an echo, an ack): its own Flush, made once.
            conn = dirty[0]
            conn.dirty = False
            flush = conn._flush
            if flush is None:
                flush = _flush_of((conn,))
                if conn._counted:  # kept while the node has it (it refers back to it)
                    conn._flush = flush
        else:
            for conn in dirty:
                conn.dirty = False
            flush = _flush_of(tuple(dirty))
        if not actions:
            return [flush]
        self._actions = []
        actions.insert(0, flush)
        return actions

    @property
    def connections(self) -> tuple[ServerConnection, ...]:
        """Every connection the server holds (any state)."""
        return tuple(self._conns)

    @property
    def receiving(self) -> ServerConnection | None:
        """The connection of this node whose input runs now, if any.

        Set around :meth:`ServerConnection.receive_data` and
        :meth:`ServerConnection.receive_message`: a message the hub sends to
        that connection alone, with nothing queued before it, goes onto it at
        once (:meth:`ServerConnection.deliver_own`); the driver drains it right
        after the input.
        """
        conn = self.hub._receiving
        return conn if conn is not None and conn._node is self else None

    @property
    def open_connections(self) -> int:
        """How many connections count against ``max_connections`` now (upgraded, not gone)."""
        return self._open

    @property
    def handshakes(self) -> int:
        """How many connections count against ``max_handshakes`` now (in their HTTP phase)."""
        return self._handshakes

    def connections_from(self, host: str) -> int:
        """How many connections from ``host`` count against ``max_connections_per_ip`` now.

        Args:
            host: The client host, as the driver gave it in ``client``.

        Returns:
            The count (0 for a host with none).
        """
        return self._per_host.get(host, 0)

    # -- for the connections (package-private) --------------------------------------------

    def _next_ping_number(self) -> int:
        return next(self._pings) & 0xFFFFFFFF

    def _over_limit(self, client: tuple[str, int] | None) -> Reject | None:
        """The 503 for one more upgrade from ``client``, if a connection limit forbids it."""
        config = self.config
        limit = config.max_connections
        if limit is not None and self._open >= limit:
            self.stats.over_max_connections += 1
            return _refusal("the server is at its connection limit")
        limit = config.max_connections_per_ip
        if limit is not None and client is not None and self._per_host.get(client[0], 0) >= limit:
            self.stats.over_max_connections_per_ip += 1
            return _refusal("too many connections from this address")
        return None

    def _count_open(self, conn: ServerConnection) -> None:
        """``conn`` was upgraded: it leaves the handshakes and counts as open."""
        if conn._counted == COUNTED_HANDSHAKE:
            self._handshakes -= 1
        conn._counted = COUNTED_OPEN
        self._open += 1
        if conn.client is not None:
            host = conn._host = conn.client[0]
            self._per_host[host] = self._per_host.get(host, 0) + 1

    def _forget(self, conn: ServerConnection, *, close: bool = False, linger: bool = True) -> None:
        # Every end path of every connection passes here, and only its first pass
        # finds it registered: the limits' counts drop exactly once.
        if conn in self._conns:
            del self._conns[conn]
            conn._flush = None  # it refers back to the connection
            counted = conn._counted
            conn._counted = UNCOUNTED
            if counted == COUNTED_HANDSHAKE:
                self._handshakes -= 1
            elif counted == COUNTED_OPEN:
                self._open -= 1
                host = conn._host
                if host is not None:
                    left = self._per_host[host] - 1
                    if left:
                        self._per_host[host] = left
                    else:
                        del self._per_host[host]
            if close:
                self._actions.append(CloseTransport(conn, linger))

    def _hub_woke(self) -> None:
        if self._wakeup is not None:
            self._wakeup()

    def _pump_hub(self) -> None:
        """Route the hub's actions to their connections."""
        hub = self.hub
        while hub._queue:
            # hub.drain_actions(), inlined (once per input that emitted).
            actions = hub._queue
            hub._queue = []
            hub._wakeup_pending = False
            for action in actions:
                if action.__class__ is Send:
                    deliver(self, action)
                elif isinstance(action, Close):
                    conn = action.target.conn
                    if isinstance(conn, ServerConnection):
                        conn.close(action.code, action.reason)
                    elif conn.__class__ is Polling:
                        conn.close()
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
