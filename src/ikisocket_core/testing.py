"""Test an ikisocket application with no network: virtual clients over the real engine.

:class:`TestClient` mirrors Starlette's ``TestClient``::

    client = TestClient(hub)
    with client.websocket_connect("/ws/alice?room=1", headers={"x-token": "t"}) as ws:
        ws.send_text("hello")
        assert ws.receive_text() == "echo: hello"
    client.advance(30)  # move the fake clock (keepalive, idle timeouts)

Each virtual client is a wsproto client connected to a
:class:`~ikisocket_core.protocol.ServerConnection` through memory: the same
engine the socket adapters drive, fed the same bytes. So a unit test sees
what a socket client would: the 101 or the HTTP rejection (``404``, ``426``,
``431``...), close codes (1009, 1011, 1013...), keepalive pings (answered
unless ``ws.auto_pong`` is off) and compression when offered.

Everything happens synchronously inside the calls: when ``send_text``
returns, every listener it triggered has run and every message the hub sent
is waiting in its recipient's inbox. ``async def`` listeners run to
completion with a small built-in runner when they await nothing that needs
an event loop; otherwise pass ``run_async=asyncio.run`` or a trio runner (see
:class:`TestClient`).
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import h11
from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState as WSState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Event,
    Ping,
    Pong,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)
from wsproto.extensions import PerMessageDeflate

from ._config import CloseTransport, Flush
from ._errors import IkisocketError
from ._events import MessageKind
from ._hub import Hub
from ._socketio._polltest import PollingTestTransport, polling_transport
from ._socketio._testclient import ReceivedEvent, SocketIORefused, SocketIOTestSession, _Wire
from .protocol import Server, ServerConnection

__all__ = [
    "HTTPResponse",
    "NothingReceived",
    "PollingTestTransport",
    "ReceivedEvent",
    "SocketIORefused",
    "SocketIOTestSession",
    "TestClient",
    "WebSocketDisconnect",
    "WebSocketRejected",
    "WebSocketTestSession",
]


class WebSocketRejected(IkisocketError):
    """The server refused the connection; ``status`` is the HTTP status it answered with.

    Args:
        status: The HTTP status.
        reason: The response body.
        headers: The response headers, names in lower case (``retry-after``...).
    """

    def __init__(
        self, status: int, reason: str = "", headers: tuple[tuple[str, str], ...] = ()
    ) -> None:
        super().__init__(
            f"connection rejected with HTTP {status}" + (f": {reason}" if reason else "")
        )
        self.status = status
        self.reason = reason
        self.headers = headers


class WebSocketDisconnect(IkisocketError):
    """The server closed this virtual connection and no message is left to receive.

    Args:
        code: The close code the server sent (1006 when it dropped the transport).
        reason: The close reason.
    """

    def __init__(self, code: int, reason: str = "") -> None:
        super().__init__(
            f"server closed the connection with {code}" + (f": {reason}" if reason else "")
        )
        self.code = code
        self.reason = reason


class NothingReceived(IkisocketError, AssertionError):
    """A ``receive_*`` call found no message waiting, or one of the other kind."""


@dataclass(frozen=True, slots=True)
class HTTPResponse:
    """A plain HTTP response, from :meth:`TestClient.request`.

    Attributes:
        status: The status code.
        headers: The headers, names lower-cased.
        body: The body.
    """

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes

    @property
    def text(self) -> str:
        """The body decoded as UTF-8."""
        return self.body.decode("utf-8")


def _run_without_loop(awaitable: Awaitable[None]) -> None:
    """Run an awaitable that needs no event loop (it awaits only plain coroutines)."""
    it = awaitable.__await__()
    try:
        while True:
            if it.send(None) is not None:
                it.close()
                raise RuntimeError(
                    "an async listener awaited something that needs an event loop; "
                    "pass run_async=asyncio.run (or a trio runner) to TestClient"
                )
    except StopIteration:
        return


async def _as_coroutine(awaitable: Awaitable[None]) -> None:
    await awaitable


class WebSocketTestSession:
    """One virtual client connection, made by :meth:`TestClient.websocket_connect`.

    Use it as a context manager: leaving the block closes it with 1000 if it is
    still open.

    Attributes:
        conn: The engine's connection object for this client.
        auto_pong: Whether the client answers the server's pings (as every
            real client does); turn it off to test keepalive timeouts.
    """

    def __init__(self, client: TestClient, conn: ServerConnection, ws: WSConnection) -> None:
        self._client = client
        self.conn = conn
        self.auto_pong = True
        self._ws = ws
        self._inbox: deque[tuple[MessageKind, bytes]] = deque()
        self._close_code: int | None = None
        self._close_reason = ""
        self._client_closed = False
        self._reading = True
        self._accepted = False
        #: The server-side handle, taken at the accept: the engine lets go of it at the end.
        self._kws: Any = None
        self._rejection: tuple[int, tuple[tuple[str, str], ...], bytearray] | None = None
        self._pongs: list[bytes] = []
        #: Called with each message as it arrives instead of queueing it (a protocol
        #: spoken over this connection, such as the virtual Socket.IO client, reads them).
        self.on_message: Callable[[MessageKind, bytes], None] | None = None

    @property
    def kws(self) -> Any:
        """The server-side handle of this connection (a :class:`~ikisocket_core.Websocket`)."""
        return self._kws

    @property
    def uuid(self) -> str:
        """The connection's UUID on the server (follows re-keying)."""
        return str(self.kws.uuid)

    @property
    def close_code(self) -> int | None:
        """The close code the server sent, once it closed the connection."""
        self._client.pump()
        return self._close_code

    @property
    def close_reason(self) -> str:
        """The close reason the server sent."""
        self._client.pump()
        return self._close_reason

    @property
    def closed(self) -> bool:
        """Whether either side closed the connection (after performing queued actions)."""
        self._client.pump()
        return self._client_closed or self._close_code is not None

    @property
    def pending(self) -> int:
        """How many received messages are waiting (after performing queued actions)."""
        self._client.pump()
        return len(self._inbox)

    @property
    def pongs(self) -> list[bytes]:
        """The payloads of the pongs the server sent, oldest first."""
        self._client.pump()
        return list(self._pongs)

    def __enter__(self) -> WebSocketTestSession:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if not self.closed:
            self.close(1000)

    # -- sending ---------------------------------------------------------------------------

    def send_text(self, data: str) -> None:
        """Send a text message.

        Args:
            data: The text.
        """
        self._send(TextMessage(data=data))

    def send_bytes(self, data: bytes) -> None:
        """Send a binary message.

        Args:
            data: The bytes.
        """
        self._send(BytesMessage(data=bytes(data)))

    def send_json(self, data: Any, mode: str = "text") -> None:
        """Send a value as JSON, in a text (default) or binary message.

        Args:
            data: A JSON-serialisable value.
            mode: ``"text"`` or ``"binary"``.
        """
        encoded = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
        if mode == "binary":
            self.send_bytes(encoded.encode("utf-8"))
        else:
            self.send_text(encoded)

    def send_raw(self, data: bytes) -> None:
        """Send raw bytes as they are (a hand-made frame, garbage): the engine parses them.

        Args:
            data: The bytes.
        """
        self._check_open()
        self._client._feed(self.conn, data)

    def ping(self, data: bytes = b"") -> None:
        """Send a ping (the hub's ``ping`` listeners run; the server answers with a pong).

        Args:
            data: The ping's application data (at most 125 bytes).
        """
        self._send(Ping(payload=data))

    def pong(self, data: bytes = b"") -> None:
        """Send an unsolicited pong (the hub's ``pong`` listeners run).

        Args:
            data: The pong's application data.
        """
        self._send(Pong(payload=data))

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Close from the client side: the hub sees the peer go away (``disconnect``).

        Args:
            code: The close code.
            reason: The close reason.
        """
        if self.closed:
            return
        self._client_closed = True
        self._send(CloseConnection(code=code, reason=reason), check=False)

    def abort(self) -> None:
        """Drop the transport without a close frame (the hub sees code 1006)."""
        if self.closed:
            return
        self._client_closed = True
        self._client.server.connection_lost(self.conn)
        self._client.pump()

    def send_eof(self) -> None:
        """Half-close the client's side without a close frame (the hub sees code 1006)."""
        if self.closed:
            return
        self._client_closed = True
        self._client.server.receive_eof(self.conn)
        self._client.pump()

    def stop_reading(self) -> None:
        """Stop taking the server's output, as a slow client does (``max_queue`` then applies)."""
        self._reading = False

    def resume_reading(self) -> None:
        """Take the server's output again, starting with what waited."""
        self._reading = True
        if self.conn.buffered:
            self.deliver(b"".join(self.conn.take()))
        self._client.pump()

    # -- receiving -------------------------------------------------------------------------

    def receive(self) -> tuple[MessageKind, bytes]:
        """Take the oldest waiting message.

        Returns:
            Its kind and data.

        Raises:
            WebSocketDisconnect: Nothing is waiting and the server closed the connection.
            NothingReceived: Nothing is waiting.
        """
        self._client.pump()
        if self._inbox:
            return self._inbox.popleft()
        if self._close_code is not None:
            raise WebSocketDisconnect(self._close_code, self._close_reason)
        raise NothingReceived("no message is waiting for this client")

    def receive_text(self) -> str:
        """Take the oldest waiting message, which must be text.

        Returns:
            The text.

        Raises:
            NothingReceived: Nothing is waiting, or it is binary.
            WebSocketDisconnect: Nothing is waiting and the server closed the connection.
        """
        return self._receive(MessageKind.TEXT).decode("utf-8")

    def receive_bytes(self) -> bytes:
        """Take the oldest waiting message, which must be binary.

        Returns:
            The bytes.

        Raises:
            NothingReceived: Nothing is waiting, or it is text.
            WebSocketDisconnect: Nothing is waiting and the server closed the connection.
        """
        return self._receive(MessageKind.BINARY)

    def receive_json(self, mode: str = "text") -> Any:
        """Take the oldest waiting message, which must be JSON in a text (or binary) message.

        Args:
            mode: ``"text"`` or ``"binary"``.

        Returns:
            The parsed value.
        """
        kind = MessageKind.BINARY if mode == "binary" else MessageKind.TEXT
        return json.loads(self._receive(kind))

    def _receive(self, kind: MessageKind) -> bytes:
        got, data = self.receive()
        if got is not kind:
            self._inbox.appendleft((got, data))
            raise NothingReceived(f"expected a {kind.name} message, the next one is {got.name}")
        return data

    # -- the wire --------------------------------------------------------------------------

    def _send(self, event: Event, *, check: bool = True) -> None:
        if check:
            self._check_open()
        self._client._feed(self.conn, self._ws.send(event))

    def _check_open(self) -> None:
        if self._client_closed or self._close_code is not None:
            raise WebSocketDisconnect(self._close_code or 1000, self._close_reason)

    def deliver(self, data: bytes) -> None:
        """Bytes from the server (the client's side of a flush)."""
        ws = self._ws
        ws.receive_data(data)
        self._process(ws)

    def transport_closed(self) -> None:
        """The server closed the transport."""
        ws = self._ws
        if ws.state is not WSState.CLOSED:
            ws.receive_data(None)
            self._process(ws)

    def _process(self, ws: WSConnection) -> None:
        for event in ws.events():
            # Flushes arrive whole and the server never fragments: one event, one message.
            if isinstance(event, (TextMessage, BytesMessage)):
                if isinstance(event, TextMessage):
                    message = (MessageKind.TEXT, event.data.encode("utf-8"))
                else:
                    message = (MessageKind.BINARY, bytes(event.data))
                if self.on_message is None:
                    self._inbox.append(message)
                else:
                    self.on_message(*message)
            elif isinstance(event, Ping):
                if self.auto_pong and ws.state is WSState.OPEN:
                    self._client._feed(self.conn, ws.send(event.response()))
            elif isinstance(event, Pong):
                self._pongs.append(bytes(event.payload))
            elif isinstance(event, CloseConnection):
                if not self._client_closed:
                    # The server closed it (or dropped it: 1006).
                    self._close_code = int(event.code)
                    self._close_reason = event.reason or ""
                if ws.state is WSState.REMOTE_CLOSING:
                    self._client._feed(self.conn, ws.send(event.response()))
            elif isinstance(event, AcceptConnection):
                self._accepted = True
                self._kws = self.conn.kws
            elif isinstance(event, RejectConnection):
                head = tuple((k.decode("latin-1"), v.decode("latin-1")) for k, v in event.headers)
                self._rejection = (event.status_code, head, bytearray())
            elif isinstance(event, RejectData):  # pragma: no branch - nothing else arrives
                assert self._rejection is not None
                self._rejection[2].extend(event.data)


