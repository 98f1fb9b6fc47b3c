"""Run a hub behind any ASGI 3 server: uvicorn, hypercorn (asyncio or trio), daphne, granian.

::

    app = asgi_app(hub)                      # uvicorn module:app
    app = asgi_app(hub, fallback=other_app)  # wrap an existing ASGI application

The server does the upgrade and the framing, so each connection is a
message-level :class:`~ikisocket_core.protocol.ServerConnection` of one
:class:`~ikisocket_core.protocol.Server` per hub, and the engine applies the
limits, the output bound and its ``backpressure`` policy, listener ordering and
counters exactly as on ikisocket's own servers. This module only pumps: ASGI
``receive`` into the connection; per connection, a sender task writing
``conn.take()`` through its ASGI ``send`` (on asyncio servers whose ``send``
is a coroutine, the task that produced the output writes it itself, and a
sender task runs only while a send has to wait) and a task awaiting its
``async def`` listeners in order while they run; and a background service that
drains what is queued outside an input and sleeps until the engine's next
deadline. The service lives
in the ASGI lifespan (or :meth:`ASGIApp.lifespan`), else in a live connection.

On asyncio servers, a message whose only output is its connection's own reply
(an echo, an ack) leaves that reply in the engine until the end of the loop's
turn, when one drain writes the turn's replies together
(:attr:`~ikisocket_core.protocol.Server.output_only`; at most ``HELD_BYTES`` per
connection; after a turn with a single reply, the next ``LONE_REPLIES`` are
written at once), as ``ikisocket_adapters.asyncio`` does and for the same
reason. Any other drain writes them first: the engine keeps each connection's
output in order.
"""

from __future__ import annotations

import asyncio
import math
import time
import warnings
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, Literal

import anyio
from anyio.abc import TaskGroup

from ikisocket_core import (
    Hub,
    LocalProtocolError,
    MessageKind,
    Reject,
)
from ikisocket_core.protocol import (
    CloseTransport,
    Flush,
    RunHandler,
    Server,
    ServerConfig,
    ServerConnection,
    ServerStats,
)

from ._asgi_conn import _Conn, flush, serve_asgi
from ._asgi_polling import serve_polling
from ._asgi_scope import (
    ASGIApplication,
    ASGISend,
    Message,
    Receive,
    Scope,
    _lifespan_of_nothing,
    _reject,
    _request,
    _respond,
    _route_path,
)
from ._asgi_tasks import _Group, asyncio_context
from ._common import SHUTDOWN_CODE, HeldReplies, discard, logger, running_clock

__all__ = ["ASGIApp", "asgi_app"]


_TEXT = MessageKind.TEXT


def __getattr__(name: str) -> Any:
    if name == "ASGIStats":
        warnings.warn(
            "ASGIStats is deprecated: ASGIApp.stats is the engine's ServerStats",
            DeprecationWarning,
            stacklevel=2,
        )
        return ServerStats
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def asgi_app(
    hub: Hub,
    *,
    fallback: ASGIApplication | None = None,
    max_queue: int = 4 * 1024 * 1024,
    backpressure: Literal["drop", "close"] = "drop",
    max_message_size: int | None = 1024 * 1024,
    close_timeout: float = 10.0,
    **options: Any,
) -> ASGIApp:
    """Make the ASGI 3 application that serves ``hub``'s WebSocket routes.

    Args:
        hub: The application's hub. The ASGI app becomes its driver.
        fallback: An ASGI app for everything that is not one of the hub's
            WebSocket routes (HTTP requests, other WebSockets, the lifespan).
            Without it, HTTP requests get 404 (426 on a WebSocket route).
        max_queue: Outbound bytes a connection may have waiting before the
            ``backpressure`` policy applies. A message is always accepted into
            an empty queue, whatever its size.
        backpressure: ``"drop"`` the message for that connection, or
            ``"close"`` the connection with 1013.
        max_message_size: Largest message accepted, in bytes; more closes the
            connection with 1009. ``None`` leaves the limit to the server.
        close_timeout: Seconds to wait for what was queued and the close to be
            written, and for connections to finish when the lifespan shuts down.
        **options: Any other :class:`~ikisocket_core.protocol.ServerConfig`
            field, so the same limits are keywords on every adapter (those
            about the handshake, frames and pings are the ASGI server's).

    Returns:
        The application.

    Raises:
        ValueError: A limit is out of range, or ``hub`` is already served by an
            ASGI app with other limits (one hub, one engine).
    """
    try:
        config = ServerConfig(
            max_queue=max_queue,
            backpressure=backpressure,
            max_message_size=max_message_size,
            close_timeout=close_timeout,
            **options,
        )
    except LocalProtocolError as exc:
        raise ValueError(str(exc)) from exc
    return ASGIApp(hub, fallback=fallback, config=config)


