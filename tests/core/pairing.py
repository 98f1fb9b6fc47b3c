"""In-memory pairing of wsproto clients with a protocol :class:`Server`: no sockets.

A :class:`Network` is one :class:`Server` plus the clients attached to it. It
performs the server's actions the way an adapter would: it takes the bytes of
every flushed connection and hands them to that client's wsproto connection,
records ``CloseTransport`` (and tells the client its transport is gone), and
keeps ``RunHandler`` actions for the test to run with :meth:`Network.run_handlers`.

:func:`pair` is the short way to get one client that finished its handshake::

    p = pair(hub)
    p.send_text("hi")
    assert p.messages == ["echo: hi"]

Every client input can be fed three ways (house style, after h11's tests):
``"whole"`` (one chunk), ``"bytewise"`` (one byte at a time, draining after
each) and ``"trailing"`` (the handshake request and the first frames share one
chunk).
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import h11
from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState as WSState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Event,
    Message,
    Ping,
    Pong,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)
from wsproto.extensions import Extension
from wsproto.frame_protocol import FrameProtocol

from ikisocket_core import RESERVED_EVENTS, EventPayload, Hub, MessageKind
from ikisocket_core.protocol import (
    CloseTransport,
    Flush,
    RunHandler,
    Server,
    ServerConfig,
    ServerConnection,
)

Way = Literal["whole", "bytewise", "trailing"]
#: The three ways of feeding input, for ``pytest.mark.parametrize``.
WAYS: tuple[Way, ...] = ("whole", "bytewise", "trailing")


@dataclass(frozen=True)
class Seen:
    """One hub event as a listener saw it."""

    name: str
    uuid: str
    data: bytes
    kind: MessageKind
    error: BaseException | None


def record(hub: Hub, events: Iterable[str] = RESERVED_EVENTS) -> list[Seen]:
    """Log every occurrence of ``events`` on ``hub``, in order."""
    log: list[Seen] = []

    def listener(ep: EventPayload) -> None:
        log.append(Seen(ep.name, ep.socket_uuid, ep.data, ep.kind, ep.error))

    for event in sorted(events):
        hub.on(event, listener)
    return log


def names(log: Sequence[Seen]) -> list[str]:
    """The event names of a log, in order."""
    return [seen.name for seen in log]


def frame(
    opcode: int,
    payload: bytes = b"",
    *,
    fin: bool = True,
    rsv: int = 0,
    mask: bool = True,
    length: int | None = None,
) -> bytes:
    """Encode one client frame by hand (RFC 6455 section 5.2), valid or not.

    Args:
        opcode: The opcode, any 4-bit value.
        payload: The payload (masked here when ``mask``).
        fin: The FIN bit.
        rsv: The three RSV bits as a number 0-7.
        mask: Whether to mask (clients must, RFC 6455 5.3).
        length: The announced payload length, when it should differ.
    """
    size = len(payload) if length is None else length
    head = bytearray([(0x80 if fin else 0) | (rsv << 4) | opcode])
    bit = 0x80 if mask else 0
    if size < 126:
        head.append(bit | size)
    elif size < 1 << 16:
        head.append(bit | 126)
        head += struct.pack("!H", size)
    else:
        head.append(bit | 127)
        head += struct.pack("!Q", size)
    if not mask:
        return bytes(head) + payload
    key = os.urandom(4)
    head += key
    return bytes(head) + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


class Pair:
    """One client attached to a :class:`Network`'s server.

    Attributes:
        conn: The server's connection object.
        ws: The wsproto client (``None`` for raw HTTP clients).
        received: Every byte the server wrote to this client.
        sent: How many bytes the client sent.
        events: wsproto events the client saw, oldest first.
        messages: Whole messages the client received (``str`` or ``bytes``).
        transport_closed: Whether the server asked to close the transport.
        paused: While set, flushed bytes are left in the server (a paused
            transport: ``conn.take()`` is not called).
        auto_pong: Whether the client answers the server's pings (default).
    """

    def __init__(self, net: Network, conn: ServerConnection, way: Way, *, websocket: bool) -> None:
        self.net = net
        self.conn = conn
        self.way: Way = way
        self.ws = WSConnection(ConnectionType.CLIENT) if websocket else None
        self.received = bytearray()
        self.sent = 0
        self.events: list[Event] = []
        self.messages: list[str | bytes] = []
        self.transport_closed = False
        self.paused = False
        self.auto_pong = True
        self._parts: list[Any] = []
        self._pending = b""
        self._early = FrameProtocol(client=True, extensions=[])

    # -- client to server -----------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        """Send raw bytes to the server (the way this pair feeds), draining after each chunk."""
        if self._pending:
            data, self._pending = self._pending + data, b""
        self.sent += len(data)
        if self.way == "bytewise":
            for i in range(len(data)):
                if self.transport_closed:
                    return
                self.net.server.receive_data(self.conn, data[i : i + 1])
                self.net.drain()
        else:
            # As the socket adapters do: the connection's own output comes back at once
            # when it is all there is to do (else the drain below writes it).
            out = self.net.server.receive_data(self.conn, data, take=not self.paused)
            if out is not None:
                self.deliver(b"".join(out))
            self.net.drain()

    def send(self, event: Event) -> None:
        """Encode ``event`` with the client and send it."""
        assert self.ws is not None
        if self.ws.state is WSState.CONNECTING or self._early._outbound_opcode is not None:
            # Frames sent before the 101 arrived (the "trailing" way), and the rest
            # of a message begun then.
            data = self._encode_early(event)
        else:
            data = self.ws.send(event)
        self.feed(data)

    def _encode_early(self, event: Event) -> bytes:
        if isinstance(event, Message):
            return bytes(self._early.send_data(event.data, event.message_finished))
        if isinstance(event, Ping):
            return bytes(self._early.ping(event.payload))
        if isinstance(event, Pong):
            return bytes(self._early.pong(event.payload))
        assert isinstance(event, CloseConnection)
        return bytes(self._early.close(event.code, event.reason))

    def send_text(self, text: str, *, finished: bool = True) -> None:
        """Send a text message (or a fragment of one)."""
        self.send(TextMessage(data=text, message_finished=finished))

    def send_bytes(self, data: bytes, *, finished: bool = True) -> None:
        """Send a binary message (or a fragment of one)."""
        self.send(BytesMessage(data=data, message_finished=finished))

    def ping(self, payload: bytes = b"") -> None:
        """Send a ping."""
        self.send(Ping(payload=payload))

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Start the closing handshake from the client."""
        self.send(CloseConnection(code=code, reason=reason))

    def flush_handshake(self) -> None:
        """Send a handshake held back for the ``trailing`` way on its own."""
        if self._pending:
            self.feed(b"")

    # -- server to client -----------------------------------------------------------------

    def deliver(self, data: bytes) -> None:
        """Bytes the server wrote: give them to the client."""
        self.received += data
        if self.ws is None or not data or self.ws.state is WSState.CLOSED:
            return
        self.ws.receive_data(data)
        self._collect()

    def deliver_eof(self) -> None:
        """The server closed the transport."""
        self.transport_closed = True
        if self.ws is not None and self.ws.state is not WSState.CLOSED:
            self.ws.receive_data(None)
            self._collect()

    def _collect(self) -> None:
        assert self.ws is not None
        for event in self.ws.events():
            self.events.append(event)
            if isinstance(event, Message):
                self._parts.append(event.data)
                if event.message_finished:
                    first = self._parts[0]
                    whole: str | bytes = (
                        "".join(self._parts)
                        if isinstance(first, str)
                        else b"".join(bytes(p) for p in self._parts)
                    )
                    self.messages.append(whole)
                    self._parts = []
            elif isinstance(event, Ping) and self.auto_pong and self.ws.state is WSState.OPEN:
                # A client answers pings, as every client library does.
                pong = self.ws.send(event.response())
                self.sent += len(pong)
                self.net.server.receive_data(self.conn, pong)
                self.net.pending_drain = True

    # -- what the client saw ---------------------------------------------------------------

    def of(self, kind: type[Event]) -> list[Any]:
        """The client events of one type."""
        return [e for e in self.events if isinstance(e, kind)]

    @property
    def accepted(self) -> AcceptConnection | None:
        """The handshake answer, when it was a 101."""
        found = self.of(AcceptConnection)
        return found[0] if found else None

    @property
    def rejection(self) -> tuple[int, dict[bytes, bytes], bytes] | None:
        """``(status, headers, body)`` when the handshake was refused."""
        found = self.of(RejectConnection)
        if not found:
            return None
        body = b"".join(e.data for e in self.of(RejectData))
        return found[0].status_code, dict(found[0].headers), body

    @property
    def close_frames(self) -> list[CloseConnection]:
        """The close events the client saw (1006 means the transport dropped)."""
        return self.of(CloseConnection)

    def http_response(self, method: str = "GET") -> tuple[int, dict[bytes, bytes], bytes]:
        """Parse what the server wrote as one HTTP response (for raw HTTP clients)."""
        client = h11.Connection(h11.CLIENT)
        client.send(h11.Request(method=method, target="/", headers=[("host", "x")]))
        client.send(h11.EndOfMessage())
        client.receive_data(bytes(self.received))
        if self.transport_closed:
            client.receive_data(b"")
        status, headers, body = 0, {}, b""
        while True:
            event = client.next_event()
            if isinstance(event, h11.Response):
                status, headers = event.status_code, dict(event.headers)
            elif isinstance(event, h11.Data):
                body += event.data
            elif event is h11.NEED_DATA or isinstance(
                event, (h11.EndOfMessage, h11.ConnectionClosed)
            ):
                return status, headers, body


