"""Serve a hub on trio: one nursery per server, a reader and a sender task per connection.

Each connection has a reader task that feeds the engine and a sender task that
writes whatever the engine buffered for it (``conn.take()``), one
``send_all`` at a time: while a send is in progress output waits in the
engine's bounded buffer, where ``max_queue`` and ``backpressure`` apply.
``async def`` listeners run one after another per connection, in a helper task
that exists only while they run; the reader stops reading meanwhile.

::

    import trio
    from ikisocket_adapters.trio import serve

    trio.run(serve, hub, "127.0.0.1", 3000)

``serve`` runs until cancelled and then shuts down gracefully (every client is
closed with 1001). With ``await nursery.start(serve, hub, host, 0)`` it
reports the running :class:`WebSocketServer` (its ``port``, ``close()``).
From synchronous code (a test, another thread), an anyio portal runs it::

    with anyio.from_thread.start_blocking_portal("trio") as portal:
        finished, server = portal.start_task(serve, hub, "127.0.0.1", 0)
        ...  # clients connect to server.port
        portal.call(server.aclose)
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import trio

from ikisocket_core import ConnectionState, Hub
from ikisocket_core.protocol import Connection

from ._common import (
    ACCEPT_RETRY,
    RECEIVE_SIZE,
    StreamClient,
    StreamDriver,
    begin_shutdown,
    logger,
    scheme_of,
)

__all__ = ["WebSocketServer", "open_server", "serve"]

_CLOSED = ConnectionState.CLOSED


class _Signal:
    """A :class:`~ikisocket_adapters._common.Signal` on a trio ParkingLot."""

    __slots__ = ("_lot",)

    def __init__(self) -> None:
        self._lot = trio.lowlevel.ParkingLot()

    def wake(self) -> None:
        self._lot.unpark_all()

    async def wait(self) -> None:
        await self._lot.park()


class WebSocketServer(StreamDriver):
    """A running trio server for a hub, as :func:`serve` reports it.

    Attributes:
        hub: The application.
        engine: The protocol engine (its ``stats`` and ``config``).
        listeners: The listening trio socket listeners.
    """

    def __init__(self, hub: Hub, *, ssl_context: ssl.SSLContext | None, limits: dict[str, Any]):
        super().__init__(hub, limits, _Signal)
        self.ssl_context = ssl_context
        self.scheme = scheme_of(ssl_context)
        self.listeners: list[trio.SocketListener] = []
        self._nursery: trio.Nursery | None = None
        self._scope = trio.CancelScope(shield=True)  # outer cancellation waits for shutdown
        self._accept_scope = trio.CancelScope()
        self._stop = trio.Event()
        self._done = trio.Event()
        self._stopped = trio.Event()

    @property
    def port(self) -> int:
        """The port of the first listener (useful after binding port 0)."""
        return int(self.listeners[0].socket.getsockname()[1])

    def close(self) -> None:
        """Stop serving: :func:`serve` shuts down gracefully and returns."""
        self._stop.set()

    async def wait_closed(self) -> None:
        """Wait until :func:`serve` has finished shutting down."""
        await self._stopped.wait()

    async def aclose(self) -> None:
        """Close the server and wait until every connection is gone."""
        self.close()
        await self.wait_closed()

    def spawn(self, fn: Callable[..., Coroutine[Any, Any, None]], *args: Any) -> None:
        """Start ``fn(*args)`` in the server's nursery."""
        assert self._nursery is not None
        self._nursery.start_soon(fn, *args)

    def now(self) -> float:
        """Trio's clock."""
        return trio.current_time()

    # -- tasks ----------------------------------------------------------------------------

    async def _run(self) -> None:
        try:
            with self._scope:
                async with trio.open_nursery() as nursery:
                    self._nursery = nursery
                    self.handlers_allowed = True
                    nursery.start_soon(self.pump_loop)
                    nursery.start_soon(self.tick_loop, trio.sleep)
                    with self._accept_scope:
                        async with trio.open_nursery() as accepting:
                            for listener in self.listeners:
                                accepting.start_soon(self._accept, listener)
        finally:
            self.finish()
            self._done.set()

    async def _accept(self, listener: trio.SocketListener) -> None:
        while True:
            try:
                stream = await listener.accept()
            except trio.ClosedResourceError:
                return
            except OSError as exc:
                if exc.errno not in ACCEPT_RETRY:
                    raise
                logger.error("accept failed (%s); retrying in 0.1 s", exc)
                await trio.sleep(0.1)
                continue
            self.spawn(self._connection, stream)

    async def _connection(self, raw: trio.SocketStream) -> None:
        client = StreamClient(raw, _Signal(), trio.CancelScope())
        self.clients.add(client)
        self.changed.wake()
        engine = self.engine
        try:
            if self.ssl_context is not None:
                # https_compatible: the WebSocket close handshake already says the
                # stream ended on purpose, and clients often skip close_notify.
                tls = trio.SSLStream(raw, self.ssl_context, server_side=True, https_compatible=True)
                client.stream = tls
                with trio.move_on_after(engine.config.handshake_timeout) as handshake:
                    try:
                        await tls.do_handshake()
                    except trio.BrokenResourceError as exc:
                        logger.debug("TLS handshake failed: %s", exc.__cause__ or exc)
                        return
                if handshake.cancelled_caught:
                    return
            peer = raw.socket.getpeername()
            conn = engine.connect(
                now=trio.current_time(),
                client=(str(peer[0]), int(peer[1])) if isinstance(peer, tuple) else None,
                scheme=self.scheme,
                transport=client,
            )
            client.conn = conn
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._reader, client, conn)
                await self._sender(client, conn)
                nursery.cancel_scope.cancel()  # the reader has nothing more to do
        finally:
            try:
                if client.conn is not None:
                    engine.connection_lost(client.conn)
                    self.pump()
                with trio.move_on_after(engine.config.close_timeout):
                    await client.stream.aclose()
            finally:
                self.clients.discard(client)
                self.changed.wake()

    async def _reader(self, client: StreamClient, conn: Connection) -> None:
        engine, stream = self.engine, client.stream
        try:
            while conn.state is not _CLOSED:
                if conn.blocked:  # async listeners of this connection are running
                    await client.signal.wait()
                    continue
                data = await stream.receive_some(RECEIVE_SIZE)
                if not data:
                    engine.receive_eof(conn)
                    self.pump()
                    return
                engine.receive_data(conn, bytes(data))
                self.pump()
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            self.lost(client, conn, exc)

    async def _sender(self, client: StreamClient, conn: Connection) -> None:
        stream = client.stream
        with client.send_scope:
            try:
                while True:
                    if conn.buffered:
                        chunks = conn.take()
                        await stream.send_all(chunks[0] if len(chunks) == 1 else b"".join(chunks))
                    elif client.closing:
                        return
                    else:
                        await client.signal.wait()
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                self.lost(client, conn, exc)

    # -- shutdown -------------------------------------------------------------------------

    async def _shutdown(self) -> None:
        """Stop accepting, close every client with 1001, wait for them, then cancel the rest."""
        self._accept_scope.cancel()
        for listener in self.listeners:
            await listener.aclose()
        begin_shutdown(self.engine)
        self.pump()
        with trio.move_on_after(self.engine.config.close_timeout):
            while self.clients or self.runners:
                await self.changed.wait()
        self._scope.cancel()
        await self._done.wait()


