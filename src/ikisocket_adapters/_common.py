"""What every socket adapter shares: options, the action loop, handler runners and timers.

A socket adapter is a :class:`Driver` plus its I/O: it feeds the engine what
its transports read, and the driver performs what the engine asks for in one
loop (:meth:`Driver.pump`): flushing output, closing transports, running a
connection's ``async def`` listeners one after another, and keeping one timer
armed for :meth:`~ikisocket_core.protocol.Server.next_deadline`.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import ssl
import sys
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import fields
from typing import Any

from ikisocket_core import Hub
from ikisocket_core.protocol import (
    CloseTransport,
    Flush,
    RunHandler,
    Server,
    ServerConfig,
    ServerConnection,
)

__all__ = [
    "ACCEPT_BATCH",
    "ACCEPT_RETRY",
    "BACKLOG",
    "BIG_RECEIVE_SIZE",
    "HELD_BYTES",
    "LONE_REPLIES",
    "RECEIVE_SIZE",
    "SHUTDOWN_CODE",
    "TICK_RESOLUTION",
    "TIMER_SLACK",
    "Driver",
    "HeldReplies",
    "Peer",
    "begin_shutdown",
    "discard",
    "logger",
    "make_server",
    "read_small",
    "running_clock",
    "scheme_of",
]

logger = logging.getLogger("ikisocket")

#: How often the ASGI adapter ticks its connections (the socket adapters sleep
#: until the engine's next deadline instead).
TICK_RESOLUTION = 0.25
#: Ticks are at least this many seconds apart: deadlines closer together share
#: one tick, and a deadline the engine still reports after ticking past it
#: cannot make the timer spin.
TIMER_SLACK = 0.005
#: The close code sent to every client when the server shuts down (RFC 6455 7.4.1).
SHUTDOWN_CODE = 1001
#: The default listen backlog of every socket adapter (the kernel may cap it).
BACKLOG = socket.SOMAXCONN
#: Bytes a reader asks for at a time: a task-based reader, and asyncio's socket transport
#: (see :func:`read_small`). Under glibc's threshold for serving an allocation by ``mmap``.
RECEIVE_SIZE = 64 * 1024
#: What asyncio's socket transport reads at a time while a connection's reads come back full
#: (a large message arriving): its own default, see :func:`read_small`.
BIG_RECEIVE_SIZE = 256 * 1024
#: Bytes of replies the asyncio and ASGI adapters hold for the end of the loop's turn (see
#: ``ikisocket_adapters.asyncio``): once the held replies reach it, they are written at once.
HELD_BYTES = 256 * 1024
#: Replies written at once after a turn that held only one (``ikisocket_adapters.asyncio``).
LONE_REPLIES = 64


class HeldReplies:
    """Replies a driver leaves in the engine until the end of its loop's turn.

    The asyncio adapter feeds an input without ``take`` (the ASGI adapter, only
    an input whose output is not all its own connection's: a reply there is
    taken and written at once) and asks :meth:`hold` whether its drain may
    wait: it may when the node has nothing to do but write output
    (``Server.output_only``) and the connection's unwritten output is under
    :data:`HELD_BYTES`. The first hold of a turn schedules :meth:`end_turn`,
    which drains once for every input of the turn. The engine keeps each
    connection's output in order, so any other drain in between writes the
    held replies first. After a turn that held one input's output,
    :attr:`lone` counts the next :data:`LONE_REPLIES` inputs the driver feeds
    and drains at once, as before.
    """

    __slots__ = ("_drain", "_schedule", "count", "lone")

    def __init__(self, schedule: Callable[[Callable[[], None]], object], drain: Callable[[], None]):
        self._schedule = schedule  # calls its argument at the end of the loop's turn
        self._drain = drain
        #: Inputs whose drain waits for the end of this turn.
        self.count = 0
        #: Inputs still to feed with ``take`` and write at once.
        self.lone = 0

    def hold(self, engine: Server, conn: ServerConnection) -> bool:
        """Whether the drain after ``conn``'s input may wait for the end of the turn."""
        if conn.buffered >= HELD_BYTES or not engine.output_only:
            return False
        if not self.count:
            self._schedule(self.end_turn)
        self.count += 1
        return True

    def end_turn(self) -> None:
        """The turn is over: drain, which writes its replies."""
        if self.count == 1:
            self.lone = LONE_REPLIES  # nothing came with it: write the next ones at once
        self.count = 0
        self._drain()


#: Connections a task-based acceptor takes from the kernel's queue per wake-up, at most.
ACCEPT_BATCH = 128
#: accept() errors that mean "out of resources right now": wait and retry.
ACCEPT_RETRY = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS})

_NEVER = float("inf")


