"""Serve a hub on asyncio (and uvloop): an ``asyncio.Protocol`` pumping the protocol engine.

Each connection is a :class:`asyncio.Protocol` whose callbacks feed the
engine and then perform what it asks: writes go straight to the transport
(a read's own reply at the end of the loop's turn, see below),
flow control uses ``pause_writing``/``resume_writing`` (output then waits in
the engine's bounded buffer), and ``pause_reading`` whenever the engine says
the connection must not be read (``conn.can_read``: its ``async def``
listeners run, or its unwritten output is over ``max_queue``). No task is
created per message; one task per connection exists only while its async
listeners run. One timer, armed with ``loop.call_at``, fires at the engine's
next deadline.

A connection whose input keeps coming takes turns with the others: after
:data:`TURN_BYTES` it stops being read until the loop's next iteration.
uvloop (libuv) would otherwise read one ready socket up to 32 times of 250 kB
in a row, and a client flooding the server would delay everyone else's
answers by seconds. On the default loop, the socket transport reads 64 KiB at a
time (256 KiB while reads come back full, a large message arriving): its own
256 KiB read buffer is one ``mmap``, ``mremap`` and ``munmap`` per read for as long
as glibc's threshold has not risen (``ikisocket_adapters._common.read_small``).

A reply to the message just read (an echo, an ack: when it is all the engine
has to do, ``Server.output_only``) waits in the engine until the loop's current
turn has read every ready connection; one pump then writes the turn's replies
(at most :data:`HELD_BYTES` of a connection's output waits; any other pump
writes them first, and the engine keeps each connection's output in order).
The same number of writes, made
together instead of one between every two reads: a client process that gets its
replies in a burst is woken once for them, not once per reply, and on loopback
that wake-up is the writing server's CPU time (about a third of an acked echo's
system time with 64 clients; see docs/explanation/performance.md). Redis writes
its replies before it sleeps for the same reason. Holding costs a callback and
one more turn of the loop, which buys nothing when each turn has one reply (a
lone client in lockstep): after such a turn the next :data:`LONE_REPLIES`
replies are written at once, then one is held again to see whether others come
with it.

When the engine ends a plain TCP connection while the client may still be
sending (``CloseTransport.linger``: a protocol error, an overflow, an HTTP
error), the server half-closes it (FIN after its last bytes, the close frame or
the error response) and goes on reading, discarding, until the client closes
too or ``close_timeout`` passes.
Closing a socket with unread input makes the kernel reset the connection, and
a reset destroys what the client had not read yet: a client that was still
sending (a flood, an oversized message, a request head over the limit) would
lose the very close frame or HTTP status that says why.

::

    import asyncio
    from ikisocket_adapters.asyncio import serve

    asyncio.run(serve(hub, "127.0.0.1", 3000))

    async with open_server(hub, "127.0.0.1", 0) as server:   # or start_server()
        print(server.port)
"""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
import sys
from asyncio.selector_events import BaseSelectorEventLoop
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from types import TracebackType
from typing import Any, cast

from ikisocket_core import Hub
from ikisocket_core.protocol import ServerConnection

from . import _common
from ._asyncio_tls import start_tls
from ._common import (
    BACKLOG,
    BIG_RECEIVE_SIZE,
    RECEIVE_SIZE,
    Driver,
    HeldReplies,
    Peer,
    begin_shutdown,
    logger,
    read_small,
    scheme_of,
)

__all__ = [
    "ACCEPTS_PER_WAKE",
    "HELD_BYTES",
    "LONE_REPLIES",
    "TURN_BYTES",
    "WebSocketServer",
    "open_server",
    "serve",
    "start_server",
]

#: How many accepts a server on asyncio's own (selector) loop tries per wake-up (asyncio's
#: default). That loop takes a server's ``backlog`` as this count, and on Python before
#: gh-151615 (3.11 among them) it reports an accept out of file descriptors, and schedules a
#: retry, once per accept tried: with the backlog (SOMAXCONN, 4,096 here), thousands of log
#: records a second for as long as it lasts. So the server is made with this many, and its
#: sockets listen again with the backlog asked for, which only the kernel's queue uses.
ACCEPTS_PER_WAKE = 100

#: Bytes a connection's input may feed the engine before the loop serves the
#: other connections (the default loop's one read, 256 KiB).
TURN_BYTES = 256 * 1024

#: Bytes of replies the server holds for the end of the loop's turn (module
#: docstring): once the held replies reach it, they are written at once. The ASGI
#: adapter's bound too.
HELD_BYTES: int = _common.HELD_BYTES

#: Replies written at once after a turn that held only one (module docstring); the
#: ASGI adapter's too.
LONE_REPLIES: int = _common.LONE_REPLIES