class ASGIApp:
    """The ASGI application :func:`asgi_app` returns (call it as ``app(scope, receive, send)``).

    Attributes:
        hub: The hub it serves.
        fallback: The wrapped application, if any.
        config: The engine's limits.
    """

    def __init__(self, hub: Hub, *, fallback: ASGIApplication | None, config: ServerConfig) -> None:
        self.hub = hub
        self.fallback = fallback
        self.config = config
        self._driver = _Driver.of(hub, config)

    @property
    def stats(self) -> ServerStats:
        """The engine's counters for the hub's ASGI connections (shared by its apps)."""
        return self._driver.stats

    #: Serve one ASGI connection or the lifespan: ``await app(scope, receive, send)``.
    __call__ = serve_asgi

    def _routes(self, path: str) -> bool:
        """Whether a WebSocket on ``path`` is the hub's (a route, or Socket.IO's path)."""
        sio = self.hub._sio
        return self.hub.match(path) is not None or (sio is not None and sio._serves(path))

    async def _serve_other(self, scope: Scope, receive: Receive, send: ASGISend) -> None:
        """Serve a scope that is not a WebSocket: HTTP, the lifespan, or the fallback's."""
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(scope, receive, send)
        elif self.fallback is not None:
            await self.fallback(scope, receive, send)
        else:
            raise RuntimeError(f"unsupported ASGI scope type {kind!r}")

    @asynccontextmanager
    async def lifespan(self) -> AsyncIterator[None]:
        """Host the background service for the block, e.g. inside a host app's lifespan.

        Starlette and FastAPI do not pass the lifespan to mounted apps; enter
        this from theirs to keep ``idle_timeout`` and background emits on a
        long-lived task. Leaving it closes every connection with 1001.

        Yields:
            Nothing; the service runs until the block ends.
        """
        async with anyio.create_task_group() as tg:
            self._driver.pin(tg)
            try:
                yield
            finally:
                with anyio.CancelScope(shield=True):
                    await self._driver.shutdown()
                self._driver.unpin(tg)

    # -- scopes ---------------------------------------------------------------------------

    async def _http(self, scope: Scope, receive: Receive, send: ASGISend) -> None:
        path = _route_path(scope)
        sio = self.hub._sio
        if sio is not None and sio._serves(path):  # Socket.IO's HTTP long-polling
            await serve_polling(self._driver, scope, path, receive, send)
        elif self.hub.match(path) is not None:
            await _respond(
                send,
                426,
                b"This is a WebSocket endpoint: upgrade the connection.\n",
                [(b"upgrade", b"websocket"), (b"sec-websocket-version", b"13")],
            )
        elif self.fallback is not None:
            await self.fallback(scope, receive, send)
        else:
            await _respond(send, 404, b"Not Found\n")

    async def _lifespan(self, scope: Scope, receive: Receive, send: ASGISend) -> None:
        driver = self._driver
        async with anyio.create_task_group() as tg:

            async def relay() -> Message:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    driver.pin(tg)
                elif message["type"] == "lifespan.shutdown":
                    await driver.shutdown()
                    driver.unpin(tg)
                return message

            try:
                await (self.fallback or _lifespan_of_nothing)(scope, relay, send)
            finally:
                driver.unpin(tg)

    async def _open(
        self, scope: Scope, path: str, receive: Receive, send: ASGISend
    ) -> _Conn | None:
        """Accept or refuse a WebSocket in the engine: its :class:`_Conn` to serve, if accepted."""
        message = await receive()
        if message["type"] != "websocket.connect":
            return None  # the client left before the handshake
        driver = self._driver
        server = driver.install()
        now = driver.stamp()
        # The hub answers a refusal, a failing hook or a taken UUID with a Reject
        # (403, 409, 500...): the same answer as on sockets, decided once.
        result = server.accept(_request(scope, path), now=now)
        if isinstance(result, Reject):
            await _reject(scope, send, result)
            driver.drain()
            return None
        conn = _Conn(driver, result, send)
        result.transport = conn
        driver.rearm()  # (a Socket.IO session arms its ping)
        return conn


