"""Minimal reference WebSocket echo server built on wsproto.

This is the baseline testee for the Autobahn|Testsuite runner in
``autobahn.py``: if the runner reports a clean result against this server, the
runner itself works, and any failures against ikisocket are ikisocket's.

It is deliberately simple: one thread, blocking-style code driven by
:mod:`selectors` over non-blocking sockets.  Text messages are echoed as text
and binary messages as binary, after reassembling fragments into one message.
Messages larger than :data:`MAX_MESSAGE_SIZE` are refused with close code 1009.
``permessage-deflate`` is negotiated whenever the client offers it.

Usage::

    python tests/conformance/wsproto_echo.py --port 9001

Requires the third-party ``wsproto`` package (``pip install wsproto``).
"""

from __future__ import annotations

import argparse
import contextlib
import selectors
import signal
import socket
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Event,
    Ping,
    RejectConnection,
    Request,
    TextMessage,
)
from wsproto.extensions import PerMessageDeflate
from wsproto.utilities import RemoteProtocolError

if TYPE_CHECKING:
    from types import FrameType

#: Largest message (in payload bytes) that is echoed back; larger ones get 1009.
MAX_MESSAGE_SIZE = 16 * 1024 * 1024
#: Bytes read from a socket per ``recv`` call.
RECV_SIZE = 65536
#: Close code for "message too big" (RFC 6455, section 7.4.1).
CLOSE_MESSAGE_TOO_BIG = 1009


@dataclass
class Client:
    """Per-connection state: the wsproto connection plus I/O buffers."""

    sock: socket.socket
    ws: WSConnection = field(
        default_factory=lambda: WSConnection(ConnectionType.SERVER),
    )
    outbuf: bytearray = field(default_factory=bytearray)
    text_parts: list[str] = field(default_factory=list)
    bytes_parts: list[bytes | bytearray] = field(default_factory=list)
    size: int = 0
    close_after_flush: bool = False
    dead: bool = False


class EchoServer:
    """A single-threaded, selector-driven WebSocket echo server."""

    def __init__(self, host: str, port: int) -> None:
        """Bind and listen on ``host``:``port`` (``port`` 0 picks a free one)."""
        self.sel = selectors.DefaultSelector()
        self.listener = socket.create_server((host, port), backlog=128)
        self.listener.setblocking(False)
        self.sel.register(self.listener, selectors.EVENT_READ, None)
        self.running = True

    @property
    def port(self) -> int:
        """The TCP port actually bound."""
        return int(self.listener.getsockname()[1])

    def serve_forever(self) -> None:
        """Run the event loop until :meth:`stop` is called."""
        while self.running:
            for key, mask in self.sel.select(timeout=0.5):
                if key.data is None:
                    self._accept()
                    continue
                client: Client = key.data
                if mask & selectors.EVENT_READ and not client.dead:
                    self._on_readable(client)
                if mask & selectors.EVENT_WRITE and not client.dead:
                    self._flush(client)
        for key in list(self.sel.get_map().values()):
            key.fileobj.close()  # type: ignore[union-attr]
        self.sel.close()

    def stop(self) -> None:
        """Ask the event loop to finish after the current iteration."""
        self.running = False

    # -- connection handling -------------------------------------------------

    def _accept(self) -> None:
        try:
            sock, _addr = self.listener.accept()
        except BlockingIOError:
            return
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sel.register(sock, selectors.EVENT_READ, Client(sock))

    def _on_readable(self, client: Client) -> None:
        try:
            data: bytes | None = client.sock.recv(RECV_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._drop(client)
            return
        if not data:
            data = None  # EOF: wsproto reports an abnormal closure (1006)
        if client.ws.state is ConnectionState.CLOSED:
            self._drop(client)
            return
        try:
            client.ws.receive_data(data)
            for event in client.ws.events():
                self._handle(client, event)
                if client.close_after_flush or client.dead:
                    break
        except RemoteProtocolError as exc:
            # Bad opening handshake: answer with the suggested HTTP error.
            if exc.event_hint is not None and client.ws.connection is None:
                with contextlib.suppress(Exception):  # best effort only
                    self._send(client, exc.event_hint)
            client.close_after_flush = True
        if data is None and not client.dead:
            client.close_after_flush = True
        self._flush(client)

    def _handle(self, client: Client, event: Event) -> None:
        ws = client.ws
        if isinstance(event, Request):
            self._send(client, AcceptConnection(extensions=[PerMessageDeflate()]))
        elif isinstance(event, CloseConnection):
            if ws.state in (ConnectionState.OPEN, ConnectionState.REMOTE_CLOSING):
                # Either the peer's close (REMOTE_CLOSING: echo its code) or a
                # protocol error detected by wsproto (OPEN: send that code).
                self._send(client, event.response())
            client.close_after_flush = True
        elif isinstance(event, Ping):
            self._send(client, event.response())
        elif isinstance(event, (TextMessage, BytesMessage)):
            self._on_message_part(client, event)

    def _on_message_part(self, client: Client, event: TextMessage | BytesMessage) -> None:
        if isinstance(event, TextMessage):
            client.size += len(event.data.encode("utf-8"))
            client.text_parts.append(event.data)
        else:
            client.size += len(event.data)
            client.bytes_parts.append(event.data)
        if client.size > MAX_MESSAGE_SIZE:
            close = CloseConnection(code=CLOSE_MESSAGE_TOO_BIG, reason="message too big")
            self._send(client, close)
            client.close_after_flush = True
            return
        if not event.message_finished:
            return
        reply: TextMessage | BytesMessage
        if isinstance(event, TextMessage):
            reply = TextMessage(data="".join(client.text_parts))
        else:
            reply = BytesMessage(data=b"".join(client.bytes_parts))
        client.text_parts.clear()
        client.bytes_parts.clear()
        client.size = 0
        self._send(client, reply)

    def _send(self, client: Client, event: Event) -> None:
        if client.ws.state is ConnectionState.CLOSED and not isinstance(event, RejectConnection):
            return
        client.outbuf += client.ws.send(event)

    def _flush(self, client: Client) -> None:
        while client.outbuf:
            try:
                sent = client.sock.send(client.outbuf)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                self._drop(client)
                return
            del client.outbuf[:sent]
        if client.outbuf:
            self.sel.modify(client.sock, selectors.EVENT_READ | selectors.EVENT_WRITE, client)
            return
        if client.close_after_flush:
            self._drop(client)
            return
        self.sel.modify(client.sock, selectors.EVENT_READ, client)

    def _drop(self, client: Client) -> None:
        if client.dead:
            return
        client.dead = True
        with contextlib.suppress(KeyError, ValueError):
            self.sel.unregister(client.sock)
        with contextlib.suppress(OSError):
            client.sock.shutdown(socket.SHUT_RDWR)
        client.sock.close()


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and serve until SIGINT/SIGTERM."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=9001, help="TCP port (default 9001)")
    args = parser.parse_args(argv)

    server = EchoServer(args.host, args.port)

    def _stop(_signum: int, _frame: FrameType | None) -> None:
        server.stop()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    print(f"wsproto echo server listening on ws://{args.host}:{server.port}", flush=True)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
