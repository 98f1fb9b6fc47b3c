"""Every plain socket of a trio server read from one task, as asyncio's loop reads them.

Trio wakes a task per socket that became readable: a trip through its
scheduler (about as much work as the rest of an echo) for every message of
every client. Here the server's plain sockets are registered, level-triggered,
in an epoll set of their own, and one task waits for that set to be readable
(trio waits on its descriptor as on any other): each wake-up reads up to
:data:`ROUND` sockets with input, once each and up to :data:`RECEIVE_SIZE`,
feeds the engine, then performs what the engine asked of the whole round at
once (one ``drain_actions``; the writes go straight to the sockets, see
``WebSocketServer._flush``), and goes back to trio's scheduler. So sixty-four
clients with a message each cost one trip and one drain, not sixty-four of
each, and no socket is read twice before the others had their turn (the
epoll set hands out the sockets still ready in turn). A round with a single input
(a lone client in lockstep, a quiet server) has no other reply to write
with its own: it takes the engine's ``take`` path, as the asyncio adapter
does for such a reply, and writes the connection's output at once when that
is all there is to do, with no drain.

Under anyio's asyncio backend the same set serves the plain sockets, and no
task waits for it: asyncio's loop calls :meth:`Reads.ready` when the set is
readable (``loop.add_reader``), as it calls a transport's reading callback.
The sockets are accepted raw for it: anyio's asyncio streams read through a
transport of their own, and wake a task per read and another per write.

A socket whose connection cannot be read (``conn.can_read``: its ``async
def`` listeners run, or its output waits over ``max_queue``) leaves the set
until the driver sees it readable again (:meth:`Reads.resume`). Only where
``select.epoll`` exists (Linux); elsewhere plain sockets are served as
streams, with a reader and a sender task each.
"""

from __future__ import annotations

import select
import socket
from typing import TYPE_CHECKING, Any

from ikisocket_core.protocol import ServerConnection

from ._common import RECEIVE_SIZE

if TYPE_CHECKING:
    import asyncio

    from ._anyio_stream import _Stream
    from .anyio import WebSocketServer

__all__: list[str] = []  # (the trio adapter's internals)

#: ``select.epoll``, or ``None`` where the platform has none.
EPOLL: Any = getattr(select, "epoll", None)
_IN: int = getattr(select, "EPOLLIN", 1)
#: The most sockets read in one round: what the round's replies wait for at most.
ROUND = 64


class Reads:
    """The epoll set of a server's plain sockets, and what reads them: a task, or asyncio's loop."""

    __slots__ = ("_epoll", "_loop", "_peers", "_server")

    def __init__(self, server: WebSocketServer) -> None:
        self._server = server
        self._epoll = EPOLL()
        #: Each registered socket's stream, socket and connection, by descriptor (paused too).
        self._peers: dict[int, tuple[_Stream, socket.socket, ServerConnection]] = {}
        #: The asyncio loop that watches the set (:meth:`watch`); under trio a task waits.
        self._loop: asyncio.AbstractEventLoop | None = None

    def add(self, client: _Stream, sock: socket.socket, conn: ServerConnection) -> None:
        """Read ``client``'s socket from now on."""
        fd = client.fd = sock.fileno()
        self._peers[fd] = (client, sock, conn)
        self._epoll.register(fd, _IN)

    def remove(self, client: _Stream) -> None:
        """Read ``client``'s socket no more (before it is closed); a no-op if not read."""
        fd = client.fd
        if fd < 0:
            return
        client.fd = -1
        del self._peers[fd]
        if not client.paused:
            self._epoll.unregister(fd)
        client.paused = False

    def pause(self, client: _Stream) -> None:
        """Stop reading ``client`` until :meth:`resume`."""
        client.paused = True
        self._epoll.unregister(client.fd)

    def resume(self, client: _Stream) -> None:
        """Read a paused ``client`` again if its connection can be read."""
        conn = client.conn
        if client.fd >= 0 and conn is not None and conn.can_read:
            client.paused = False
            self._epoll.register(client.fd, _IN)

    def close(self) -> None:
        """Release the epoll set (the reading task has ended, or the loop stops watching it)."""
        if self._loop is not None:
            self._loop.remove_reader(self._epoll.fileno())
            self._loop = None
        self._peers.clear()
        self._epoll.close()

    async def run(self, trio: Any) -> None:
        """Under trio: wait for input on any registered socket, read each once, and again."""
        wait_readable = trio.lowlevel.wait_readable
        epoll_fd = self._epoll.fileno()
        clock = self._server._clock
        round_ = self.round
        while True:
            await wait_readable(epoll_fd)
            round_(clock())

    def watch(self, loop: asyncio.AbstractEventLoop) -> None:
        """Under asyncio: read a round whenever the set is readable, from the loop's callback.

        No task waits: the loop calls :meth:`ready` as it calls a transport's
        reading callback. :meth:`close` stops it.
        """
        self._loop = loop
        loop.add_reader(self._epoll.fileno(), self.ready)

    def ready(self) -> None:
        """The set is readable (asyncio): read one round."""
        self.round(self._server._clock())

    def round(self, now: float) -> None:
        """Read each registered socket with input once, feed the engine, then drain once."""
        server = self._server
        engine, pump = server.engine, server.pump
        peers = self._peers
        write_taken = server._write_taken
        ready = self._epoll.poll(0, ROUND)
        # A round of one input (a lone client, a quiet server) has no other reply to
        # write with its own: the engine hands its connection's output back when that
        # is all there is to do, and it is written at once, with no drain.
        alone = len(ready) == 1
        drained = False
        for fd, _ in ready:
            peer = peers.get(fd)
            if peer is None:
                continue  # its connection ended (an input of the previous round closed it)
            client, sock, conn = peer
            if client.paused:
                continue  # an input read before it in this round paused it
            try:
                data = sock.recv(RECEIVE_SIZE)
            except BlockingIOError:
                continue
            except OSError as exc:
                self.remove(client)
                server._lost(client, conn, exc)
                continue
            if not data:
                self.remove(client)
                engine.receive_eof(conn)
                pump()
                assert client.read_scope is not None
                client.read_scope.cancel()  # its task writes what is left, then closes
                continue
            # (An input read before it in this round may have closed its connection: the
            # engine then ignores this one, and the round's drain takes the socket out.)
            if alone and client.sender is None and not client.lost:
                out = engine.receive_data(conn, data, now, take=True)
                if out is not None:
                    write_taken(client, conn, out)
                    # Nothing is left for a drain, unless a deadline was armed (the timer).
                    drained = engine.deadlines_armed == server._seen
            else:
                engine.receive_data(conn, data, now)
            # (The engine calls no driver hook while it reads. can_read is true when both
            # are 0, as after a reply written at once: look at them before the property.)
            if (conn.blocked or conn.buffered) and not conn.can_read:
                self.pause(client)  # read again once its output is written (_flush)
        if not drained:
            pump()