class _Lingering(asyncio.Protocol):
    """What a closed connection's transport talks to until the client closes too.

    Its input is discarded; the client's end of the stream, or the
    ``close_timeout`` timer, ends the transport, and the connection's own
    protocol then hears of it as usual.
    """

    __slots__ = ("proto", "timer")

    def __init__(self, proto: _Protocol, timer: asyncio.TimerHandle) -> None:
        self.proto = proto
        self.timer = timer

    def data_received(self, data: bytes) -> None:
        pass  # the engine is done with this connection

    def eof_received(self) -> bool:
        return False  # the transport closes

    def connection_lost(self, exc: Exception | None) -> None:
        self.timer.cancel()
        self.proto.connection_lost(exc)


class _Protocol(Peer, asyncio.Protocol):
    """One TCP (or TLS) connection."""

    __slots__ = (
        "early",
        "node",
        "paused",
        "raw",
        "reading",
        "receive",
        "sized",
        "taken",
        "transport",
        "write",
    )

    def __init__(self, node: WebSocketServer) -> None:
        super().__init__()
        self.node = node
        self.transport: asyncio.Transport | None = None
        self.paused = False  # writing: the transport's buffer is full
        self.reading = True
        self.taken = 0  # input bytes since this connection last let the others have a turn
        #: The transport whose read size this steers (the default loop's), else None.
        self.sized: Any = None
        # Bound once per connection: the per-message path makes no attribute lookups.
        self.receive = node.engine.receive_data
        self.write: Any = None
        self.raw: asyncio.Transport | None = None  # the TCP transport while TLS is negotiated
        # Decrypted bytes that arrive between the end of the TLS handshake and the moment
        # its task resumes (start_tls returns a turn of the loop later); made if any do.
        self.early: list[bytes] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        node = self.node
        if node.own_tls and self.raw is None:
            # TLS first, bounded by handshake_timeout; the engine sees the connection
            # only once it speaks TLS (start_tls resumes reading itself).
            self.raw = cast("asyncio.Transport", transport)
            self.raw.pause_reading()
            node.handshaking.add(self)
            node._spawn(node._start_tls, self)
            return
        self.established(transport)

    def established(self, transport: asyncio.BaseTransport) -> None:
        """The connection speaks WebSocket's transport (TCP, or TLS once negotiated)."""
        # uvloop's transports are not asyncio.Transport subclasses, only look-alikes.
        self.transport = cast("asyncio.Transport", transport)
        self.write = self.transport.write
        self.sized = self.transport if read_small(transport) else None
        node = self.node
        node.idle.clear()
        peer = transport.get_extra_info("peername")
        client = (str(peer[0]), int(peer[1])) if isinstance(peer, tuple) else None
        self.conn = node.engine.connect(
            now=node.loop.time(), client=client, scheme=node.scheme, transport=self
        )
        node.protocols.add(self)
        node.pump()  # arms the handshake deadline
        if self.early is not None:
            early, self.early = b"".join(self.early), None
            self.data_received(early)

    def data_received(self, data: bytes) -> None:
        conn = self.conn
        if conn is None:
            if self.early is None:
                self.early = []
            self.early.append(data)
        else:
            node = self.node
            holds = node.holds
            if not holds.lone:
                # The reply waits in the engine for the end of the loop's turn when it
                # is all there is to do (module docstring); else drain now.
                self.receive(conn, data, node.loop.time())
                if not holds.hold(node.engine, conn):
                    node.pump()
            else:
                # After a turn with a single reply: unless its transport is full, this
                # connection's own output comes back at once when it is all there is to do
                # (an echo, a reply, an ack), and is written here, with no drain and no
                # Flush (pump still runs when a deadline was armed).
                holds.lone -= 1
                out = self.receive(conn, data, node.loop.time(), take=not self.paused)
                if out is None:
                    node.pump()
                else:
                    self.write(out[0] if len(out) == 1 else b"".join(out))
                    if node.engine.deadlines_armed != node._seen:
                        node.pump()
            if not self.reading:
                return
            if (conn.blocked or conn.buffered) and not conn.can_read:  # (true when both are 0)
                self.pause()
                return
            size = len(data)
            sized = self.sized
            if sized is not None:  # (the default loop: see _common.read_small)
                if size == RECEIVE_SIZE:  # a large message is coming: read more at a time
                    sized.max_size = BIG_RECEIVE_SIZE
                elif size < RECEIVE_SIZE and sized.max_size != RECEIVE_SIZE:
                    sized.max_size = RECEIVE_SIZE
            self.taken += size
            if self.taken >= TURN_BYTES:
                # The others' turn: read again on the loop's next iteration.
                self.taken = 0
                self.pause()
                node.loop.call_soon(node._readable, self)

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
        # The engine connection and this protocol (its transport) refer to each other: let
        # go of it and of the closed transport now, not when a cyclic collection frees them
        # all (every use of these looks for None; a running listener holds its own).
        self.transport = self.write = self.sized = self.raw = None
        self.conn = None
        node._check_idle()

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        conn = self.conn
        if conn is not None and self.write is not None and conn.buffered:
            self.write(b"".join(conn.take()))
            if not self.reading:
                self.node._readable(self)

    def pause(self) -> None:
        """Stop reading until the engine can take input again."""
        transport = self.transport
        if transport is not None and not transport.is_closing():
            self.reading = False
            transport.pause_reading()


