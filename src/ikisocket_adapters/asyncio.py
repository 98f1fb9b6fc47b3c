"""Serve a hub on asyncio (and uvloop): an ``asyncio.Protocol`` pumping the protocol engine.

Each connection is a :class:`asyncio.Protocol` whose callbacks feed the
engine and then perform what it asks: writes go straight to the transport,
flow control uses ``pause_writing``/``resume_writing`` (output then waits in
the engine's bounded buffer) and ``pause_reading`` while a connection's
``async def`` listeners run. No task is created per message; one task per
connection exists only while its async listeners run.

::

    import asyncio
    from ikisocket_adapters.asyncio import serve

    asyncio.run(serve(hub, "127.0.0.1", 3000))
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from collections.abc import Awaitable
from types import TracebackType
from typing import Any, cast

from ikisocket_core import Hub
from ikisocket_core.protocol import (
    CloseTransport,
    Connection,
    Flush,
    RunHandler,
    Server,
)

from ._common import TICK_RESOLUTION, begin_shutdown, logger, make_server, scheme_of

__all__ = ["WebSocketServer", "serve", "start_server"]


class _Protocol(asyncio.Protocol):
    """One TCP (or TLS) connection."""

    __slots__ = (
        "conn",
        "handlers",
        "node",
        "paused",
        "receive",
        "transport",
        "write",
    )

    def __init__(self, node: WebSocketServer) -> None:
        self.node = node
        self.transport: asyncio.Transport | None = None
        self.conn: Connection | None = None
        self.paused = False
        self.handlers: deque[Awaitable[None]] | None = None
        # Bound once per connection: the per-message path makes no attribute lookups.
        self.receive = node.engine.receive_data
        self.write: Any = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, only look-alikes.
        self.transport = cast("asyncio.Transport", transport)
        self.write = self.transport.write
        node = self.node
        peer = transport.get_extra_info("peername")
        client = (str(peer[0]), int(peer[1])) if isinstance(peer, tuple) else None
        self.conn = node.engine.connect(
            now=node.loop.time(), client=client, scheme=node.scheme, transport=self
        )
        node.protocols.add(self)
        node.arm_timer()

    def data_received(self, data: bytes) -> None:
        conn = self.conn
        if conn is not None:
            self.receive(conn, data)
            self.node.pump()

    def eof_received(self) -> bool:
        if self.conn is not None:
            self.node.engine.receive_eof(self.conn)
            self.node.pump()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        node = self.node
        node.protocols.discard(self)
        if self.conn is not None:
            node.engine.connection_lost(self.conn, exc)
            node.pump()
        if not node.protocols:
            node.idle.set()

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        conn = self.conn
        if conn is not None and self.write is not None and conn.buffered:
            self.write(b"".join(conn.take()))


class WebSocketServer:
    """A running asyncio server for a hub; make it with :func:`start_server`.

    Use it as an async context manager, or call :meth:`close` and
    :meth:`wait_closed`.
    """

    def __init__(self, hub: Hub, *, ssl_context: ssl.SSLContext | None, limits: dict[str, Any]):
        self.hub = hub
        self.engine: Server = make_server(hub, limits)
        self.loop = asyncio.get_running_loop()
        self.scheme = scheme_of(ssl_context)
        self.ssl_context = ssl_context
        self.protocols: set[_Protocol] = set()
        self.idle = asyncio.Event()
        self.idle.set()
        self._listener: asyncio.Server | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._pump_scheduled = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = False
        self.engine.set_wakeup(self._wakeup)

    @property
    def sockets(self) -> tuple[Any, ...]:
        """The listening sockets."""
        return tuple(self._listener.sockets) if self._listener is not None else ()

    @property
    def port(self) -> int:
        """The port of the first listening socket (useful after binding port 0)."""
        return int(self.sockets[0].getsockname()[1])

    async def _listen(self, host: str | None, port: int, **kwargs: Any) -> None:
        def factory() -> _Protocol:
            self.idle.clear()
            return _Protocol(self)

        self._listener = await self.loop.create_server(
            factory, host, port, ssl=self.ssl_context, **kwargs
        )
        logger.info("listening on %s://%s:%d", self.scheme, host or "*", self.port)

    # -- pumping --------------------------------------------------------------------------

    def pump(self) -> None:
        """Perform everything the engine has queued."""
        for action in self.engine.drain_actions():
            if action.__class__ is Flush:
                for conn in action.connections:
                    proto: _Protocol = conn.transport
                    if proto.paused or proto.write is None:
                        continue  # taken on resume_writing; bounded by max_queue meanwhile
                    chunks = conn.take()
                    # Never writelines(): from Python 3.12 the selector transport's
                    # writelines() skips flow control (no pause_writing), which would
                    # leave a slow reader's output unbounded in the transport.
                    if len(chunks) == 1:
                        proto.write(chunks[0])
                    elif chunks:
                        proto.write(b"".join(chunks))
            elif isinstance(action, CloseTransport):
                proto = action.connection.transport
                if proto.transport is not None:
                    proto.transport.close()  # flushes what was written first
            elif isinstance(action, RunHandler):
                self._run(action)

    def _wakeup(self) -> None:
        if not self._pump_scheduled:
            self._pump_scheduled = True
            self.loop.call_soon(self._scheduled_pump)

    def _scheduled_pump(self) -> None:
        self._pump_scheduled = False
        self.pump()

    def _run(self, action: RunHandler) -> None:
        conn = action.connection
        if conn is None:
            self._spawn(self._run_free(action.awaitable))
            return
        proto: _Protocol = conn.transport
        if proto.handlers is not None:
            proto.handlers.append(action.awaitable)
            return
        proto.handlers = deque([action.awaitable])
        if proto.transport is not None and not proto.transport.is_closing():
            proto.transport.pause_reading()
        self._spawn(self._run_handlers(proto))

    async def _run_handlers(self, proto: _Protocol) -> None:
        # One connection's async listeners run one after another, in order.
        conn = proto.conn
        assert conn is not None
        assert proto.handlers is not None
        try:
            while proto.handlers:
                awaitable = proto.handlers.popleft()
                try:
                    await awaitable
                finally:
                    self.engine.handler_done(conn)
                    self.pump()
        except asyncio.CancelledError:
            for pending in proto.handlers:  # shutting down: never started
                _discard(pending)
            raise
        proto.handlers = None
        transport = proto.transport
        if transport is not None and not transport.is_closing() and not conn.blocked:
            transport.resume_reading()

    async def _run_free(self, awaitable: Awaitable[None]) -> None:
        try:
            await awaitable
        finally:
            self.engine.handler_done(None)
            self.pump()

    def _spawn(self, coro: Any) -> None:
        task: asyncio.Task[None] = self.loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- timers ---------------------------------------------------------------------------

    def arm_timer(self) -> None:
        """Keep a periodic tick running while there are connections."""
        if self._timer is None and self.protocols:
            self._timer = self.loop.call_later(TICK_RESOLUTION, self._tick)

    def _tick(self) -> None:
        self._timer = None
        self.engine.tick(self.loop.time())
        self.pump()
        self.arm_timer()

    # -- shutdown -------------------------------------------------------------------------

    def close(self) -> None:
        """Stop accepting, and close every client with 1001 (``close`` events fire)."""
        if self._closing:
            return
        self._closing = True
        if self._listener is not None:
            self._listener.close()
        begin_shutdown(self.engine)
        self.pump()
        self.arm_timer()

    async def wait_closed(self, timeout: float | None = None) -> None:
        """Wait until every connection is gone (at most ``timeout``, default ``close_timeout``).

        Connections that have not finished by then are aborted.

        Args:
            timeout: Seconds to wait before aborting the rest.
        """
        if timeout is None:
            timeout = self.engine.config.close_timeout
        try:
            await asyncio.wait_for(self.idle.wait(), timeout)
        except asyncio.TimeoutError:
            for proto in tuple(self.protocols):
                if proto.transport is not None:
                    proto.transport.abort()
            await asyncio.sleep(0)
        if self._listener is not None:
            await self._listener.wait_closed()
        for task in tuple(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.engine.set_wakeup(None)
        self.hub.resume_accepting()  # the hub may be served again

    async def __aenter__(self) -> WebSocketServer:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
        await self.wait_closed()


def _discard(awaitable: Awaitable[None]) -> None:
    close = getattr(awaitable, "close", None)
    if close is not None:
        close()


async def start_server(
    hub: Hub,
    host: str | None = "127.0.0.1",
    port: int = 8000,
    *,
    ssl_context: ssl.SSLContext | None = None,
    backlog: int = 1024,
    reuse_port: bool | None = None,
    **limits: Any,
) -> WebSocketServer:
    """Start serving ``hub`` and return at once.

    Args:
        hub: The application.
        host: The interface to bind (``None`` for all).
        port: The port (0 picks a free one; see :attr:`WebSocketServer.port`).
        ssl_context: Serve ``wss://`` with this TLS context.
        backlog: The listen backlog.
        reuse_port: Set ``SO_REUSEPORT`` (several processes on one port).
        **limits: :class:`~ikisocket_core.protocol.ServerConfig` fields
            (``max_message_size``, ``max_queue``, ``ping_interval`` ...).

    Returns:
        The running server.
    """
    server = WebSocketServer(hub, ssl_context=ssl_context, limits=limits)
    await server._listen(host, port, backlog=backlog, reuse_port=reuse_port)
    return server


async def serve(
    hub: Hub,
    host: str | None = "127.0.0.1",
    port: int = 8000,
    *,
    ssl_context: ssl.SSLContext | None = None,
    **limits: Any,
) -> None:
    """Serve ``hub`` until cancelled, then shut down gracefully.

    On cancellation every client is closed with 1001 and given up to
    ``close_timeout`` to finish, then the cancellation propagates.

    Args:
        hub: The application.
        host: The interface to bind.
        port: The port.
        ssl_context: Serve ``wss://`` with this TLS context.
        **limits: :class:`~ikisocket_core.protocol.ServerConfig` fields.
    """
    server = await start_server(hub, host, port, ssl_context=ssl_context, **limits)
    try:
        await asyncio.Event().wait()
    finally:
        server.close()
        await asyncio.shield(server.wait_closed())
