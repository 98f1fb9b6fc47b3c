"""The anyio adapter's per-connection state (:class:`_Stream`) and how it finds trio.

Split from :mod:`ikisocket_adapters.anyio`, which keeps the server that drives them.
"""

from __future__ import annotations

import socket
import sys
from typing import Any

import anyio
import anyio.abc
import anyio.lowlevel

from ._common import Peer

__all__: list[str] = []  # (the anyio adapter's internals)


def _on_trio() -> Any:
    """The trio module when this runs under trio (which keeps no buffer in front of a socket)."""
    trio = sys.modules.get("trio")
    if trio is None:
        return None
    try:
        trio.lowlevel.current_task()
    except RuntimeError:
        return None
    return trio


class _Signal:
    """Wakes every task waiting on it; a no-op without one."""

    __slots__ = ("_event",)

    def __init__(self) -> None:
        self._event: anyio.Event | None = None

    def wake(self) -> None:
        if self._event is not None:
            self._event.set()
            self._event = None

    async def wait(self) -> None:
        if self._event is None:
            self._event = anyio.Event()
        await self._event.wait()


class _Stream(Peer):
    """One accepted stream.

    Its reader waits on ``signal`` while the connection cannot be read. A
    stream's sender waits on ``wanted`` while nothing is buffered. A plain
    TCP stream (on Linux) also has its non-blocking ``sock``, read by the
    server's epoll set: output is written straight to it by whichever task
    produced it, and only what the kernel does not take at once (``rest``)
    goes to a sender task started for it (``sender``, its cancel scope).
    """

    __slots__ = (
        "closing",
        "fd",
        "linger",
        "lost",
        "paused",
        "read_scope",
        "rest",
        "send_scope",
        "sender",
        "sending",
        "signal",
        "sock",
        "stream",
        "wanted",
    )

    def __init__(self, stream: anyio.abc.ByteStream, sock: socket.socket | None = None) -> None:
        super().__init__()
        self.stream = stream
        self.sock = sock
        self.signal = _Signal()
        self.wanted = _Signal()
        self.closing = False
        self.lost = False  # the stream failed: nothing more can be read or sent
        self.linger = False  # read to its end after the last write (CloseTransport.linger)
        self.sending = False  # the sender awaits a send: nothing may overtake it
        self.rest: bytes | memoryview | None = None  # the kernel's refusal, for the sender
        self.send_scope = anyio.CancelScope()  # its deadline bounds the last writes
        # A plain socket read by the server's epoll set: the connection's task sleeps inside
        # read_scope while the set's reader reads it (cancelled when that ends); a sender task
        # exists only while the kernel refuses output (its cancel scope, else None).
        self.read_scope: anyio.CancelScope | None = None
        self.sender: anyio.CancelScope | None = None
        #: Its socket's descriptor while the server's reading task reads it (else -1), and
        #: whether that is paused because the connection cannot be read.
        self.fd = -1
        self.paused = False


class _RawSocketStream(anyio.abc.SocketStream):
    """A plain non-blocking socket as an anyio stream, with no transport reading it.

    Under anyio's asyncio backend, a stream from ``SocketListener.accept``
    reads through an asyncio transport of its own; the server's reading
    callback (:class:`~ikisocket_adapters._trio_reads.Reads`) reads these
    sockets itself instead. This stream serves what is left around that:
    the addresses, the last writes, the half-close and the lingering read
    (``anyio.wait_readable``/``wait_writable`` while the kernel refuses), and
    the close.
    """

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._closed = False

    @property
    def _raw_socket(self) -> socket.socket:
        return self._sock

    async def receive(self, max_bytes: int = 65536) -> bytes:
        """Read up to ``max_bytes``, waiting until some come.

        Raises:
            anyio.EndOfStream: The peer half-closed.
            anyio.ClosedResourceError: The stream was closed.
            anyio.BrokenResourceError: The connection failed.
        """
        while True:
            if self._closed:
                raise anyio.ClosedResourceError
            try:
                data = self._sock.recv(max_bytes)
            except BlockingIOError:
                await anyio.wait_readable(self._sock)
                continue
            except OSError as exc:
                raise anyio.BrokenResourceError from exc
            if not data:
                raise anyio.EndOfStream
            return data

    async def send(self, item: bytes) -> None:
        """Write all of ``item``, waiting while the kernel refuses.

        Raises:
            anyio.ClosedResourceError: The stream was closed.
            anyio.BrokenResourceError: The connection failed.
        """
        view = memoryview(item)
        while view:
            if self._closed:
                raise anyio.ClosedResourceError
            try:
                sent = self._sock.send(view)
            except BlockingIOError:
                await anyio.wait_writable(self._sock)
                continue
            except OSError as exc:
                raise anyio.BrokenResourceError from exc
            view = view[sent:]

    async def send_eof(self) -> None:
        """Half-close: send FIN after what was written."""
        try:
            self._sock.shutdown(socket.SHUT_WR)
        except OSError as exc:
            raise anyio.BrokenResourceError from exc

    async def aclose(self) -> None:
        """Close the socket; a task waiting for it to be readable or writable is woken."""
        if not self._closed:
            self._closed = True
            if self._sock.fileno() >= 0:
                anyio.notify_closing(self._sock)
            self._sock.close()
        await anyio.lowlevel.checkpoint()