async def serve(
    hub: Hub,
    host: str | None = "127.0.0.1",
    port: int = 8000,
    *,
    ssl_context: ssl.SSLContext | None = None,
    backlog: int | None = None,
    task_status: trio.TaskStatus[WebSocketServer] = trio.TASK_STATUS_IGNORED,
    **limits: Any,
) -> None:
    """Serve ``hub`` until cancelled or closed, then shut down gracefully.

    On cancellation (or :meth:`WebSocketServer.close`) the server stops
    accepting, closes every client with 1001 and gives them up to
    ``close_timeout`` to finish; what is left is then cancelled.

    Args:
        hub: The application.
        host: The interface to bind (``None`` for all).
        port: The port (0 picks a free one; see :attr:`WebSocketServer.port`).
        ssl_context: Serve ``wss://`` with this TLS context.
        backlog: The listen backlog (trio's default when ``None``).
        task_status: Given by ``nursery.start``; reports the :class:`WebSocketServer`.
        **limits: :class:`~ikisocket_core.protocol.ServerConfig` fields
            (``max_message_size``, ``max_queue``, ``ping_interval`` ...).
    """
    server = WebSocketServer(hub, ssl_context=ssl_context, limits=limits)
    try:
        server.listeners = await trio.open_tcp_listeners(port, host=host, backlog=backlog)
        logger.info("listening on %s://%s:%d (trio)", server.scheme, host or "*", server.port)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server._run)
            try:
                task_status.started(server)
                await server._stop.wait()
            finally:
                with trio.CancelScope(shield=True):
                    await server._shutdown()
    finally:
        with trio.CancelScope(shield=True):
            for listener in server.listeners:
                await listener.aclose()
        server.finish()
        server._stopped.set()


@asynccontextmanager
async def open_server(
    hub: Hub,
    host: str | None = "127.0.0.1",
    port: int = 8000,
    *,
    ssl_context: ssl.SSLContext | None = None,
    backlog: int | None = None,
    **limits: Any,
) -> AsyncIterator[WebSocketServer]:
    """Serve ``hub`` for the duration of an ``async with`` block.

    ::

        async with open_server(hub, port=0) as server:
            print(server.port)

    Leaving the block shuts the server down gracefully (as :func:`serve`).

    Args:
        hub: The application.
        host: The interface to bind.
        port: The port (0 picks a free one).
        ssl_context: Serve ``wss://`` with this TLS context.
        backlog: The listen backlog.
        **limits: :class:`~ikisocket_core.protocol.ServerConfig` fields.

    Yields:
        The running server.
    """
    async with trio.open_nursery() as nursery:
        server: WebSocketServer = await nursery.start(
            partial(serve, hub, host, port, ssl_context=ssl_context, backlog=backlog, **limits)
        )
        try:
            yield server
        finally:
            server.close()