def running_clock() -> Callable[[], float]:
    """The running event loop's clock (what ``anyio.current_time`` reads), to call directly.

    ``anyio.current_time()`` looks up the running backend on every call: about
    2.4 µs here, where ``loop.time()`` takes 0.12 (on Python 3.11 the lookup
    includes a ``getpid()`` system call, in asyncio's running-loop check). A
    driver that reads the time per message gets the clock once, in the task
    that uses it, with this.
    """
    loop = asyncio._get_running_loop()  # (None under trio, where there is no asyncio loop)
    if loop is not None:
        return loop.time
    trio: Any = sys.modules["trio"]
    return trio.lowlevel.current_clock().current_time  # type: ignore[no-any-return]


def read_small(transport: Any) -> bool:
    """Have asyncio's socket ``transport`` read at most :data:`RECEIVE_SIZE` at a time.

    The default loop's socket transport reads into a new ``bytes`` of its
    ``max_size`` (256 KiB) and shrinks it to what came. glibc serves an
    allocation that large with ``mmap`` for as long as its dynamic threshold
    has not risen past it (which depends on what the process freed before), so
    a process can spend a whole run making an ``mmap``, an ``mremap`` and a
    ``munmap`` per read, and faulting in fresh pages: measured here, 52-60 µs
    per 4 KiB echo with 64 clients against 29-33 µs in a process whose threshold
    had risen. A read of :data:`RECEIVE_SIZE` stays on the heap. While reads
    come back full (a large message), the driver sets :data:`BIG_RECEIVE_SIZE`
    again, and :data:`RECEIVE_SIZE` after a short one. Transports without the
    attribute (uvloop's, which read into one buffer of their own; TLS) are
    left as they are.

    Returns:
        Whether the transport reads :data:`RECEIVE_SIZE` now (the driver steers it).
    """
    if not hasattr(transport, "max_size"):
        return False
    transport.max_size = RECEIVE_SIZE
    return True


def make_server(hub: Hub, limits: dict[str, Any]) -> Server:
    """Build the protocol engine for an adapter from its keyword limits.

    Args:
        hub: The application.
        limits: :class:`ServerConfig` fields (unknown names raise ``TypeError``).

    Returns:
        The engine.
    """
    known = {f.name for f in fields(ServerConfig)}
    unknown = set(limits) - known
    if unknown:
        raise TypeError(f"unknown server option(s): {', '.join(sorted(unknown))}")
    return Server(hub, ServerConfig(**limits), clock=time.perf_counter)


def begin_shutdown(server: Server) -> None:
    """Refuse new connections and close every open one with 1001 "going away".

    The caller then drains actions and waits (at most ``close_timeout``) for
    the connections to finish their closing handshakes.

    Args:
        server: The engine to shut down.
    """
    server.shutdown(SHUTDOWN_CODE, "server shutting down")


def scheme_of(ssl_context: ssl.SSLContext | None) -> str:
    """``"wss"`` behind TLS, else ``"ws"``."""
    return "ws" if ssl_context is None else "wss"


def discard(awaitable: Awaitable[None]) -> None:
    """Close a listener's awaitable that will never run (no "never awaited" warning).

    Args:
        awaitable: The awaitable of a :class:`~ikisocket_core.protocol.RunHandler`.
    """
    close = getattr(awaitable, "close", None)
    if close is not None:
        close()


class Peer:
    """What a driver keeps per connection; the engine's ``conn.transport``.

    Attributes:
        conn: The engine's connection (``None`` before :meth:`Server.connect`).
        handlers: The connection's ``async def`` listeners waiting for their
            turn while one runs (``None`` while none runs).
    """

    __slots__ = ("conn", "handlers")

    def __init__(self) -> None:
        self.conn: ServerConnection | None = None
        self.handlers: deque[Awaitable[None]] | None = None


