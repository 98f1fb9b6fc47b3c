"""An ikisocket adapter in one thread, on the standard library's ``selectors``.

It is the whole job of an adapter, with nothing hidden: accept sockets, feed
what they read to :class:`~ikisocket_core.protocol.Server`, perform the actions
it returns, and tell it the time. It has no event loop, so it runs an
``async def`` listener to completion with :func:`asyncio.run`, blocking
everything else meanwhile: keep such listeners quick here.

Run it with ``python examples/docs/custom_adapter.py``; it serves the
quickstart application on ``ws://127.0.0.1:8000/ws/NAME``.
"""

from __future__ import annotations

import asyncio
import logging
import selectors
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any

from ikisocket_core import Hub
from ikisocket_core.protocol import CloseTransport, Flush, RunHandler, Server, ServerConnection

log = logging.getLogger("custom_adapter")


class SelectorServer:
    """Serve ``hub`` from :meth:`run`'s loop; ``limits`` are ``ServerConfig`` fields."""

    def __init__(self, hub: Hub, host: str = "127.0.0.1", port: int = 0, **limits: Any) -> None:
        # [start:setup]
        self.engine = Server(hub, **limits)
        self.selector = selectors.DefaultSelector()
        self.listener = socket.create_server((host, port))
        self.listener.setblocking(False)
        self.selector.register(self.listener, selectors.EVENT_READ)
        self.sockets: dict[ServerConnection, socket.socket] = {}
        self.unsent: dict[ServerConnection, bytes] = {}  # taken from the engine, not yet written
        # Close once ``unsent`` is empty; True: the client may still be sending, linger.
        self.closing: dict[ServerConnection, bool] = {}
        # Half-closed, read until the client closes too (or this deadline passes).
        self.lingering: dict[ServerConnection, float] = {}
        # [end:setup]

    @property
    def port(self) -> int:
        """The port the server listens on."""
        return int(self.listener.getsockname()[1])

    # [start:loop]
    def run(self, keep_going: Callable[[], bool] = lambda: True) -> None:
        """Serve until ``keep_going()`` is false, then close every client with 1001."""
        while keep_going():
            self.step()
        hub = self.engine.hub
        hub.stop_accepting()
        hub.close_all(1001, "server shutting down")
        self.perform()
        deadline = time.monotonic() + self.engine.config.close_timeout
        while self.sockets and time.monotonic() < deadline:
            self.step()
        for conn in list(self.sockets):
            self.drop(conn)
        self.selector.close()
        self.listener.close()

    def step(self) -> None:
        """Wait for sockets or the next deadline (at most 0.1 s), then do what is due."""
        now = time.monotonic()
        deadline = self.engine.next_deadline()
        timeout = 0.1 if deadline is None else min(0.1, max(0.0, deadline - now))
        for key, mask in self.selector.select(timeout):
            if key.fileobj is self.listener:
                self.accept()
            elif mask & selectors.EVENT_READ:
                self.read(key.data)
            if key.data is not None and mask & selectors.EVENT_WRITE:
                self.write(key.data)
        now = time.monotonic()
        for conn in [c for c, until in self.lingering.items() if now >= until]:
            self.drop(conn)
        if deadline is not None and now >= deadline:
            self.engine.tick(now)  # only when something is due: a tick has work then
        self.perform()

    # [end:loop]

    # [start:inputs]
    def accept(self) -> None:
        try:
            sock, address = self.listener.accept()
        except BlockingIOError:
            return
        sock.setblocking(False)
        conn = self.engine.connect(now=time.monotonic(), client=address[:2], transport=sock)
        self.sockets[conn] = sock
        self.selector.register(sock, selectors.EVENT_READ, conn)

    def read(self, conn: ServerConnection) -> None:
        sock = self.sockets.get(conn)
        if sock is None:  # dropped earlier in this round
            return
        try:
            data = sock.recv(65536)
        except BlockingIOError:
            return
        except OSError as exc:
            self.drop(conn, exc)
            return
        if conn in self.lingering:  # the engine is done with it: discard, until the end
            if not data:
                self.drop(conn)
            return
        if data:
            self.engine.receive_data(conn, data, now=time.monotonic())
            if not conn.can_read:  # its output waits unwritten (over max_queue): pause
                self.selector.modify(sock, selectors.EVENT_WRITE, conn)
        else:
            self.engine.receive_eof(conn)

    # [end:inputs]

    # [start:outputs]
    def perform(self) -> None:
        """Do what the engine asks, in order; after every input."""
        for action in self.engine.drain_actions():
            if isinstance(action, Flush):
                for conn in action.connections:
                    # While earlier bytes wait for the socket, leave new ones in the
                    # engine: its buffer is the bounded one (max_queue, backpressure).
                    if conn in self.sockets and conn not in self.unsent:
                        self.unsent[conn] = b"".join(conn.take())
                        self.write(conn)
            elif isinstance(action, CloseTransport):
                self.closing[action.connection] = action.linger
                self.write(action.connection)
            elif isinstance(action, RunHandler):
                # No event loop here: run the listener to completion, blocking the
                # server meanwhile. Fine for quick work; real adapters await it in a
                # task and keep serving other connections.
                asyncio.run(_await(action.awaitable))
                self.engine.handler_done(action.connection)
                self.perform()  # what the listener queued, and input held back meanwhile

    def write(self, conn: ServerConnection) -> None:
        sock = self.sockets.get(conn)
        if sock is None:
            return
        data = self.unsent.pop(conn, b"")
        try:
            sent = sock.send(data) if data else 0
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            self.drop(conn, exc)
            return
        if sent < len(data):
            self.unsent[conn] = data[sent:]
            reading = selectors.EVENT_READ if conn.can_read else 0
            self.selector.modify(sock, reading | selectors.EVENT_WRITE, conn)
            return
        self.selector.modify(sock, selectors.EVENT_READ, conn)
        if conn.buffered:  # the engine kept more while we were busy: take it now
            self.unsent[conn] = b"".join(conn.take())
            self.write(conn)
        elif conn in self.closing:
            if self.closing.pop(conn):
                self.linger(conn)
            else:
                self.drop(conn)

    def linger(self, conn: ServerConnection) -> None:
        """Send FIN after the last bytes, and read on until the client closes too.

        Closing a socket with unread input would make the kernel reset the
        connection, and the reset destroys what the client had not read yet:
        the close frame or the HTTP status saying why.
        """
        try:
            self.sockets[conn].shutdown(socket.SHUT_WR)
        except OSError as exc:
            self.drop(conn, exc)
            return
        self.lingering[conn] = time.monotonic() + self.engine.config.close_timeout

    def drop(self, conn: ServerConnection, error: BaseException | None = None) -> None:
        """Close the socket and tell the engine the transport is gone."""
        sock = self.sockets.pop(conn)
        self.unsent.pop(conn, None)
        self.closing.pop(conn, None)
        self.lingering.pop(conn, None)
        self.selector.unregister(sock)
        sock.close()
        self.engine.connection_lost(conn, error)
        self.perform()

    # [end:outputs]


async def _await(awaitable: Awaitable[None]) -> None:
    await awaitable


if __name__ == "__main__":
    import signal

    from quickstart import hub as quickstart_hub

    stop: list[int] = []
    signal.signal(signal.SIGINT, lambda signum, frame: stop.append(signum))
    signal.signal(signal.SIGTERM, lambda signum, frame: stop.append(signum))
    logging.basicConfig(level=logging.INFO)
    server = SelectorServer(quickstart_hub, port=8000)
    print(f"listening on ws://127.0.0.1:{server.port}", flush=True)
    server.run(lambda: not stop)