class _HTTPPeer:
    """A plain HTTP client, for :meth:`TestClient.request`."""

    def __init__(self) -> None:
        self.h11 = h11.Connection(h11.CLIENT)
        self.received = bytearray()
        self.closed = False

    def deliver(self, data: bytes) -> None:
        self.received += data

    def transport_closed(self) -> None:
        self.closed = True


class TestClient:
    """Drive a :class:`~ikisocket_core.Hub` with virtual clients, over the engine, without sockets.

    Args:
        hub: The application's hub. The client becomes its driver: do not run
            an adapter on the same hub at the same time.
        run_async: Runs one coroutine to completion, for ``async def`` listeners
            that await an event loop's primitives: ``asyncio.run``, or
            ``lambda coro: trio.run(lambda: coro)``. By default a loop-free
            runner is used.
        start_time: The fake clock's first reading.
        listener_clock: A clock to time plain listeners with, as drivers do
            (``time.perf_counter``, or a fake one), so that one slower than
            ``slow_listener_threshold`` is logged; by default they are not timed.
        **limits: :class:`~ikisocket_core.protocol.ServerConfig` fields
            (``max_message_size``, ``max_queue``, ``backpressure``,
            ``ping_interval`` ...), as an adapter takes them.

    Attributes:
        server: The engine the virtual clients talk to (its ``stats``, ``config``).
    """

    __test__ = False  # not a pytest test class

    def __init__(
        self,
        hub: Hub,
        *,
        run_async: Callable[[Any], object] | None = None,
        start_time: float = 0.0,
        listener_clock: Callable[[], float] | None = None,
        **limits: Any,
    ) -> None:
        self.hub = hub
        self.server = Server(hub, clock=listener_clock, **limits)
        self._run_async = run_async or _run_without_loop
        self._now = start_time
        self._port = 50000
        self.server.tick(start_time)
        self.pump()

    @property
    def now(self) -> float:
        """The fake clock's reading."""
        return self._now

    def websocket_connect(
        self,
        path: str,
        *,
        headers: Mapping[str, str] | Iterable[tuple[str, str]] | None = None,
        cookies: Mapping[str, str] | None = None,
        subprotocols: Iterable[str] = (),
        origin: str | None = None,
        compression: bool = False,
    ) -> WebSocketTestSession:
        """Open a virtual connection to ``path`` (which may carry a query string).

        Args:
            path: The request target, e.g. ``"/ws/alice?room=1"``.
            headers: Extra request headers.
            cookies: Cookies to send in a ``Cookie`` header.
            subprotocols: Subprotocols to offer.
            origin: An ``Origin`` header, as a browser sends.
            compression: Offer permessage-deflate.

        Returns:
            The session; its route callback and ``connect`` listeners have run.

        Raises:
            WebSocketRejected: The server answered with an HTTP status instead of 101.
        """
        extra: list[tuple[str, str]] = []
        if headers is not None:
            extra.extend(headers.items() if isinstance(headers, Mapping) else headers)
        if cookies:
            extra.append(("cookie", "; ".join(f"{k}={v}" for k, v in cookies.items())))
        if origin is not None:
            extra.append(("origin", origin))
        ws = WSConnection(ConnectionType.CLIENT)
        conn = self._connect()
        session = WebSocketTestSession(self, conn, ws)
        conn.transport = session
        request = Request(
            host="testserver",
            target=path,
            extra_headers=[(k.encode("latin-1"), v.encode("latin-1")) for k, v in extra],
            subprotocols=list(subprotocols),
            extensions=[PerMessageDeflate()] if compression else [],
        )
        self._feed(conn, ws.send(request))
        if session._rejection is not None:
            status, head, body = session._rejection
            raise WebSocketRejected(status, body.decode("utf-8", "replace"), head)
        assert session._accepted  # the engine answers a whole request at once
        return session

    def socketio_connect(
        self,
        path: str = "/socket.io/",
        *,
        namespace: str = "/",
        auth: dict[str, Any] | None = None,
        headers: Mapping[str, str] | Iterable[tuple[str, str]] | None = None,
        origin: str | None = None,
        transport: str = "websocket",
    ) -> SocketIOTestSession:
        """Open a virtual Socket.IO session and join ``namespace``.

        Args:
            path: The mount's path; a query string may follow.
            namespace: The namespace to join.
            auth: The ``CONNECT`` payload (socket.io-client's ``auth``).
            headers: Extra request headers.
            origin: An ``Origin`` header, as a browser sends.
            transport: ``"websocket"``, or ``"polling"`` for HTTP long-polling
                (``session.ws.upgrade()`` then moves it to a WebSocket).

        Returns:
            The session, connected: the ``connect`` listeners have run.

        Raises:
            WebSocketRejected: The server refused the WebSocket request.
            SocketIORefused: The server refused the namespace (``CONNECT_ERROR``).
        """
        if transport == "polling":
            pairs = list(headers.items() if isinstance(headers, Mapping) else headers or ())
            pairs += [("origin", origin)] if origin is not None else []
            return SocketIOTestSession._join(
                _Wire(self, polling_transport(self, path, pairs)), namespace, auth
            )
        target, _, query = path.partition("?")
        extra = "&" + query if query else ""
        ws = self.websocket_connect(
            f"{target}?EIO=4&transport=websocket{extra}", headers=headers, origin=origin
        )
        wire = _Wire(self, ws)
        return SocketIOTestSession._join(wire, namespace, auth)

    def request(
        self,
        method: str,
        path: str,
        *,
        headers: Mapping[str, str] | Iterable[tuple[str, str]] | None = None,
    ) -> HTTPResponse:
        """Send a plain HTTP/1.1 request (no upgrade): static pages, 404, 426.

        Args:
            method: ``"GET"``, ``"HEAD"``...
            path: The request target.
            headers: Extra request headers.

        Returns:
            The response.
        """
        peer = _HTTPPeer()
        conn = self._connect()
        conn.transport = peer
        extra = list(headers.items() if isinstance(headers, Mapping) else headers or ())
        base = [("host", "testserver"), ("connection", "close")]
        head = h11.Request(method=method, target=path, headers=[*base, *extra])
        data = peer.h11.send(head) or b""
        data += peer.h11.send(h11.EndOfMessage()) or b""
        self._feed(conn, data)
        # The engine answers a whole request at once and closes (Connection: close).
        assert peer.closed
        peer.h11.receive_data(bytes(peer.received))
        peer.h11.receive_data(b"")
        response = peer.h11.next_event()
        assert isinstance(response, h11.Response)
        body = bytearray()
        while isinstance(event := peer.h11.next_event(), h11.Data):
            body += event.data
        return HTTPResponse(
            response.status_code,
            tuple((k.decode("latin-1"), v.decode("latin-1")) for k, v in response.headers),
            bytes(body),
        )

    def advance(self, seconds: float) -> None:
        """Move the fake clock forward, running every deadline on the way in order.

        Args:
            seconds: How far to move it.
        """
        if seconds < 0:
            raise ValueError("time only moves forward")
        target = self._now + seconds
        server = self.server
        while (due := server.next_deadline()) is not None and due <= target:
            self._now = max(self._now, due)
            server.tick(self._now)
            self.pump()
        self._now = target
        server.tick(target)
        self.pump()

    def pump(self) -> None:
        """Perform every action the engine has queued (done for you by every call)."""
        server = self.server
        while actions := server.drain_actions():
            for action in actions:
                if isinstance(action, Flush):
                    for conn in action.connections:
                        peer = conn.transport
                        if isinstance(peer, _HTTPPeer) or peer._reading:
                            peer.deliver(b"".join(conn.take()))
                elif isinstance(action, CloseTransport):
                    # As over a socket: what was written still reaches the peer, then EOF.
                    conn = action.connection
                    peer = conn.transport
                    if conn.buffered:
                        peer.deliver(b"".join(conn.take()))
                    peer.transport_closed()
                    server.connection_lost(conn)
                else:  # a RunHandler; runners such as asyncio.run want a coroutine
                    try:
                        self._run_async(_as_coroutine(action.awaitable))
                    finally:
                        server.handler_done(action.connection)

    def _connect(self) -> ServerConnection:
        self._port += 1
        return self.server.connect(now=self._now, client=("testclient", self._port))

    def _feed(self, conn: ServerConnection, data: bytes) -> None:
        self.server.receive_data(conn, data, now=self._now)
        self.pump()