def _call_soon(callback: Callable[[], None]) -> None:
    """Call ``callback`` at the end of the loop's turn, in a context where anyio works.

    The drain it runs may start a connection's sender or read the time through
    anyio, from a loop callback: see :func:`_asgi_tasks.asyncio_context`.
    """
    asyncio.get_running_loop().call_soon(callback, context=asyncio_context())


class _Driver:
    """One hub's engine and the tasks that pump it; one per hub."""

    @classmethod
    def of(cls, hub: Hub, config: ServerConfig) -> _Driver:
        driver = _drivers.get(id(hub))
        if driver is None or driver.hub is not hub:
            driver = _drivers[id(hub)] = cls(hub, config)
        elif driver.config != config:
            raise ValueError("this hub is already served by an ASGI app with other limits")
        return driver

    def __init__(self, hub: Hub, config: ServerConfig) -> None:
        self.hub = hub
        self.config = config
        self.stats = ServerStats()
        self.server: Server | None = None
        self.conns: dict[_Conn, None] = {}
        self._gone: anyio.Event | None = None
        self._wake: anyio.Event | None = None
        #: The deadline the service sleeps until (None: none, or it is awake and looks again).
        self._sleep_until: float | None = None
        #: ``Server.deadlines_armed`` when the service last looked at ``next_deadline``.
        self.seen = -1
        self._service_scope: anyio.CancelScope | None = None
        self._service_tg: _Group | None = None
        self._host: object = None  # the _Conn or pinned task group running the service
        self._pinned: TaskGroup | None = None
        self._moving = False
        #: Replies left in the engine for the end of the loop's turn (asyncio servers
        #: only: see serve_asgi).
        self.holds = HeldReplies(_call_soon, self.drain)
        #: The last text a reader took from a ``websocket.receive``, and the bytes it fed
        #: (held until the next: one message per hub).
        self.text = ""
        self.text_of: bytes | None = None

    def install(self) -> Server:
        """The engine, made on first use (so importing an app never steals a hub)."""
        server = self.server
        if server is None:
            server = self.server = Server(
                self.hub, self.config, encode_message=self.encode, clock=time.perf_counter
            )
            server.stats = self.stats
            server.set_wakeup(self._woken)
        return server

    def encode(self, kind: MessageKind, data: bytes) -> Message:
        """The ASGI ``websocket.send`` message of one outgoing message (``encode_message``).

        Called once per message whatever the number of targets: ASGI servers
        only read these dicts, so every target's send gets the same one. Text
        that is the very bytes a reader just encoded from a ``websocket.receive``
        (an echo, a relay) is not decoded again.
        """
        if kind is _TEXT:
            text = self.text if data is self.text_of else data.decode("utf-8")
            return {"type": "websocket.send", "text": text}
        return {"type": "websocket.send", "bytes": data}

    def _woken(self) -> None:
        # Called by the engine, possibly deep inside a command: only schedule the drain.
        if self._wake is not None:
            self._wake.set()

    def stamp(self) -> float:
        """Read the loop's clock, give it to the engine if ``idle_timeout`` needs it; return it.

        The loop's clock, not ``anyio.current_time()``, which looks the running
        backend up on every call (2.4 µs, see :func:`running_clock`).
        """
        now = running_clock()()
        if self.hub.idle_timeout is not None:
            self.install().tick(now)
        return now

    def rearm(self) -> None:
        """Wake the sleeping service if a deadline was armed that comes before its own.

        Called after every input: one may arm a deadline earlier than the one the
        service sleeps until (a pong schedules the next ping; an ack's timeout; a
        new Socket.IO session). Only an armed deadline can be earlier, so the engine
        is asked only when ``deadlines_armed`` moved; a plain WebSocket arms none,
        and its accept does not wake the service for nothing.
        """
        server = self.server
        if server is None:
            return
        armed = server.deadlines_armed
        if armed == self.seen:
            return
        self.seen = armed
        wake = self._wake
        if wake is None:
            return  # (no service sleeping: it looks before it sleeps)
        when = server.next_deadline()
        if when is not None and (self._sleep_until is None or when < self._sleep_until):
            wake.set()

    async def shutdown(self) -> None:
        """Close every connection with 1001 and wait (bounded) for them to finish."""
        self.install().shutdown(SHUTDOWN_CODE, "server shutting down")
        self.drain()
        with anyio.move_on_after(self.config.close_timeout):
            while self.conns:
                self._gone = anyio.Event()
                await self._gone.wait()

    # -- draining ------------------------------------------------------------------------

    def drain(self) -> None:
        """Hand the engine's actions to the connections' tasks; synchronous."""
        server = self.server
        assert server is not None
        for action in server.drain_actions():
            if action.__class__ is Flush:
                flush(action.connections)
            elif isinstance(action, CloseTransport):
                action.connection.transport.close_transport()
            else:
                self._run(action)  # type: ignore[arg-type]
        self.rearm()

    def _run(self, action: RunHandler) -> None:
        conn = action.connection
        owner: _Conn | None = conn.transport if conn is not None else None
        if owner is not None and not owner.done:
            owner.add_handler(action.awaitable)
        elif self._service_tg is not None:
            self._service_tg.start_soon(self._run_late, conn, action.awaitable)
        else:
            logger.warning("no task to run an async listener on; it was dropped")
            discard(action.awaitable)
            self._done(conn)

    async def _run_late(self, conn: ServerConnection | None, awaitable: Awaitable[None]) -> None:
        await self.run_one(conn, awaitable)
        self._done(conn)

    async def run_one(self, conn: ServerConnection | None, awaitable: Awaitable[None]) -> None:
        """Await one handler, cancelled after ``handler_timeout``; the engine decides what then."""
        timeout = self.config.handler_timeout
        if timeout is None:
            await awaitable
            return
        with anyio.move_on_after(timeout) as scope:
            await awaitable
        if scope.cancelled_caught:
            server = self.server
            assert server is not None
            server.handler_timed_out(conn, awaitable)

    def _done(self, conn: ServerConnection | None) -> None:
        server = self.server
        assert server is not None
        server.handler_done(conn)
        self.drain()

    # -- the background service ----------------------------------------------------------

    def pin(self, tg: TaskGroup) -> None:
        """Run the service in ``tg`` (a lifespan) rather than in connections."""
        self.install()
        self.hub.resume_accepting()
        self._pinned = tg
        if self._host is None:
            self._start(tg, tg)
        elif isinstance(self._host, _Conn):
            self._move()

    def unpin(self, tg: TaskGroup) -> None:
        """Stop running the service in ``tg``."""
        if self._pinned is tg:
            self._pinned = None
            if self._host is tg:
                self._move()

    def attach(self, conn: _Conn) -> None:
        """A connection is being served; make sure the service runs somewhere."""
        self.conns[conn] = None
        if self._host is None:
            self._ensure_service()

    def release(self, conn: _Conn) -> None:
        """A connection is ending: move the service off its task group."""
        if self._host is conn:
            self._move()

    def detach(self, conn: _Conn) -> None:
        """A connection is gone."""
        self.conns.pop(conn, None)
        if not self.conns and self._gone is not None:
            self._gone.set()
        if self._host is None:
            self._ensure_service()

    def _move(self) -> None:
        if self._service_scope is not None:
            self._moving = True
            self._service_scope.cancel()

    def _ensure_service(self) -> None:
        if self._pinned is not None:
            self._start(self._pinned, self._pinned)
            return
        for conn in self.conns:
            if conn.tg is not None and not conn.done:
                self._start(conn.tg, conn)
                return

    def _start(self, tg: _Group, host: object) -> None:
        self._host = host
        self._service_tg = tg
        # Made now, not in the task: the host may leave before the task first runs.
        self._service_scope = anyio.CancelScope()
        tg.start_soon(self._service, self._service_scope)

    async def _service(self, scope: anyio.CancelScope) -> None:
        server = self.install()
        try:
            with scope:
                while True:
                    # Made before draining: a wakeup during the drain is not lost.
                    wake = self._wake = anyio.Event()
                    # Awake: a deadline armed from here on (by the drain) wakes it again.
                    self._sleep_until = None
                    now = anyio.current_time()
                    self.seen = server.deadlines_armed
                    deadline = server.next_deadline()
                    if deadline is not None and deadline <= now:
                        server.tick(now)
                        self.seen = server.deadlines_armed
                        deadline = server.next_deadline()
                    self.drain()
                    self._sleep_until = deadline
                    with anyio.CancelScope(deadline=math.inf if deadline is None else deadline):
                        await wake.wait()
        finally:
            self._service_scope = None
            self._service_tg = None
            self._wake = None
            self._sleep_until = None
            self._host = None
            if self._moving:
                self._moving = False
                self._ensure_service()


#: One driver per hub, shared by every app made for it (one hub, one engine).
_drivers: weakref.WeakValueDictionary[int, _Driver] = weakref.WeakValueDictionary()
