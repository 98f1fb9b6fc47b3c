"""What every socket adapter shares: options, logging names and the shutdown sequence."""

from __future__ import annotations

import errno
import logging
import ssl
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import fields
from typing import Any, Protocol

from ikisocket_core import Hub
from ikisocket_core.protocol import (
    CloseTransport,
    Connection,
    Flush,
    RunHandler,
    Server,
    ServerConfig,
)

__all__ = [
    "ACCEPT_RETRY",
    "RECEIVE_SIZE",
    "SHUTDOWN_CODE",
    "TICK_RESOLUTION",
    "Signal",
    "StreamClient",
    "StreamDriver",
    "begin_shutdown",
    "discard",
    "logger",
    "make_server",
]

logger = logging.getLogger("ikisocket")

#: Timers fire at most this often: each tick scans every connection.
TICK_RESOLUTION = 0.25
#: The close code sent to every client when the server shuts down (RFC 6455 7.4.1).
SHUTDOWN_CODE = 1001


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
    return Server(hub, ServerConfig(**limits))


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


# -- task-based adapters (trio, anyio) ----------------------------------------------------

#: Bytes a reader asks for at a time.
RECEIVE_SIZE = 64 * 1024
#: accept() errors that mean "out of resources right now": wait and retry.
ACCEPT_RETRY = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS})


class Signal(Protocol):
    """Wakes every task waiting on it (a trio ParkingLot, an anyio Event pair)."""

    def wake(self) -> None:
        """Wake the waiters; a no-op without one."""

    async def wait(self) -> None:
        """Wait for the next :meth:`wake`."""


class StreamClient:
    """One accepted stream of a task-based adapter; the engine's ``conn.transport``.

    Its reader waits on ``signal`` while the connection is blocked, its sender
    while nothing is buffered; every change of either wakes both.
    """

    __slots__ = ("closing", "conn", "handlers", "send_scope", "signal", "stream")

    def __init__(self, stream: Any, signal: Signal, send_scope: Any) -> None:
        self.stream = stream
        self.conn: Connection | None = None
        self.signal = signal
        self.closing = False
        self.send_scope = send_scope  # a cancel scope: its deadline bounds the last writes
        self.handlers: deque[Awaitable[None]] | None = None


class StreamDriver:
    """What the trio and anyio adapters share: applying the engine's actions.

    Subclasses provide :meth:`spawn` and :meth:`now`, the accept loop, and a
    reader and a sender task per :class:`StreamClient`.

    Args:
        hub: The application.
        limits: :class:`ServerConfig` fields.
        signal: Makes a :class:`Signal` for the backend.
    """

    def __init__(self, hub: Hub, limits: dict[str, Any], signal: Callable[[], Signal]) -> None:
        self.hub = hub
        self.engine = make_server(hub, limits)
        self.clients: set[StreamClient] = set()
        self.runners = 0
        self.changed = signal()  # a client or a handler runner came or went
        self.handlers_allowed = False  # until the subclass can spawn tasks
        self._pending: set[Awaitable[None]] = set()  # handlers queued, not started
        self._pump_requested = False
        self._pump_signal = signal()
        self.engine.set_wakeup(self._wakeup)

    def spawn(self, fn: Callable[..., Coroutine[Any, Any, None]], *args: Any) -> None:
        """Start ``fn(*args)`` as a task of the server."""
        raise NotImplementedError

    def now(self) -> float:
        """The backend's clock."""
        raise NotImplementedError

    def pump(self) -> None:
        """Perform everything the engine has queued (never blocks)."""
        for action in self.engine.drain_actions():
            if isinstance(action, Flush):
                for conn in action.connections:
                    conn.transport.signal.wake()  # its sender takes the bytes
            elif isinstance(action, CloseTransport):
                client: StreamClient = action.connection.transport
                client.closing = True
                # What is still buffered gets close_timeout to leave, not more.
                deadline = self.now() + self.engine.config.close_timeout
                client.send_scope.deadline = min(client.send_scope.deadline, deadline)
                client.signal.wake()
            elif isinstance(action, RunHandler):
                self._run_handler(action)

    def _wakeup(self) -> None:
        # Called by the hub from async listeners and background jobs: never pump inline.
        self._pump_requested = True
        self._pump_signal.wake()

    async def pump_loop(self) -> None:
        """Pump whenever the hub asks for it; run this as a task."""
        while True:
            if not self._pump_requested:
                await self._pump_signal.wait()
                continue
            self._pump_requested = False
            self.pump()

    async def tick_loop(self, sleep: Callable[[float], Awaitable[None]]) -> None:
        """Tick the engine every :data:`TICK_RESOLUTION` while there are clients; a task."""
        while True:
            if not self.clients:
                await self.changed.wait()
                continue
            await sleep(TICK_RESOLUTION)
            self.engine.tick(self.now())
            self.pump()

    def lost(self, client: StreamClient, conn: Connection, error: BaseException) -> None:
        """The stream of ``client`` failed: end its connection and let its sender finish."""
        self.engine.connection_lost(conn, error)
        self.pump()
        client.closing = True
        client.signal.wake()

    def _run_handler(self, action: RunHandler) -> None:
        conn, awaitable = action.connection, action.awaitable
        client: StreamClient | None = conn.transport if conn is not None else None
        if client is not None and client.handlers is not None:
            client.handlers.append(awaitable)  # its runner is already going
            self._pending.add(awaitable)
            return
        if not self.handlers_allowed:
            discard(awaitable)
            return
        self._pending.add(awaitable)
        if client is not None:
            client.handlers = deque()
        self.runners += 1
        self.spawn(self._handlers, conn, awaitable)

    async def _handlers(self, conn: Connection | None, awaitable: Awaitable[None]) -> None:
        """Run a connection's ``async def`` listeners one after another, in order."""
        client: StreamClient | None = conn.transport if conn is not None else None
        try:
            while True:
                self._pending.discard(awaitable)
                try:
                    await awaitable
                finally:
                    self.engine.handler_done(conn)
                    self.pump()
                if client is None or not client.handlers:
                    break
                awaitable = client.handlers.popleft()
        finally:
            if client is not None:
                client.handlers = None
                client.signal.wake()  # the reader may read again
            self.runners -= 1
            self.changed.wake()

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