class Network:
    """A :class:`Server` and the clients attached to it, driven like an adapter would."""

    def __init__(self, hub: Hub, config: ServerConfig | None = None, **options: Any) -> None:
        self.hub = hub
        self.server = Server(hub, config, **options)
        self.now = 0.0
        self.pairs: dict[ServerConnection, Pair] = {}
        self.handlers: list[RunHandler] = []
        self.closed: list[ServerConnection] = []
        self.actions: list[object] = []
        self.pending_drain = False

    def attach(
        self, way: Way = "whole", *, websocket: bool = True, host: str | None = "127.0.0.1"
    ) -> Pair:
        """Accept a new transport from ``host`` (``None``: no address); nothing is sent yet.

        What the server wrote at once (a refusal past ``max_handshakes``) is delivered.
        """
        client = None if host is None else (host, 40000 + len(self.pairs))
        conn = self.server.connect(now=self.now, client=client)
        p = Pair(self, conn, way, websocket=websocket)
        self.pairs[conn] = p
        self.drain()
        return p

    def pair(
        self,
        path: str = "/ws",
        *,
        way: Way = "whole",
        headers: Sequence[tuple[str, str]] = (),
        subprotocols: Sequence[str] = (),
        extensions: Sequence[Extension] = (),
        host: str | None = "127.0.0.1",
    ) -> Pair:
        """Attach a wsproto client and send its handshake request.

        With ``way="trailing"`` the request is held back and sent together with
        the client's first frames.
        """
        p = self.attach(way, host=host)
        assert p.ws is not None
        request = p.ws.send(
            Request(
                host="localhost",
                target=path,
                extra_headers=[(k.encode(), v.encode()) for k, v in headers],
                subprotocols=list(subprotocols),
                extensions=list(extensions),
            )
        )
        if way == "trailing":
            p._pending = request
        else:
            p.feed(request)
        return p

    def lingers(self, conn: ServerConnection) -> bool:
        """The ``linger`` of the one ``CloseTransport`` of ``conn`` so far."""
        (linger,) = [
            a.linger for a in self.actions if isinstance(a, CloseTransport) and a.connection is conn
        ]
        return linger

    def drain(self) -> None:
        """Perform the server's actions like an adapter (handlers are kept, not run)."""
        while True:
            self.pending_drain = False
            actions = self.server.drain_actions()
            self.actions.extend(actions)
            for action in actions:
                if isinstance(action, Flush):
                    for conn in action.connections:
                        p = self.pairs.get(conn)
                        if p is not None and not p.paused:
                            p.deliver(b"".join(conn.take()))
                elif isinstance(action, CloseTransport):
                    self.closed.append(action.connection)
                    p = self.pairs.get(action.connection)
                    if p is not None:
                        p.deliver_eof()
                else:
                    self.handlers.append(action)
            if not self.pending_drain:
                return

    def tick(self, now: float) -> None:
        """Move the clock to ``now``, run the server's timers and perform the actions."""
        self.now = now
        self.server.tick(now)
        self.drain()

    def run_handlers(self) -> int:
        """Run the kept ``RunHandler`` awaitables (they must await nothing), in order.

        Returns:
            How many ran.
        """
        ran = 0
        while self.handlers:
            handler = self.handlers.pop(0)
            run_to_completion(handler.awaitable)
            self.server.handler_done(handler.connection)
            self.drain()
            ran += 1
        return ran


def run_to_completion(awaitable: Any) -> None:
    """Run an awaitable that never suspends (RunHandler carries an awaitable, not a coroutine)."""
    try:
        awaitable.__await__().send(None)
    except StopIteration:
        return
    raise AssertionError("the coroutine suspended")  # pragma: no cover


def pair(
    hub: Hub,
    path: str = "/ws",
    *,
    way: Way = "whole",
    config: ServerConfig | None = None,
    headers: Sequence[tuple[str, str]] = (),
    subprotocols: Sequence[str] = (),
    extensions: Sequence[Extension] = (),
    **options: Any,
) -> Pair:
    """A new :class:`Network` on ``hub`` with one wsproto client that sent its handshake."""
    net = Network(hub, config, **options)
    return net.pair(
        path, way=way, headers=headers, subprotocols=subprotocols, extensions=extensions
    )