class Driver:
    """The part of a socket adapter that is the same on every backend.

    A backend provides the primitives: :meth:`now`, :meth:`_spawn`,
    :meth:`_flush`, :meth:`_close_transport`, :meth:`_arm` and :meth:`_readable`,
    and calls :meth:`pump` after every input it gives the engine.

    Args:
        hub: The application.
        limits: :class:`ServerConfig` fields.

    Attributes:
        hub: The application.
        engine: The protocol engine (its ``stats`` and ``config``).
        runners: How many handler runners are going.
        handlers_allowed: Whether :class:`RunHandler` actions start runners
            (else their awaitables are discarded).
    """

    def __init__(self, hub: Hub, limits: dict[str, Any]) -> None:
        self.hub = hub
        self.engine = make_server(hub, limits)
        self.runners = 0
        self.handlers_allowed = False
        self._pending: set[Awaitable[None]] = set()  # handlers queued, not started
        self._armed = _NEVER  # when the timer fires
        self._ticked = -_NEVER  # when it last fired
        self._seen = -1  # engine.deadlines_armed when next_deadline was last asked
        self.engine.set_wakeup(self._wakeup)

    # -- primitives -----------------------------------------------------------------------

    def now(self) -> float:
        """The backend's clock."""
        raise NotImplementedError

    def _spawn(self, fn: Callable[..., Coroutine[Any, Any, None]], *args: Any) -> None:
        """Start ``fn(*args)`` as a task of the server."""
        raise NotImplementedError

    def _flush(self, connections: tuple[ServerConnection, ...]) -> None:
        """Write (or have written) ``conn.take()`` of each connection."""
        raise NotImplementedError

    def _close_transport(self, peer: Any, linger: bool) -> None:
        """Close ``peer``'s transport once what was taken from it is written.

        With ``linger`` (``CloseTransport.linger``), half-close it instead and
        read it to its end, at most ``close_timeout``.
        """
        raise NotImplementedError

    def _arm(self, when: float) -> None:
        """Have :meth:`_fire` called at ``when`` (on :meth:`now`'s clock), not later."""
        raise NotImplementedError

    def _readable(self, peer: Any) -> None:
        """``peer``'s connection may be readable again: read if ``conn.can_read``."""
        raise NotImplementedError

    def _wakeup(self) -> None:
        """The hub queued work outside an input: schedule a :meth:`pump` (never inline)."""
        raise NotImplementedError

    async def _within(self, awaitable: Awaitable[None], timeout: float) -> bool:
        """Await ``awaitable``, cancelling it after ``timeout`` seconds; whether it finished."""
        raise NotImplementedError

    def _runner_done(self) -> None:
        """A handler runner finished (a no-op unless a shutdown waits for them)."""

    # -- the loop -------------------------------------------------------------------------

    def pump(self) -> None:
        """Perform everything the engine has queued, then keep the timer armed."""
        engine = self.engine
        for action in engine.drain_actions():
            cls = action.__class__
            if cls is Flush:
                self._flush(action.connections)  # type: ignore[union-attr]
            elif cls is CloseTransport:
                self._close_transport(action.connection.transport, action.linger)  # type: ignore[union-attr]
            else:
                self._run_handler(action)  # type: ignore[arg-type]
        # Re-arm only for an earlier deadline: one that moved later fires early, ticks
        # with nothing to do and re-arms. Only an armed deadline can be earlier, so the
        # engine is asked only when one was armed since (not on every echo).
        armed = engine.deadlines_armed
        if armed == self._seen:
            return
        self._seen = armed
        when = engine.next_deadline()
        if when is not None and when < self._armed:
            floor = self._ticked + TIMER_SLACK
            when = max(when, floor)
            if when < self._armed:
                self._armed = when
                self._arm(when)

    def _fire(self) -> None:
        """The armed deadline came: run the engine's timers (and re-arm)."""
        self._armed = _NEVER
        self._seen = -1  # the timer is disarmed: ask the engine again
        now = self._ticked = self.now()
        self.engine.tick(now)
        self.pump()

    # -- async listeners ------------------------------------------------------------------

    def _run_handler(self, action: RunHandler) -> None:
        conn, awaitable = action.connection, action.awaitable
        peer: Peer | None = conn.transport if conn is not None else None
        if peer is not None and peer.handlers is not None:
            peer.handlers.append(awaitable)  # its runner is already going
            self._pending.add(awaitable)
            return
        if not self.handlers_allowed:
            discard(awaitable)
            return
        self._pending.add(awaitable)
        if peer is not None:
            peer.handlers = deque()
        self.runners += 1
        self._spawn(self._handlers, conn, awaitable)

    async def _handlers(self, conn: ServerConnection | None, awaitable: Awaitable[None]) -> None:
        """Run a connection's ``async def`` listeners one after another, in order.

        Each gets at most ``handler_timeout`` seconds (from when it starts), then
        is cancelled and reported to the engine; the next one still runs.
        """
        peer: Peer | None = conn.transport if conn is not None else None
        engine = self.engine
        timeout = engine.config.handler_timeout
        try:
            while True:
                self._pending.discard(awaitable)
                try:
                    if timeout is None:
                        await awaitable
                    elif not await self._within(awaitable, timeout):
                        # Cancelled here; what it means (error event, 1011) is the engine's call.
                        engine.handler_timed_out(conn, awaitable)
                finally:
                    self.engine.handler_done(conn)
                    self.pump()
                if peer is None or not peer.handlers:
                    break
                awaitable = peer.handlers.popleft()
        finally:
            if peer is not None:
                peer.handlers = None
                self._readable(peer)
            self.runners -= 1
            self._runner_done()

    def finish(self) -> None:
        """The server's tasks are gone: drop handlers that never started, detach the hub.

        The hub accepts connections again, so it can be served anew.
        """
        self.handlers_allowed = False
        for awaitable in self._pending:
            discard(awaitable)
        self._pending.clear()
        self.engine.set_wakeup(None)
        self.hub.resume_accepting()
