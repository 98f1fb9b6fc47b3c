"""Run a hub behind any ASGI 3 server: uvicorn, hypercorn (asyncio or trio), daphne, granian.

::

    app = asgi_app(hub)                      # uvicorn module:app
    app = asgi_app(hub, fallback=other_app)  # wrap an existing ASGI application

The server does the upgrade and the framing, so each connection is a
message-level :class:`~ikisocket_core.protocol.ServerConnection` of one
:class:`~ikisocket_core.protocol.Server` per hub, and the engine applies the
limits, the output bound and its ``backpressure`` policy, listener ordering and
counters exactly as on ikisocket's own servers. This module only pumps: ASGI
``receive`` into the connection; per connection, one sender task writing
``conn.take()`` through its ASGI ``send`` (on asyncio, the task that produced
the output writes it itself while that sender is idle) and one task awaiting
its ``async def`` listeners in order; and a background service that drains what is queued
outside an input and sleeps until the engine's next deadline. The service lives
in the ASGI lifespan (or :meth:`ASGIApp.lifespan`), else in a live connection.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import math
import sys
import time
import warnings
import weakref
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Coroutine, Generator
from contextlib import asynccontextmanager
from typing import Any, Literal

import anyio
from anyio.abc import TaskGroup

from ikisocket_core import (
    ConnectionState,
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
from ._common import SHUTDOWN_CODE, discard, logger

__all__ = ["ASGIApp", "asgi_app"]


_TEXT = MessageKind.TEXT
_BINARY = MessageKind.BINARY
_CLOSED = ConnectionState.CLOSED


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

    async def __call__(self, scope: Scope, receive: Receive, send: ASGISend) -> None:
        """Serve one ASGI connection or the lifespan.

        Args:
            scope: The ASGI scope.
            receive: The ASGI receive callable.
            send: The ASGI send callable.
        """
        kind = scope["type"]
        if kind == "websocket":
            path = _route_path(scope)
            sio = self.hub._sio
            ours = self.hub.match(path) is not None or (sio is not None and sio._serves(path))
            if self.fallback is not None and not ours:
                await self.fallback(scope, receive, send)
            else:
                await self._websocket(scope, path, receive, send)
        elif kind == "http":
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

    async def _websocket(self, scope: Scope, path: str, receive: Receive, send: ASGISend) -> None:
        message = await receive()
        if message["type"] != "websocket.connect":
            return  # the client left before the handshake
        driver = self._driver
        server = driver.install()
        driver.stamp()
        # The hub answers a refusal, a failing hook or a taken UUID with a Reject
        # (403, 409, 500...): the same answer as on sockets, decided once.
        result = server.accept(_request(scope, path), now=anyio.current_time())
        if isinstance(result, Reject):
            await _reject(scope, send, result)
            driver.drain()
            return
        conn = _Conn(driver, result, send)
        result.transport = conn
        driver.accepted()
        await conn.serve(receive)


def _encode(kind: MessageKind, data: bytes) -> Message:
    # Called once per message whatever the number of targets: ASGI servers only
    # read these dicts, so every target's send gets the same one.
    if kind is _TEXT:
        return {"type": "websocket.send", "text": data.decode("utf-8")}
    return {"type": "websocket.send", "bytes": data}


def _asyncio_task() -> bool:
    """Whether this runs in an asyncio task (not trio, whose sends are bound to their task)."""
    if "asyncio" not in sys.modules:
        return False
    try:
        return asyncio.current_task() is not None
    except RuntimeError:
        return False


class _Resume:
    """Finish in the awaiting task an ASGI ``send`` that another task started.

    :meth:`_Conn.flush` runs a receiver's ``send`` from the task that produced
    the output, up to its first suspension (uvicorn's waits for a paused
    transport, hypercorn's for its lock or the drain); this hands the rest of
    it to the receiver's own sender task, so that the producer never waits on
    one slow reader. It relays what the send yields and what the event loop
    answers, as ``await`` would. Every step runs in the connection's own
    :class:`contextvars.Context`, where the first one ran, so a wrapper that
    sets a context variable around the send resets it where it was set.
    """

    __slots__ = ("_context", "_step", "_yielded")

    def __init__(
        self, context: contextvars.Context, step: Coroutine[Any, Any, Any], yielded: Any
    ) -> None:
        self._context = context
        self._step = step
        self._yielded = yielded

    def __await__(self) -> Generator[Any, Any, None]:
        run = self._context.run
        step = self._step
        yielded = self._yielded
        while True:
            try:
                answer = yield yielded
            except GeneratorExit:
                run(step.close)
                raise
            except BaseException as exc:  # cancellation included: the send sees it
                try:
                    yielded = run(step.throw, exc)
                except StopIteration:
                    return
            else:
                try:
                    yielded = run(step.send, answer)
                except StopIteration:
                    return


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
        self._sleep_until: float | None = None
        self._service_scope: anyio.CancelScope | None = None
        self._service_tg: TaskGroup | None = None
        self._host: object = None  # the _Conn or pinned task group running the service
        self._pinned: TaskGroup | None = None
        self._moving = False

    def install(self) -> Server:
        """The engine, made on first use (so importing an app never steals a hub)."""
        server = self.server
        if server is None:
            server = self.server = Server(
                self.hub, self.config, encode_message=_encode, clock=time.perf_counter
            )
            server.stats = self.stats
            server.set_wakeup(self._woken)
        return server

    def _woken(self) -> None:
        # Called by the engine, possibly deep inside a command: only schedule the drain.
        if self._wake is not None:
            self._wake.set()

    def stamp(self) -> None:
        """Give the engine the time before an input, when ``idle_timeout`` needs it."""
        if self.hub.idle_timeout is not None:
            self.install().tick(anyio.current_time())

    def accepted(self) -> None:
        """A connection opened: a service sleeping without a deadline may now have one."""
        if self._wake is not None and self._sleep_until is None:
            self._wake.set()

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
                for conn in action.connections:
                    conn.transport.flush()
            elif isinstance(action, CloseTransport):
                action.connection.transport.close_transport()
            else:
                self._run(action)  # type: ignore[arg-type]

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

    def _start(self, tg: TaskGroup, host: object) -> None:
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
                    now = anyio.current_time()
                    deadline = server.next_deadline()
                    if deadline is not None and deadline <= now:
                        server.tick(now)
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


class _Conn:
    """One accepted ASGI WebSocket: its sender, reader and handler runner."""

    __slots__ = (
        "_direct",
        "_failure",
        "_handlers",
        "_idle",
        "_parked",
        "_pending",
        "_readable",
        "_reader_scope",
        "_rest",
        "_send_scope",
        "closing",
        "conn",
        "done",
        "driver",
        "running_handlers",
        "send",
        "tg",
        "wakeup",
    )

    def __init__(self, driver: _Driver, conn: ServerConnection, send: ASGISend) -> None:
        self.driver = driver
        self.conn = conn
        self.send = send
        self.tg: TaskGroup | None = None
        #: The engine handed over the transport to close (``CloseTransport``).
        self.closing = False
        #: The ASGI call is ending; late async listeners run on the service.
        self.done = False
        self.running_handlers = False
        self._handlers: deque[Awaitable[None]] = deque()
        self.wakeup = anyio.Event()  # output waiting, or the close
        #: Set when conn.can_read may have turned true; only while the reader waits for it.
        self._readable: anyio.Event | None = None
        self._idle = anyio.Event()  # the handler runner finished
        #: Cancelled to abandon what was taken (a write stuck on a client that stopped reading).
        self._send_scope = anyio.CancelScope()
        self._reader_scope = anyio.CancelScope()
        #: Where other tasks run ``send`` (asyncio servers whose send is a coroutine), if they may.
        self._direct: contextvars.Context | None = None
        #: The sender waits for output with nothing in flight: others may write for it.
        self._parked = False
        #: A send started by another task that must wait, and the messages after it.
        self._pending: tuple[Coroutine[Any, Any, Any], Any] | None = None
        self._rest: list[Message] = []
        self._failure: Exception | None = None

    # -- called while draining (synchronous) ---------------------------------------------

    def flush(self) -> None:
        """Output is waiting: write it from this task if the sender is idle, else wake it.

        Each ``send`` runs here until it completes or has to wait (a paused
        transport, a lock); one that waits, and the messages after it, go to
        the sender task, which finishes them before taking more. So a broadcast
        wakes no task per receiver while the receivers keep up, the messages of
        a connection keep their order, and a slow reader holds up only itself.
        """
        if not self._parked or self.closing or self.done:
            self.wakeup.set()
            return
        messages = self.conn.take()
        if not messages:
            return
        readable = self._readable
        if readable is not None:  # the reader waited for the output to drain
            readable.set()
        send = self.send
        context = self._direct
        assert context is not None  # (parked only then)
        for index, message in enumerate(messages):
            step: Coroutine[Any, Any, Any] = send(message)  # type: ignore[assignment]  # see _run
            try:
                yielded = context.run(step.send, None)
            except StopIteration:
                continue
            except Exception as exc:  # the sender reports it, as a failed send of its own
                self._failure = exc
            else:
                self._pending = (step, yielded)
                self._rest = messages[index + 1 :]
            self._parked = False
            self.wakeup.set()
            return

    def _wake_reader(self) -> None:
        readable = self._readable
        if readable is not None:
            readable.set()

    def close_transport(self) -> None:
        self.closing = True
        self._parked = False
        self.wakeup.set()
        if self.conn.close_code is None:
            self._send_scope.cancel()  # the peer ended it: nothing more to write
        else:
            # What was taken, then the close, within close_timeout; past it the backlog goes.
            deadline = anyio.current_time() + self.driver.config.close_timeout
            self._send_scope.deadline = min(self._send_scope.deadline, deadline)

    def add_handler(self, awaitable: Awaitable[None]) -> None:
        self._handlers.append(awaitable)
        if not self.running_handlers and self.tg is not None:
            self._start_handlers()

    # -- tasks ---------------------------------------------------------------------------

    async def serve(self, receive: Receive) -> None:
        """Accept, then read and write until either side closes."""
        conn = self.conn
        driver = self.driver
        try:
            async with anyio.create_task_group() as tg:
                self.tg = tg
                driver.attach(self)
                try:
                    await self._run(receive)
                finally:
                    # From here on the task group takes no new tasks (trio closes it).
                    self.done = True
                    self._send_scope.cancel()
                    driver.release(self)
        finally:
            self.done = True
            if conn.state is not _CLOSED:
                # Cancelled from outside (server shutdown): still end it in the engine.
                driver.install().connection_lost(conn)
                driver.drain()
            for awaitable in self._handlers:
                discard(awaitable)
            self._handlers.clear()
            driver.detach(self)

    async def _run(self, receive: Receive) -> None:
        conn = self.conn
        driver = self.driver
        if self._handlers:
            self._start_handlers()
        try:
            accept: Message = {"type": "websocket.accept"}
            subprotocol = conn.kws.subprotocol if conn.kws is not None else None
            if subprotocol is not None:
                accept["subprotocol"] = subprotocol
            accepting = self.send(accept)
            # A coroutine can be run up to where it waits, then handed on (see flush);
            # other awaitables (granian's) may start their work when made, so they are
            # made and awaited by the sender only.
            if _asyncio_task() and inspect.iscoroutine(accepting):
                self._direct = contextvars.copy_context()  # this call's, as its sends see it
            await accepting
        except Exception as exc:
            driver.install().connection_lost(conn, exc)
            driver.drain()
        else:
            assert self.tg is not None
            self.tg.start_soon(self._sender)
            driver.drain()
            await self._reader(receive)
        # Terminal listeners may still be running; the connection ends after them.
        while self.running_handlers:
            await self._idle.wait()

    async def _reader(self, receive: Receive) -> None:
        conn = self.conn
        driver = self.driver
        with self._reader_scope:
            while True:
                while not conn.can_read:
                    # Async listeners run, or a big message waits: read once it is taken.
                    self._readable = readable = anyio.Event()
                    try:
                        await readable.wait()
                    finally:
                        self._readable = None
                message = await receive()
                kind = message["type"]
                if kind == "websocket.receive":
                    data = message.get("bytes")
                    driver.stamp()
                    if data is not None:
                        conn.receive_message(data, _BINARY)
                    else:
                        conn.receive_message((message.get("text") or "").encode("utf-8"), _TEXT)
                    driver.drain()
                elif kind == "websocket.disconnect":
                    conn.receive_close(message.get("code", 1005), message.get("reason") or "")
                    driver.drain()
                    return

    async def _sender(self) -> None:
        conn = self.conn
        send = self.send
        with self._send_scope:
            try:
                while True:
                    pending = self._pending
                    if pending is not None:  # a send flush() started had to wait
                        self._pending = None
                        assert self._direct is not None
                        await _Resume(self._direct, *pending)
                        messages, self._rest = self._rest, []
                        if not messages:
                            continue
                    elif self._failure is not None:
                        failure, self._failure = self._failure, None
                        raise failure
                    else:
                        # Taken only once the previous batch is written: meanwhile the
                        # engine's buffer fills and its max_queue policy decides.
                        messages = conn.take()
                        if messages:
                            self._wake_reader()
                    if messages:
                        for message in messages:
                            await send(message)
                    elif self.closing or self.done:
                        break
                    else:
                        self._parked = self._direct is not None
                        try:
                            await self.wakeup.wait()
                        finally:
                            self._parked = False
                        self.wakeup = anyio.Event()
            except Exception as exc:
                logger.debug("send failed on %r: %r", conn, exc)
                self.driver.install().connection_lost(conn, exc)
                self.driver.drain()
                return
            finally:
                self._abandon()
        code = conn.close_code
        if self.closing and code is not None and not self.done:  # (done: the peer left)
            await self._send_close(code, conn.close_reason)

    def _abandon(self) -> None:
        """Drop a started send the sender will not finish (it was cancelled or failed)."""
        pending, self._pending = self._pending, None
        if pending is not None and self._direct is not None:
            self._direct.run(pending[0].close)
        self._rest = []

    async def _send_close(self, code: int, reason: str) -> None:
        conn = self.conn
        with anyio.move_on_after(self.driver.config.close_timeout):
            try:
                await self.send({"type": "websocket.close", "code": code, "reason": reason})
            except Exception as exc:
                logger.debug("sending the close failed on %r: %r", conn, exc)
        # The ASGI server runs the closing handshake: for the engine it is over.
        conn.receive_close(code, reason)
        self.driver.drain()
        self._reader_scope.cancel()

    def _start_handlers(self) -> None:
        assert self.tg is not None
        self.running_handlers = True
        self._idle = anyio.Event()
        self.tg.start_soon(self._run_handlers)

    async def _run_handlers(self) -> None:
        handlers = self._handlers
        driver = self.driver
        try:
            while handlers:
                await driver.run_one(self.conn, handlers.popleft())
                self._wake_reader()
                driver._done(self.conn)
        finally:
            self.running_handlers = False
            self._idle.set()


#: One driver per hub, shared by every app made for it (one hub, one engine).
_drivers: weakref.WeakValueDictionary[int, _Driver] = weakref.WeakValueDictionary()
