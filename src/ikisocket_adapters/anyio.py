"""Serve a hub on anyio, under its asyncio or its trio backend.

One task group per server. On Linux, the plain TCP sockets of the server are
read from one epoll set (``_trio_reads``): under trio one task waits for it,
under asyncio the loop calls back when it is readable (those sockets are
accepted raw, not wrapped in anyio's streams, whose asyncio transports would
read them and wake a task per read and per write). Each round reads each
socket with input once and feeds the engine, as asyncio's own transports do,
instead of a wake-up per connection per message. Output is written straight
to the socket by whichever task produced it (so a broadcast wakes no task per
receiver); only what the kernel does not take at once gets a sender task,
which waits for the socket to be writable and exists until the connection's
output is written. Each such connection has a task of its own that sleeps
until its reading ends, then finishes writing. Other streams (TLS, and plain
sockets where there is no epoll) have a reader task and a sender task that
writes whatever the engine buffered for the connection (``conn.take()``), one
``send`` at a time. While a send is in progress output waits in the engine's
bounded buffer, where ``max_queue`` and ``backpressure`` apply. The reader
stops reading while the engine says so (``conn.can_read``: the connection's
``async def`` listeners run, or its unwritten output is over ``max_queue``).
Async listeners run one after another per connection, in a helper task that
exists only while they run. A timer task sleeps until the engine's next
deadline. The trio adapter (:mod:`ikisocket_adapters.trio`) is this driver.

::

    import anyio
    from ikisocket_adapters.anyio import serve

    anyio.run(serve, hub, "127.0.0.1", 3000)                    # asyncio
    anyio.run(serve, hub, "127.0.0.1", 3000, backend="trio")    # trio

``serve`` runs until cancelled and then shuts down gracefully (every client is
closed with 1001). With ``await task_group.start(serve, hub, host, 0)`` it
reports the running :class:`WebSocketServer` (its ``port``, ``close()``);
``async with open_server(hub, host, 0) as server:`` does the same for a block.
From synchronous code (a test, another thread), an anyio portal runs it::

    with anyio.from_thread.start_blocking_portal("asyncio") as portal:
        finished, server = portal.start_task(serve, hub, "127.0.0.1", 0)
        ...  # clients connect to server.port
        portal.call(server.aclose)
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager, nullcontext
from functools import partial
from typing import Any, cast

import anyio
import anyio.abc
from anyio.streams.tls import TLSStream

from ikisocket_core import ConnectionState, Hub
from ikisocket_core.protocol import ServerConnection

from ._anyio_stream import _on_trio, _RawSocketStream, _Signal, _Stream
from ._common import (
    ACCEPT_BATCH,
    ACCEPT_RETRY,
    BACKLOG,
    RECEIVE_SIZE,
    Driver,
    begin_shutdown,
    logger,
    read_small,
    running_clock,
    scheme_of,
)
from ._trio_reads import EPOLL, Reads

__all__ = ["WebSocketServer", "open_server", "serve"]

_CLOSED = ConnectionState.CLOSED
#: What a stream raises when the peer or the transport went away.
_GONE = (anyio.BrokenResourceError, anyio.ClosedResourceError, anyio.EndOfStream, ssl.SSLError)


class WebSocketServer(Driver):
    """A running server for a hub, as :func:`serve` and :func:`open_server` report it.

    Attributes:
        hub: The application.
        engine: The protocol engine (its ``stats`` and ``config``).
        listeners: The listening socket listeners.
    """

    def __init__(self, hub: Hub, *, ssl_context: ssl.SSLContext | None, limits: dict[str, Any]):
        super().__init__(hub, limits)
        self.ssl_context = ssl_context
        self.scheme = scheme_of(ssl_context)
        self.listeners: list[anyio.abc.SocketListener] = []
        self.clients: set[_Stream] = set()
        self.handshaking: set[anyio.CancelScope] = set()  # TLS handshakes in progress
        self.changed = _Signal()  # a client or a handler runner came or went
        self._pump_requested = False
        self._pump_signal = _Signal()
        self._timer = anyio.CancelScope()
        self._tg: anyio.abc.TaskGroup | None = None
        #: Starts a connection's task: the task group's ``start_soon``, on trio a nursery's.
        self._start_connection: Callable[..., Any] = self._spawn
        self._scope = anyio.CancelScope(shield=True)  # outer cancellation waits for shutdown
        self._accept_scope = anyio.CancelScope()
        self._stop = anyio.Event()
        self._done = anyio.Event()
        self._stopped = anyio.Event()
        self._trio = _on_trio()  # direct reads and writes of plain sockets (_flush, Reads)
        #: On trio with epoll: the one task that reads every plain socket; on asyncio with
        #: epoll and no TLS, the loop's callback that does (the sockets are accepted raw).
        self._reads: Reads | None = None
        self._raw_accept = self._trio is None and EPOLL is not None and ssl_context is None
        # The run's clock itself (read once per round of the epoll set): trio.current_time
        # reaches it through two more calls, anyio.current_time through a backend lookup.
        self._clock = running_clock()

    @property
    def port(self) -> int:
        """The port of the first listener (useful after binding port 0)."""
        return int(self.listeners[0].extra(anyio.abc.SocketAttribute.local_port))

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

    # -- the driver's primitives ----------------------------------------------------------

    def now(self) -> float:
        """The backend's clock."""
        return self._clock()

    def _spawn(self, fn: Callable[..., Coroutine[Any, Any, None]], *args: Any) -> None:
        """Start ``fn(*args)`` in the server's task group."""
        assert self._tg is not None
        self._tg.start_soon(fn, *args)

    def _flush(self, connections: tuple[ServerConnection, ...]) -> None:
        """Write each connection's output now if its socket takes it, else to its sender.

        A direct write needs a plain socket (read by ``_trio_reads``) with no sender
        task of its own going (nothing of that connection in flight, so
        nothing is overtaken); whatever the kernel does not take at once goes
        to a sender task started for it, which waits for the socket to be
        writable and then writes what was buffered meanwhile. So a broadcast
        wakes no task per receiver while the receivers keep up. A stream
        (TLS, or where there is no epoll) has a sender task for its whole life.
        """
        for conn in connections:
            peer: _Stream = conn.transport
            sock = peer.sock
            if sock is None:
                peer.wanted.wake()
                continue
            if peer.sender is not None or peer.lost:
                continue  # the sender takes this too once the kernel took what it has
            chunks = conn.take()
            if not chunks:
                continue
            data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
            try:
                sent = sock.send(data)
            except OSError:  # would block, or the peer went away: the sender finds out
                sent = 0
            if sent < len(data):
                self._refused(peer, conn, data, sent)
            if peer.paused:  # its output was over max_queue: it may be read again
                self._readable(peer)

    def _write_taken(self, peer: _Stream, conn: ServerConnection, chunks: list[bytes]) -> None:
        """Write output the engine handed back taken, to a plain socket with no sender going.

        The reading task's path for a round with a single input (see
        ``_trio_reads``): the same write as :meth:`_flush`'s, for output that
        needed no drain.
        """
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        try:
            sent = peer.sock.send(data)  # type: ignore[union-attr]  # (plain sockets only)
        except OSError:  # would block, or the peer went away: the sender finds out
            sent = 0
        if sent < len(data):
            self._refused(peer, conn, data, sent)

    def _refused(self, peer: _Stream, conn: ServerConnection, data: bytes, sent: int) -> None:
        """The kernel took only ``sent`` bytes of ``data``: a sender task writes the rest."""
        peer.rest = memoryview(data)[sent:] if sent else data
        scope = peer.sender = anyio.CancelScope()
        self._spawn(self._raw_sender, peer, conn, scope)

    async def _within(self, awaitable: Awaitable[None], timeout: float) -> bool:
        """Await ``awaitable``, cancelling it after ``timeout`` seconds; whether it finished."""
        with anyio.move_on_after(timeout) as scope:
            await awaitable
        return not scope.cancelled_caught

    def _close_transport(self, peer: _Stream, linger: bool) -> None:
        """Let the sender finish: what is still buffered gets ``close_timeout`` to leave."""
        peer.closing = True
        peer.linger = linger
        deadline = self.now() + self.engine.config.close_timeout
        peer.send_scope.deadline = min(peer.send_scope.deadline, deadline)
        peer.wanted.wake()
        peer.signal.wake()
        self._stop_reading(peer)  # nothing more is read for the engine

    def _stop_reading(self, peer: _Stream) -> None:
        """Read ``peer`` no more: end its reading scope, take its socket out of the reads."""
        if peer.read_scope is not None:
            peer.read_scope.cancel()
        if peer.fd >= 0:
            cast(Reads, self._reads).remove(peer)

    def _arm(self, when: float) -> None:
        """Move the timer task's deadline to ``when``."""
        self._timer.deadline = when

    def _readable(self, peer: _Stream) -> None:
        """Wake ``peer``'s reader: it reads again if ``conn.can_read``."""
        if peer.paused:
            assert self._reads is not None  # (only its sockets pause)
            self._reads.resume(peer)
        else:
            peer.signal.wake()

    def _wakeup(self) -> None:
        """Have the pump task pump (from async listeners and background jobs)."""
        self._pump_requested = True
        self._pump_signal.wake()

    def _runner_done(self) -> None:
        """Tell a waiting shutdown that a handler runner finished."""
        self.changed.wake()

    # -- tasks ----------------------------------------------------------------------------

    async def _pump_loop(self) -> None:
        while True:
            if not self._pump_requested:
                await self._pump_signal.wait()
                continue
            self._pump_requested = False
            self.pump()

    async def _timer_loop(self) -> None:
        while True:
            # arm() moves this scope's deadline; a new scope starts at the one armed meanwhile.
            with anyio.CancelScope(deadline=self._armed) as self._timer:
                await anyio.sleep_forever()
            self._fire()

    async def _run(self) -> None:
        try:
            with self._scope:
                async with anyio.create_task_group() as tg:
                    self._tg = tg
                    self.handlers_allowed = True
                    tg.start_soon(self._pump_loop)
                    tg.start_soon(self._timer_loop)
                    # On trio the connections' tasks go to a nursery of trio's own: anyio's
                    # task group wraps each task in a handle and a coroutine of its own,
                    # about 1.3 KiB per connection and one more frame to resume per wake-up.
                    trio = self._trio
                    if trio is not None and EPOLL is not None:
                        self._reads = Reads(self)
                        tg.start_soon(self._reads.run, trio)
                    elif self._raw_accept:
                        self._reads = Reads(self)
                        self._reads.watch(asyncio.get_running_loop())
                    async with trio.open_nursery() if trio is not None else nullcontext() as n:
                        self._start_connection = tg.start_soon if n is None else n.start_soon
                        with self._accept_scope:
                            async with anyio.create_task_group() as accepting:
                                for listener in self.listeners:
                                    accepting.start_soon(self._accept, listener)
        finally:
            if self._reads is not None:
                self._reads.close()
            self.finish()
            self._done.set()

    async def _accept(self, listener: anyio.abc.SocketListener) -> None:
        # One awaited accept, then whatever else waits in the kernel's queue without
        # awaiting (as asyncio's own servers do): on a busy loop, an accept per trip
        # round the scheduler would let the queue fill while the clients time out.
        sock = listener.extra(anyio.abc.SocketAttribute.raw_socket)
        if self._raw_accept:
            await self._accept_raw(sock)
            return
        while True:
            try:
                stream = await listener.accept()
            except anyio.ClosedResourceError:
                return
            except (OSError, anyio.BrokenResourceError) as exc:
                # (anyio's trio backend reports an accept's OSError as BrokenResourceError.)
                cause = exc if isinstance(exc, OSError) else exc.__cause__
                if not isinstance(cause, OSError) or cause.errno not in ACCEPT_RETRY:
                    raise
                logger.error("accept failed (%s); retrying in 0.1 s", cause)
                await anyio.sleep(0.1)
                continue
            self._start_connection(self._connection, stream)
            for _ in range(ACCEPT_BATCH):
                try:
                    accepted, _ = sock.accept()
                except OSError:  # nothing more waits (or a failure the next accept reports)
                    break
                self._start_connection(self._accepted, accepted)

    async def _accept_raw(self, sock: socket.socket) -> None:
        """Accept plain sockets (asyncio backend): every one the kernel has, when it has one.

        The listener's own ``accept`` would wrap each in an asyncio transport,
        which reads it; the server's reading callback reads these instead.
        """
        while True:
            await anyio.wait_readable(sock)
            for _ in range(ACCEPT_BATCH):
                try:
                    accepted, _ = sock.accept()
                except BlockingIOError:
                    break  # nothing more waits
                except OSError as exc:
                    if exc.errno not in ACCEPT_RETRY:
                        logger.debug("accept failed: %s", exc)  # (that client is gone)
                        continue
                    logger.error("accept failed (%s); retrying in 0.1 s", exc)
                    await anyio.sleep(0.1)
                    break
                self._start_connection(self._accepted, accepted)

    async def _accepted(self, sock: socket.socket) -> None:
        """A socket accepted without awaiting: wrap it as a stream and serve it."""
        try:
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            stream: anyio.abc.SocketStream = (
                _RawSocketStream(sock)
                if self._raw_accept
                else await anyio.abc.SocketStream.from_socket(sock)
            )
        except (OSError, ValueError):  # (from_socket: ValueError for a socket no longer connected)
            sock.close()  # the peer is gone already
            return
        await self._connection(stream)

    async def _connection(self, raw: anyio.abc.SocketStream) -> None:
        # On the asyncio backend, the stream reads through asyncio's socket transport.
        read_small(getattr(raw, "_transport", None))
        client = _Stream(raw)
        self.clients.add(client)
        self.changed.wake()
        engine = self.engine
        try:
            if self.ssl_context is not None:
                # Bounded by handshake_timeout, and cancelled by a shutdown: a handshake
                # in progress is not a client yet and must not hold the shutdown.
                with anyio.move_on_after(engine.config.handshake_timeout) as handshake:
                    self.handshaking.add(handshake)
                    try:
                        # Not standard_compatible: the WebSocket close handshake already says
                        # the stream ended on purpose, and clients often skip close_notify.
                        client.stream = await TLSStream.wrap(
                            raw,
                            server_side=True,
                            ssl_context=self.ssl_context,
                            standard_compatible=False,
                        )
                    except (anyio.BrokenResourceError, anyio.EndOfStream, OSError) as exc:
                        logger.debug("TLS handshake failed: %s", exc.__cause__ or exc)
                    finally:
                        self.handshaking.discard(handshake)
                if client.stream is raw:
                    return
            elif self._reads is not None:
                client.sock = raw.extra(anyio.abc.SocketAttribute.raw_socket)
            # (None when the peer is gone already: a reset right after connecting.)
            peer = raw.extra(anyio.abc.SocketAttribute.remote_address, None)
            conn = engine.connect(
                now=self.now(),
                client=(str(peer[0]), int(peer[1])) if isinstance(peer, tuple) else None,
                scheme=self.scheme,
                transport=client,
            )
            client.conn = conn
            self.pump()  # arms the handshake deadline
            if client.sock is not None:
                await self._serve_raw(client, conn)
            else:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(self._reader, client, conn)
                    await self._sender(client, conn)
                    tg.cancel_scope.cancel()  # the reader has nothing more to do
            # Not when the last writes timed out: nothing is left worth the wait.
            if client.linger and not client.lost and not client.send_scope.cancelled_caught:
                await self._linger(client.stream)
        finally:
            try:
                if client.conn is not None:
                    engine.connection_lost(client.conn)
                    self.pump()
                with anyio.move_on_after(engine.config.close_timeout):
                    await client.stream.aclose()
            finally:
                self.clients.discard(client)
                self.changed.wake()
                # It and the engine's connection (its transport) refer to each other: let go
                # now, not when a cyclic collection frees both (a running listener holds its own).
                client.conn = None

    async def _reader(self, client: _Stream, conn: ServerConnection) -> None:
        engine, receive, now = self.engine, client.stream.receive, self.now
        try:
            while conn.state is not _CLOSED:
                if not conn.can_read:  # async listeners run, or too much output waits
                    await client.signal.wait()
                    continue
                data = await receive(RECEIVE_SIZE)
                engine.receive_data(conn, data, now())
                self.pump()
        except anyio.EndOfStream:
            engine.receive_eof(conn)
            self.pump()
        except _GONE as exc:
            self._lost(client, conn, exc)

    async def _raw_sender(
        self, client: _Stream, conn: ServerConnection, scope: anyio.CancelScope
    ) -> None:
        """Write what the kernel refused (``client.rest``), then whatever was buffered meanwhile."""
        try:
            with scope:
                await self._raw_send(client, conn)
        finally:
            client.sender = None
            client.wanted.wake()  # the connection's task, if it waits for the last writes

    async def _raw_send(self, client: _Stream, conn: ServerConnection) -> None:
        """Write ``client.rest`` and then the buffered output, waiting for the socket as needed."""
        trio = self._trio
        wait_writable = anyio.wait_writable if trio is None else trio.lowlevel.wait_writable
        closed = anyio.ClosedResourceError if trio is None else trio.ClosedResourceError
        sock = client.sock
        assert sock is not None
        try:
            while True:
                data: bytes | memoryview | None = client.rest
                if data is not None:
                    client.rest = None
                elif conn.buffered:
                    chunks = conn.take()
                    if client.paused:  # its output was over max_queue: it may be read again
                        self._readable(client)
                    data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
                else:
                    return
                while data:
                    await wait_writable(sock)
                    try:
                        sent = sock.send(data)
                    except BlockingIOError:
                        continue
                    data = memoryview(data)[sent:] if sent < len(data) else None
        except (OSError, closed) as exc:
            self._lost(client, conn, exc)

    async def _serve_raw(self, client: _Stream, conn: ServerConnection) -> None:
        """Serve a plain socket: the server's epoll set reads it, then this writes.

        The socket is read by :class:`~ikisocket_adapters._trio_reads.Reads`
        until the engine closes the transport, the stream ends or fails
        (each cancels ``read_scope``); output meanwhile is written by whichever
        task produced it (:meth:`_flush`), with a sender task only while the
        kernel refuses some. Then this task finishes writing. One task per
        idle connection, asleep, instead of a reader, a sender and their task
        group: less memory, and no wake-up of its own per message.
        """
        reads, sock = self._reads, client.sock
        assert reads is not None
        assert sock is not None
        scope = client.read_scope = anyio.CancelScope()
        try:
            with scope:
                if not client.closing:  # (else the engine ended it already: a refusal)
                    reads.add(client, sock, conn)
                    await (
                        anyio.sleep_forever() if self._trio is None else self._trio.sleep_forever()
                    )
        finally:
            reads.remove(client)  # (before the stream, and so the socket, is closed)
        await self._raw_finish(client, conn)

    async def _raw_finish(self, client: _Stream, conn: ServerConnection) -> None:
        """Once the engine closed the transport: wait for the sender, write what is left.

        Bounded by ``close_timeout`` from the close (``send_scope``'s deadline).
        """
        with client.send_scope:
            while not client.closing or client.sender is not None:
                await client.wanted.wait()
            if not client.lost:
                await self._raw_send(client, conn)
        if client.sender is not None:  # the last writes timed out
            client.sender.cancel()

    async def _sender(self, client: _Stream, conn: ServerConnection) -> None:
        send, signal, wanted = client.stream.send, client.signal, client.wanted
        with client.send_scope:
            try:
                while True:
                    data: bytes | memoryview
                    if client.rest is not None:
                        data, client.rest = client.rest, None
                    elif conn.buffered:
                        chunks = conn.take()
                        signal.wake()  # the reader, if it waits for the output to drain
                        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
                    elif client.closing:
                        return
                    else:
                        await wanted.wait()
                        continue
                    client.sending = True
                    try:
                        await send(data)  # type: ignore[arg-type]  # a memoryview is sent as is
                    finally:
                        client.sending = False
            except _GONE as exc:
                self._lost(client, conn, exc)

    async def _linger(self, stream: anyio.abc.ByteStream) -> None:
        """Half-close ``stream`` and discard its input until the client closes too.

        Closing a socket with unread input makes the kernel reset the
        connection, which destroys what the client had not read yet: the close
        frame or the HTTP status that says why it ends. So the server sends
        FIN after its last bytes and reads until the client's end of the
        stream, at most ``close_timeout``. A TLS stream cannot half-close, and
        lingering without a FIN would keep a client waiting for the server to
        close first (as RFC 6455 has it): it is closed at once, as before.
        """
        with anyio.move_on_after(self.engine.config.close_timeout):
            try:
                await stream.send_eof()
                while True:
                    await stream.receive(RECEIVE_SIZE)
            except (*_GONE, OSError, NotImplementedError):
                pass

    def _lost(self, client: _Stream, conn: ServerConnection, error: BaseException) -> None:
        """The stream of ``client`` failed: end its connection and let its sender finish."""
        self.engine.connection_lost(conn, error)
        self.pump()
        client.lost = True
        client.closing = True
        client.signal.wake()
        client.wanted.wake()
        self._stop_reading(client)
        if client.sender is not None:
            client.sender.cancel()

    # -- shutdown -------------------------------------------------------------------------

    async def _shutdown(self) -> None:
        """Stop accepting, close every client with 1001, wait for them, then cancel the rest."""
        self._accept_scope.cancel()
        for listener in self.listeners:
            await listener.aclose()
        for handshake in tuple(self.handshaking):
            handshake.cancel()
        begin_shutdown(self.engine)
        self.pump()
        with anyio.move_on_after(self.engine.config.close_timeout):
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
    backlog: int = BACKLOG,
    reuse_port: bool = False,
    task_status: anyio.abc.TaskStatus[WebSocketServer] = anyio.TASK_STATUS_IGNORED,
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
        backlog: The listen backlog.
        reuse_port: Set ``SO_REUSEPORT`` (several processes on one port).
        task_status: Given by ``task_group.start``; reports the :class:`WebSocketServer`.
        **limits: :class:`~ikisocket_core.protocol.ServerConfig` fields
            (``max_message_size``, ``max_queue``, ``ping_interval`` ...).
    """
    server = WebSocketServer(hub, ssl_context=ssl_context, limits=limits)
    try:
        multi = await anyio.create_tcp_listener(
            local_host=host, local_port=port, backlog=backlog, reuse_port=reuse_port
        )
        # create_tcp_listener makes SocketListeners; the type says only Listener.
        server.listeners = [cast(anyio.abc.SocketListener, one) for one in multi.listeners]
        logger.info("listening on %s://%s:%d (anyio)", server.scheme, host or "*", server.port)
        async with anyio.create_task_group() as tg:
            tg.start_soon(server._run)
            try:
                task_status.started(server)
                await server._stop.wait()
            finally:
                with anyio.CancelScope(shield=True):
                    await server._shutdown()
    finally:
        with anyio.CancelScope(shield=True):
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
    backlog: int = BACKLOG,
    reuse_port: bool = False,
    **limits: Any,
) -> AsyncIterator[WebSocketServer]:
    """Serve ``hub`` for the duration of an ``async with`` block.

    ::

        async with open_server(hub, port=0) as server:
            print(server.port)

    Leaving the block shuts the server down gracefully (as :func:`serve`).

    It takes the arguments of :func:`serve` (but ``task_status``).

    Yields:
        The running server.
    """
    start = partial(
        serve, hub, host, port, ssl_context=ssl_context, backlog=backlog, reuse_port=reuse_port
    )
    async with anyio.create_task_group() as tg:
        server: WebSocketServer = await tg.start(partial(start, **limits))
        try:
            yield server
        finally:
            server.close()