class WebSocketServer(Driver):
    """A running asyncio server for a hub; made by :func:`start_server` or :func:`open_server`.

    Use it as an async context manager, or call :meth:`close` and
    :meth:`wait_closed` (or :meth:`aclose`).

    Attributes:
        hub: The application.
        engine: The protocol engine (its ``stats`` and ``config``).
    """

    def __init__(self, hub: Hub, *, ssl_context: ssl.SSLContext | None, limits: dict[str, Any]):
        super().__init__(hub, limits)
        self.loop = asyncio.get_running_loop()
        self.scheme = scheme_of(ssl_context)
        self.ssl_context = ssl_context
        # TLS negotiated by the protocol (start_tls) on asyncio's own loops from Python 3.11;
        # by the loop on uvloop and on 3.10, whose selector transport starts reading after
        # connection_made even when the protocol paused it there, so the ClientHello could
        # reach the protocol before start_tls takes the transport over.
        self.own_tls = (
            ssl_context is not None
            and isinstance(self.loop, asyncio.BaseEventLoop)
            and sys.version_info >= (3, 11)
        )
        self.protocols: set[_Protocol] = set()
        self.handshaking: set[_Protocol] = set()  # TLS handshakes in progress
        self.idle = asyncio.Event()
        self.idle.set()
        self.handlers_allowed = True
        self._listener: asyncio.Server | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._pump_scheduled = False
        #: Replies left in the engine for the end of the loop's turn (module docstring).
        self.holds = HeldReplies(self.loop.call_soon, self.pump)
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = False

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
            if self.ssl_context is None or self.own_tls:
                self.idle.clear()  # else once TLS is up (a failed handshake is never seen)
            return _Protocol(self)

        if self.ssl_context is not None and not self.own_tls:
            # uvloop's start_tls does not work on a server's accepted transport: its own
            # TLS server, bounded by handshake_timeout too (uvloop offers no way to
            # abort handshakes in progress at shutdown: they end at handshake_timeout).
            kwargs["ssl"] = self.ssl_context
            kwargs["ssl_handshake_timeout"] = self.engine.config.handshake_timeout
        # Else no ssl= here: the protocol negotiates TLS itself (start_tls), so that a
        # handshake counts against handshake_timeout and one that fails or stalls is
        # known, aborted at shutdown, and never holds wait_closed().
        backlog = kwargs.get("backlog", BACKLOG)
        if backlog > ACCEPTS_PER_WAKE and isinstance(self.loop, BaseSelectorEventLoop):
            kwargs["backlog"] = ACCEPTS_PER_WAKE  # (the loop's count of accepts per wake-up)
        self._listener = await self.loop.create_server(factory, host, port, **kwargs)
        if kwargs.get("backlog", backlog) != backlog:
            for listening in self._listener.sockets:
                # The kernel's queue as asked: listen() again, on a duplicate of the socket.
                with socket.socket(fileno=os.dup(listening.fileno())) as again:
                    again.listen(backlog)
        logger.info("listening on %s://%s:%d", self.scheme, host or "*", self.port)

    async def _start_tls(self, proto: _Protocol) -> None:
        """Negotiate TLS on ``proto``'s TCP transport within ``handshake_timeout``."""
        raw = proto.raw
        assert raw is not None
        assert self.ssl_context is not None
        transport: asyncio.Transport | None = None
        try:
            transport = await start_tls(
                self.loop,
                raw,
                proto,
                self.ssl_context,
                handshake_timeout=self.engine.config.handshake_timeout,
            )
        except Exception as exc:  # timeout, reset, bad ClientHello: the same outcome
            logger.debug("TLS handshake failed: %s", exc)
        finally:
            self.handshaking.discard(proto)
        if transport is None or self._closing or transport.is_closing():
            (transport or raw).abort()
            self._check_idle()
            return
        proto.established(transport)

    def _check_idle(self) -> None:
        if not self.protocols and not self.handshaking:
            self.idle.set()

    # -- the driver's primitives ----------------------------------------------------------

    def now(self) -> float:
        """The loop's clock."""
        return self.loop.time()

    def _spawn(self, fn: Callable[..., Coroutine[Any, Any, None]], *args: Any) -> None:
        """Start ``fn(*args)`` as a task; :meth:`wait_closed` cancels what is left."""
        task = self.loop.create_task(fn(*args))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _flush(self, connections: tuple[ServerConnection, ...]) -> None:
        """Write each connection's output to its transport, unless the transport is full."""
        for conn in connections:
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
            if not proto.reading:
                self._readable(proto)

    async def _within(self, awaitable: Awaitable[None], timeout: float) -> bool:
        """Await ``awaitable``, cancelling it after ``timeout`` seconds; whether it finished."""
        try:
            await asyncio.wait_for(awaitable, timeout)
        except asyncio.TimeoutError:
            return False
        return True

    def _close_transport(self, peer: _Protocol, linger: bool) -> None:
        """Half-close the transport after what was written, and linger (module docstring).

        Output a paused transport left in the engine (at most ``max_queue``, and
        often just the close frame) is written first too, as the task-based
        adapters' senders do: the peer still gets the close frame once it reads.
        A TLS transport cannot half-close, and lingering without a FIN would
        keep a client waiting for the server to close first (as RFC 6455 has
        it) until one side's timeout: it is closed at once, as before.
        """
        transport = peer.transport
        if transport is None or transport.is_closing():
            return
        conn = peer.conn
        if conn is not None and conn.buffered:
            transport.write(b"".join(conn.take()))
        if not linger or not transport.can_write_eof():
            transport.close()  # the peer sends nothing more, or it is TLS
            return
        timer = self.loop.call_later(self.engine.config.close_timeout, transport.abort)
        transport.set_protocol(_Lingering(peer, timer))
        transport.write_eof()
        if not peer.reading:
            peer.reading = True
            transport.resume_reading()

    def _arm(self, when: float) -> None:
        """Move the one timer to ``when``."""
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self.loop.call_at(when, self._fire)

    def _readable(self, peer: _Protocol) -> None:
        """Resume reading ``peer`` if the engine takes its input again."""
        transport, conn = peer.transport, peer.conn
        if (
            not peer.reading
            and conn is not None
            and conn.can_read
            and transport is not None
            and not transport.is_closing()
        ):
            peer.reading = True
            transport.resume_reading()

    def _wakeup(self) -> None:
        """Pump soon (from async listeners and background jobs)."""
        if not self._pump_scheduled:
            self._pump_scheduled = True
            self.loop.call_soon(self._scheduled_pump)

    def _scheduled_pump(self) -> None:
        self._pump_scheduled = False
        self.pump()

    # -- shutdown -------------------------------------------------------------------------

    def close(self) -> None:
        """Stop accepting, and close every client with 1001 (``close`` events fire)."""
        if self._closing:
            return
        self._closing = True
        if self._listener is not None:
            self._listener.close()
        for proto in tuple(self.handshaking):  # a TLS handshake in progress is not a client yet
            if proto.raw is not None:
                proto.raw.abort()
        begin_shutdown(self.engine)
        self.pump()

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
        self.finish()

    async def aclose(self) -> None:
        """Close the server and wait until every connection is gone."""
        self.close()
        await self.wait_closed()

    async def __aenter__(self) -> WebSocketServer:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


async def start_server(
    hub: Hub,
    host: str | None = "127.0.0.1",
    port: int = 8000,
    *,
    ssl_context: ssl.SSLContext | None = None,
    backlog: int = BACKLOG,
    reuse_port: bool = False,
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
    await server._listen(host, port, backlog=backlog, reuse_port=reuse_port or None)
    return server


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

    Leaving the block shuts the server down gracefully (as :func:`serve`).

    It takes the arguments of :func:`start_server`.

    Yields:
        The running server.
    """
    server = await start_server(
        hub, host, port, ssl_context=ssl_context, backlog=backlog, reuse_port=reuse_port, **limits
    )
    try:
        yield server
    finally:
        server.close()
        await asyncio.shield(server.wait_closed())


async def serve(
    hub: Hub,
    host: str | None = "127.0.0.1",
    port: int = 8000,
    *,
    ssl_context: ssl.SSLContext | None = None,
    backlog: int = BACKLOG,
    reuse_port: bool = False,
    **limits: Any,
) -> None:
    """Serve ``hub`` until cancelled, then shut down gracefully.

    On cancellation every client is closed with 1001 and given up to
    ``close_timeout`` to finish, then the cancellation propagates. The wait
    is shielded from one cancellation, as asyncio cancels; an anyio cancel
    scope cancels again at every await and cuts it short, so under anyio
    serve with :mod:`ikisocket_adapters.anyio` instead.

    It takes the arguments of :func:`start_server`.
    """
    async with open_server(
        hub, host, port, ssl_context=ssl_context, backlog=backlog, reuse_port=reuse_port, **limits
    ):
        await asyncio.Event().wait()
