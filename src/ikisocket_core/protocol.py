"""The byte-level engine: bytes from sockets in, bytes for sockets out, still no I/O.

A :class:`Server` holds every connection of one node. An adapter (or a custom
server, or a test) feeds it what happens on the sockets and performs what it
asks for:

=====================================  ==============================================
Adapter input                          When
=====================================  ==============================================
``conn = server.connect(now=...)``      a transport was accepted
``server.receive_data(conn, data)``     bytes arrived
``server.receive_eof(conn)``            the peer half-closed (read returned EOF)
``server.connection_lost(conn)``        the transport is gone
``server.handler_done(conn)``           a :class:`RunHandler` of ``conn`` finished
``server.tick(now)``                    the clock moved (at ``next_deadline()``)
=====================================  ==============================================

After every input, call :meth:`Server.drain_actions`. It returns, in order:

* :class:`Flush` first: the connections with bytes waiting; write
  ``conn.take()`` to each (unless its transport is paused: take it later);
* :class:`CloseTransport`: close a transport once what was taken is written;
* :class:`RunHandler`: await ``awaitable`` for ``conn``; stop reading ``conn``
  until :meth:`Server.handler_done` brings ``conn.blocked`` back to 0.

The HTTP phase uses h11 (routing, 101/400/403/404/426/431/503); after the
upgrade wsproto parses and writes frames. Messages are reassembled and limited
here, the closing handshake and keepalive are timed by ``tick(now)``, and each
connection's unwritten output is bounded by ``max_queue``.
"""

from __future__ import annotations

import base64
import binascii
import struct
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Literal

import h11
from wsproto.connection import Connection as WSConnection
from wsproto.connection import ConnectionState as WSState
from wsproto.connection import ConnectionType
from wsproto.events import (
    BytesMessage,
    CloseConnection,
    Message,
    Ping,
    Pong,
    TextMessage,
)
from wsproto.extensions import Extension, PerMessageDeflate
from wsproto.handshake import server_extensions_handshake
from wsproto.utilities import generate_accept_token

from ._actions import Close, Reject, Send
from ._errors import LocalProtocolError, RemoteProtocolError, SlowConsumer
from ._events import MessageKind
from ._hub import Hub
from ._routing import Request
from ._state import ConnectionState
from ._websocket import Websocket

__all__ = [
    "CloseTransport",
    "Connection",
    "Flush",
    "KeepaliveTimeout",
    "RunHandler",
    "Server",
    "ServerAction",
    "ServerConfig",
    "ServerStats",
]

_OPEN = ConnectionState.OPEN
_TEXT = MessageKind.TEXT
_BINARY = MessageKind.BINARY
#: With compression, inflate at most this much input at a time (zip bombs).
_INFLATE_SLICE = 16 * 1024
#: The two header bytes of every short (< 126 bytes) final frame, indexed by opcode.
_SHORT_HEADS = tuple(tuple(bytes((0x80 | op, n)) for n in range(126)) for op in range(3))
_pack_head_16 = struct.Struct("!BBH").pack
_pack_head_64 = struct.Struct("!BBQ").pack


def _frame(opcode: int, payload: bytes) -> bytes:
    """Frame ``payload`` as one final, unmasked server frame (RFC 6455 section 5.2).

    Only for connections without extensions (no RSV bit is ever set): wsproto
    has no public way to frame text that is already UTF-8 without decoding it
    back to ``str`` first. Incoming frames are always parsed by wsproto.

    Args:
        opcode: 1 (text) or 2 (binary).
        payload: The application data, already UTF-8 for text.

    Returns:
        FIN + opcode, the 7-bit length or 126/127 and a 16/64-bit length, then
        the payload.
    """
    n = len(payload)
    if n < 126:
        return _SHORT_HEADS[opcode][n] + payload
    if n < 65536:
        return _pack_head_16(0x80 | opcode, 126, n) + payload
    return _pack_head_64(0x80 | opcode, 127, n) + payload


class KeepaliveTimeout(RemoteProtocolError):
    """The peer did not answer a keepalive ping within ``ping_timeout``."""

    def __init__(self, timeout: float) -> None:
        super().__init__(f"no pong within {timeout:g} s", close_code=1011)


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerConfig:
    """Limits and timings of a :class:`Server`; adapters take the same keywords.

    Attributes:
        max_message_size: Largest message accepted, in bytes (1 MiB); more
            closes the connection with 1009. ``None`` lifts the limit.
        max_queue: Outbound bytes a connection may have waiting before the
            ``backpressure`` policy applies (4 MiB). A message is always
            accepted into an empty buffer, whatever its size.
        backpressure: ``"drop"`` the message for that connection, or
            ``"close"`` the connection with 1013 ("try again later", as behind ASGI).
        ping_interval: Seconds between keepalive pings (20); ``None`` disables them.
        ping_timeout: Seconds to wait for the pong (20) before closing with 1011.
        handshake_timeout: Seconds a client has to complete its HTTP request (10).
        close_timeout: Seconds to wait for the peer's close frame (10).
        max_request_size: Largest HTTP request head, in bytes (16 KiB); 431 beyond.
        compression: Negotiate permessage-deflate (RFC 7692) when offered.
        static: Plain HTTP responses for ``GET`` paths: ``{path: (content type, body)}``.
    """

    max_message_size: int | None = 1024 * 1024
    max_queue: int = 4 * 1024 * 1024
    backpressure: Literal["drop", "close"] = "drop"
    ping_interval: float | None = 20.0
    ping_timeout: float = 20.0
    handshake_timeout: float = 10.0
    close_timeout: float = 10.0
    max_request_size: int = 16 * 1024
    compression: bool = True
    static: Mapping[str, tuple[str, bytes]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.backpressure not in ("drop", "close"):
            raise LocalProtocolError("backpressure is 'drop' or 'close'")
        for name in ("max_queue", "max_request_size"):
            if getattr(self, name) <= 0:
                raise LocalProtocolError(f"{name} must be positive")
        if self.max_message_size is not None and self.max_message_size <= 0:
            raise LocalProtocolError("max_message_size must be positive or None")
        for name in ("ping_timeout", "handshake_timeout", "close_timeout"):
            if getattr(self, name) <= 0:
                raise LocalProtocolError(f"{name} must be positive")
        if self.ping_interval is not None and self.ping_interval <= 0:
            raise LocalProtocolError("ping_interval must be positive or None")


@dataclass(slots=True)
class ServerStats:
    """Counters a :class:`Server` keeps (read them; they only grow)."""

    connections: int = 0
    upgrades: int = 0
    rejected: int = 0
    messages_in: int = 0
    bytes_in: int = 0
    frames_out: int = 0
    broadcast_encodes: int = 0
    dropped_messages: int = 0
    overflow_closes: int = 0
    protocol_errors: int = 0
    keepalive_timeouts: int = 0
    handshake_timeouts: int = 0
    close_timeouts: int = 0


class Connection:
    """One transport as the server sees it; made by :meth:`Server.connect`.

    Attributes:
        transport: The adapter's own object (socket, transport, stream); never
            touched by the server.
        client: The peer's address, as the adapter gave it.
        state: ``CONNECTING`` during HTTP, ``OPEN``, ``CLOSING`` after a close
            frame was sent, ``CLOSED``.
        kws: The hub's handle once upgraded, else ``None``.
        blocked: How many :class:`RunHandler` of this connection are running;
            the server parses no further input while it is above 0.
        buffered: Bytes waiting to be taken by :meth:`take`.
    """

    __slots__ = (
        "_deadline",
        "_frag",
        "_frag_kind",
        "_frag_size",
        "_h11",
        "_head_bytes",
        "_held",
        "_max_queue",
        "_next_ping",
        "_out",
        "_overflowing",
        "_pong_due",
        "_ws",
        "blocked",
        "buffered",
        "client",
        "compressed",
        "dirty",
        "kws",
        "scheme",
        "state",
        "transport",
    )

    def __init__(
        self,
        client: tuple[str, int] | None,
        scheme: str,
        h11conn: h11.Connection,
        max_queue: int = 4 * 1024 * 1024,
    ) -> None:
        self.transport: Any = None
        self._max_queue = max_queue
        self.client = client
        self.scheme = scheme
        self.state = ConnectionState.CONNECTING
        self.kws: Websocket | None = None
        self.blocked = 0
        self.buffered = 0
        self.compressed = False
        self.dirty = False
        self._out: list[bytes] = []
        self._h11: h11.Connection | None = h11conn
        self._head_bytes = 0
        self._held = bytearray()
        self._ws: WSConnection | None = None
        self._deadline: float | None = None
        self._next_ping: float | None = None
        self._pong_due: float | None = None
        self._overflowing = False
        self._frag: list[bytes] | None = None
        self._frag_kind = _TEXT
        self._frag_size = 0

    def __repr__(self) -> str:
        return f"<Connection {self.client} {self.state.value}>"

    @property
    def can_read(self) -> bool:
        """Whether the driver should read more input from this connection now.

        ``False`` while its ``async def`` listeners run (``blocked``) and while
        its unwritten output exceeds ``max_queue`` (a peer that sends but never
        reads); read again once it is ``True`` (after :meth:`take` or
        :meth:`Server.handler_done`).
        """
        return self.blocked == 0 and self.buffered <= self._max_queue

    def take(self) -> list[bytes]:
        """Take every chunk waiting to be written, oldest first.

        Returns:
            The chunks (write them in order, e.g. with ``writelines``).
        """
        out = self._out
        self._out = []
        self.buffered = 0
        self._overflowing = False
        return out


@dataclass(frozen=True, slots=True)
class Flush:
    """These connections have bytes waiting: write ``conn.take()`` to each."""

    connections: tuple[Connection, ...]


@dataclass(frozen=True, slots=True)
class CloseTransport:
    """Close this connection's transport after writing what was taken from it."""

    connection: Connection


@dataclass(frozen=True, slots=True)
class RunHandler:
    """Await ``awaitable`` (it never raises), then call :meth:`Server.handler_done`."""

    connection: Connection | None
    awaitable: Awaitable[None]


_new = object.__new__
_set_flush_connections = Flush.__dict__["connections"].__set__

#: What :meth:`Server.drain_actions` returns.
ServerAction = Flush | CloseTransport | RunHandler


class Server:
    """Every connection of one node, from the first request byte to the last close frame.

    Args:
        hub: The application. The server becomes its driver (it installs the
            hub's wakeup).
        config: Limits and timings; keywords given here override it.
        **options: :class:`ServerConfig` fields.
    """

    def __init__(self, hub: Hub, config: ServerConfig | None = None, **options: Any) -> None:
        if options:
            base = config or ServerConfig()
            merged = {f: getattr(base, f) for f in base.__dataclass_fields__}
            merged.update(options)
            config = ServerConfig(**merged)
        self.config = config or ServerConfig()
        self.hub = hub
        self.stats = ServerStats()
        self._conns: dict[Connection, None] = {}
        self._dirty: list[Connection] = []
        self._actions: list[ServerAction] = []
        self._now = 0.0
        self._ping_seq = 0
        self._wakeup: Any = None
        hub.set_wakeup(self._hub_woke)

    # -- inputs ---------------------------------------------------------------------------

    def connect(
        self,
        *,
        now: float,
        client: tuple[str, int] | None = None,
        scheme: str = "ws",
        transport: Any = None,
    ) -> Connection:
        """A transport was accepted; start its HTTP phase and handshake timer.

        Args:
            now: The current monotonic time.
            client: The peer's ``(host, port)``.
            scheme: ``"ws"``, or ``"wss"`` behind TLS.
            transport: The adapter's object, stored as ``conn.transport``.

        Returns:
            The connection to pass to later inputs.
        """
        conn = Connection(
            client,
            scheme,
            h11.Connection(h11.SERVER, max_incomplete_event_size=self.config.max_request_size),
            self.config.max_queue,
        )
        conn.transport = transport
        conn._deadline = now + self.config.handshake_timeout
        self._now = max(self._now, now)
        self._conns[conn] = None
        self.stats.connections += 1
        return conn

    def receive_data(self, conn: Connection, data: bytes, now: float | None = None) -> None:
        """Bytes arrived on ``conn``. Never raises because of what the peer sent.

        After calling this, you must call :meth:`drain_actions`.

        Args:
            conn: The connection.
            data: The bytes (must not be empty; use :meth:`receive_eof`).
            now: The current monotonic time, when the driver has it at hand:
                activity is then stamped exactly (``idle_timeout``).
        """
        if now is not None:
            self._now = now
        if not data or conn.state is ConnectionState.CLOSED:
            return
        self.stats.bytes_in += len(data)
        if conn._ws is not None:
            if conn.compressed:
                conn._held += data
                self._feed_held(conn)
            else:
                conn._ws.receive_data(data)
                self._process_frames(conn)
        else:
            assert conn._h11 is not None
            conn._head_bytes += len(data)
            conn._h11.receive_data(data)
            self._process_http(conn)

    def receive_eof(self, conn: Connection) -> None:
        """The peer half-closed its side; the connection ends (1006 without a close frame).

        After calling this, you must call :meth:`drain_actions`.

        Args:
            conn: The connection.
        """
        self._end(conn, 1006, "", None)
        self._close_transport(conn)

    def connection_lost(self, conn: Connection, error: BaseException | None = None) -> None:
        """The transport is gone; forget the connection.

        After calling this, you must call :meth:`drain_actions`.

        Args:
            conn: The connection.
            error: The transport error, if any.
        """
        self._end(conn, 1006, "", error)
        conn.state = ConnectionState.CLOSED
        conn._out = []
        conn.buffered = 0
        self._conns.pop(conn, None)

    def handler_done(self, conn: Connection | None) -> None:
        """A :class:`RunHandler` of ``conn`` finished; parse input held back meanwhile.

        After calling this, you must call :meth:`drain_actions`.

        Args:
            conn: The connection the handler ran for (``None`` for none).
        """
        if conn is None or conn.blocked == 0:
            return
        conn.blocked -= 1
        if conn.blocked == 0 and conn._ws is not None and conn.state is not ConnectionState.CLOSED:
            self._process_frames(conn)
            self._feed_held(conn)

    def tick(self, now: float) -> None:
        """Run the timers: handshake, keepalive, closing handshake; and the hub's.

        After calling this, you must call :meth:`drain_actions`.

        Args:
            now: The current monotonic time.
        """
        self._now = now
        cfg = self.config
        for conn in tuple(self._conns):
            state = conn.state
            if state is ConnectionState.CONNECTING:
                if conn._deadline is not None and now >= conn._deadline:
                    self.stats.handshake_timeouts += 1
                    conn.state = ConnectionState.CLOSED
                    self._close_transport(conn)
            elif state is ConnectionState.CLOSING:
                if conn._deadline is None:
                    # Stamped here: the engine only knows the time when it is told.
                    conn._deadline = now + cfg.close_timeout
                elif now >= conn._deadline:
                    self.stats.close_timeouts += 1
                    self._end(conn, 1006, "close timeout", None)
                    self._close_transport(conn)
            elif state is _OPEN and cfg.ping_interval is not None:
                if conn._pong_due is not None:
                    if now >= conn._pong_due:
                        self.stats.keepalive_timeouts += 1
                        self._fail(conn, KeepaliveTimeout(cfg.ping_timeout))
                elif conn._next_ping is None:
                    conn._next_ping = now + cfg.ping_interval
                elif now >= conn._next_ping and conn._ws is not None:
                    self._ping_seq = (self._ping_seq + 1) & 0xFFFFFFFF
                    self._write_control(
                        conn, conn._ws.send(Ping(payload=struct.pack("!I", self._ping_seq)))
                    )
                    conn._pong_due = now + cfg.ping_timeout
        self.hub.tick(now)

    def shutdown(self, code: int = 1001, reason: str = "server shutting down") -> None:
        """Begin a graceful shutdown: refuse new connections, close every open one.

        Open connections get a close frame with ``code`` (their ``close`` events
        fire); connections still in their HTTP phase are dropped at once (a
        browser's spare pre-connections would otherwise hold the shutdown for
        ``handshake_timeout``). The adapter then keeps pumping until every
        connection is gone, at most ``close_timeout``. After calling this, you
        must call :meth:`drain_actions`.

        Args:
            code: The close code (1001 "going away").
            reason: The close reason.
        """
        self.hub.stop_accepting()
        self.hub.close_all(code, reason)
        for conn in tuple(self._conns):
            if conn.state is ConnectionState.CONNECTING:
                self._close_transport(conn)

    def next_deadline(self) -> float | None:
        """When :meth:`tick` next has work to do, or ``None``.

        Returns:
            A time on the clock given to :meth:`tick` and :meth:`connect`.
        """
        best = self.hub.next_deadline()
        for conn in self._conns:
            if conn.state is _OPEN:
                if conn._pong_due is not None:
                    due: float | None = conn._pong_due
                elif self.config.ping_interval is None:
                    continue
                else:
                    due = conn._next_ping if conn._next_ping is not None else self._now
            else:
                due = conn._deadline if conn._deadline is not None else self._now
            if due is not None and (best is None or due < best):
                best = due
        return best

    def set_wakeup(self, callback: Any) -> None:
        """Register what to call when actions appear outside an input call.

        Async listeners and background jobs (``hub.broadcast`` from a timer)
        queue work while no input is running; the server then calls
        ``callback()`` once so the adapter can schedule :meth:`drain_actions`.

        Args:
            callback: A plain function, or ``None``.
        """
        self._wakeup = callback

    # -- output ---------------------------------------------------------------------------

    def drain_actions(self) -> list[ServerAction]:
        """Everything to do now: a :class:`Flush` first, then closes and handlers, in order.

        Returns:
            The actions; the list is the caller's.
        """
        if self.hub._queue:
            self._pump_hub()
        actions = self._actions
        self._actions = []
        dirty = self._dirty
        if dirty:
            self._dirty = []
            for conn in dirty:
                conn.dirty = False
            flush: Flush = _new(Flush)  # Flush(tuple(dirty)), without the frozen __init__
            _set_flush_connections(flush, tuple(dirty))
            actions.insert(0, flush)
        return actions

    @property
    def connections(self) -> tuple[Connection, ...]:
        """Every connection the server holds (any state)."""
        return tuple(self._conns)

    # -- HTTP phase -----------------------------------------------------------------------

    def _process_http(self, conn: Connection) -> None:
        h = conn._h11
        assert h is not None
        try:
            event = h.next_event()
        except h11.RemoteProtocolError as exc:
            status = exc.error_status_hint
            self._respond(conn, status if status in (400, 431) else 400, "bad request", ())
            return
        if event is h11.NEED_DATA:
            return
        if not isinstance(event, h11.Request):  # pragma: no cover - h11 yields a Request first
            self._respond(conn, 400, "bad request", ())
            return
        # h11 limits only an incomplete head; one that arrived whole is measured here.
        if conn._head_bytes - len(h.trailing_data[0]) > self.config.max_request_size:
            self._respond(conn, 431, "request header fields too large", ())
            return
        self._handle_request(conn, event)

    def _handle_request(self, conn: Connection, req: h11.Request) -> None:
        if not req.target.startswith(b"/"):
            # Only the origin-form names a route here ("*", "http://host/ws" do not).
            self._respond(conn, 400, "the request target must be a path", ())
            return
        request = Request.from_target(
            req.target, req.headers, client=conn.client, scheme=conn.scheme
        )
        headers = request.headers
        route = self.hub.match(request.path)
        upgrade = "websocket" in headers.get("upgrade", "").lower() and any(
            t.lower() == "upgrade" for t in headers.get_list("connection")
        )
        if req.method != b"GET" or not upgrade:
            if route is not None:
                self._respond(
                    conn,
                    426,
                    "this is a WebSocket endpoint: upgrade required",
                    (("upgrade", "websocket"), ("sec-websocket-version", "13")),
                )
            elif req.method in (b"GET", b"HEAD") and request.path in self.config.static:
                ctype, body = self.config.static[request.path]
                self._respond(
                    conn, 200, body, (("content-type", ctype),), head=req.method == b"HEAD"
                )
            else:
                self._respond(conn, 404, "not found", ())
            return
        if headers.get("sec-websocket-version") != "13":
            self._respond(
                conn, 426, "unsupported WebSocket version", (("sec-websocket-version", "13"),)
            )
            return
        key = headers.get("sec-websocket-key", "")
        try:
            valid_key = len(base64.b64decode(key, validate=True)) == 16
        except (binascii.Error, ValueError):
            valid_key = False
        if not valid_key:
            self._respond(conn, 400, "missing or invalid Sec-WebSocket-Key", ())
            return
        result = self.hub.open(request, conn=conn)
        if isinstance(result, Reject):
            self.stats.rejected += 1
            self._respond(conn, result.status, result.reason or "rejected", result.headers)
            return
        self._accept(conn, req, result, key)

    def _accept(self, conn: Connection, req: h11.Request, kws: Websocket, key: str) -> None:
        h = conn._h11
        assert h is not None
        response_headers: list[tuple[bytes, bytes]] = [
            (b"upgrade", b"websocket"),
            (b"connection", b"Upgrade"),
            (b"sec-websocket-accept", generate_accept_token(key.encode("ascii"))),
        ]
        if kws.subprotocol is not None:
            response_headers.append((b"sec-websocket-protocol", kws.subprotocol.encode()))
        extensions: list[Extension] = []
        offers = kws.headers.get_list("sec-websocket-extensions") if self.config.compression else []
        if offers:
            deflate = PerMessageDeflate()
            try:
                accepted = server_extensions_handshake(offers, [deflate])
            except ValueError:  # RFC 7692 5: decline an offer with invalid parameters
                accepted = None
            if accepted:
                response_headers.append((b"sec-websocket-extensions", accepted))
                extensions.append(deflate)
        data = h.send(
            h11.InformationalResponse(
                status_code=101, headers=response_headers, reason=b"Switching Protocols"
            )
        )
        trailing, _ = h.trailing_data
        conn._h11 = None
        conn._deadline = None
        conn.kws = kws
        conn.compressed = bool(extensions)
        conn._ws = WSConnection(ConnectionType.SERVER, extensions)
        conn.state = _OPEN
        self.stats.upgrades += 1
        # Nothing was written yet (hub actions are converted later): the 101 goes first.
        self._write_control(conn, data or b"")
        if trailing:
            self.stats.bytes_in -= len(trailing)  # counted once already, as they arrived
            self.receive_data(conn, bytes(trailing))

    def _respond(
        self,
        conn: Connection,
        status: int,
        body: str | bytes,
        headers: tuple[tuple[str, str], ...] | list[tuple[str, str]],
        *,
        head: bool = False,
    ) -> None:
        # The body is exactly the rejection's reason, as the ASGI adapter sends it.
        payload = body.encode("utf-8") if isinstance(body, str) else body
        all_headers = [
            ("content-length", str(len(payload))),
            ("connection", "close"),
            *headers,
        ]
        if not any(name.lower() == "content-type" for name, _ in headers):
            all_headers.append(("content-type", "text/plain; charset=utf-8"))
        try:
            phrase = HTTPStatus(status).phrase.encode("ascii")
        except ValueError:
            phrase = b""
        response = h11.Response(status_code=status, headers=all_headers, reason=phrase)
        # h11 still lets the server answer after the client's request was unparseable.
        writer = conn._h11 or h11.Connection(h11.SERVER)
        chunks = [writer.send(response) or b""]
        if not head:
            chunks.append(writer.send(h11.Data(data=payload)) or b"")
        chunks.append(writer.send(h11.EndOfMessage()) or b"")
        self._write_control(conn, b"".join(chunks))
        conn.state = ConnectionState.CLOSED
        conn._h11 = None
        self._close_transport(conn)

    # -- WebSocket phase ------------------------------------------------------------------

    def _process_frames(self, conn: Connection) -> None:
        ws = conn._ws
        kws = conn.kws
        assert ws is not None
        assert kws is not None
        hub = self.hub
        stats = self.stats
        limit = self.config.max_message_size
        closed = ConnectionState.CLOSED
        # Emits queued so far go out first, and an async listener (a route callback
        # included) holds every later frame back until handler_done.
        if hub._queue:
            self._pump_hub()
        if conn.blocked or conn.state is closed:
            return
        # wsproto's connection yields exactly these classes: compare them, not isinstance
        # (Message is an ABC, and an isinstance check against it costs a Python call).
        for event in ws.events():
            cls = event.__class__
            if cls is TextMessage or cls is BytesMessage:
                message: Message[Any] = event  # type: ignore[assignment]
                if cls is TextMessage:
                    payload = message.data.encode("utf-8")
                    kind = _TEXT
                else:
                    payload = bytes(message.data)
                    kind = _BINARY
                if message.message_finished and conn._frag is None:
                    if limit is not None and len(payload) > limit:
                        self._too_big(conn, len(payload))
                        return
                    stats.messages_in += 1
                    hub.receive_message(kws, payload, kind)
                elif not self._fragment(conn, payload, kind, message.message_finished):
                    return
            elif cls is Ping:
                ping: Ping = event  # type: ignore[assignment]
                if ws.state is WSState.OPEN:
                    self._write_control(conn, ws.send(ping.response()))
                hub.receive_ping(kws, bytes(ping.payload))
            elif cls is Pong:
                conn._pong_due = None
                conn._next_ping = None  # the next tick schedules the next ping
                hub.receive_pong(kws, bytes(event.payload))  # type: ignore[attr-defined]
            else:  # wsproto's connection yields nothing else: a CloseConnection
                self._peer_closed(conn, event)  # type: ignore[arg-type]
                return
            if hub._queue:
                self._pump_hub()  # a RunHandler action raises conn.blocked
            if conn.blocked or conn.state is closed:
                return

    def _fragment(self, conn: Connection, part: bytes, kind: MessageKind, last: bool) -> bool:
        """Add one part of a fragmented message; ``False`` when it made the message too big."""
        if conn._frag is None:
            conn._frag = []
            conn._frag_size = 0
            conn._frag_kind = kind
        conn._frag.append(part)
        conn._frag_size += len(part)
        limit = self.config.max_message_size
        if limit is not None and conn._frag_size > limit:
            self._too_big(conn, conn._frag_size)
            return False
        if last:
            whole = b"".join(conn._frag)
            conn._frag = None
            self.stats.messages_in += 1
            self.hub.receive_message(conn.kws, whole, conn._frag_kind)  # type: ignore[arg-type]
        return True

    def _feed_held(self, conn: Connection) -> None:
        """Give wsproto compressed input a slice at a time, and none while blocked.

        A small deflate stream can inflate a thousandfold: slicing the input
        bounds what one parsing step inflates before ``max_message_size`` is
        checked, also for input held back while an async listener ran.
        """
        held = conn._held
        ws = conn._ws
        assert ws is not None
        while held and not conn.blocked and conn.state is not ConnectionState.CLOSED:
            chunk = bytes(held[:_INFLATE_SLICE])
            del held[:_INFLATE_SLICE]
            ws.receive_data(chunk)
            self._process_frames(conn)

    def _peer_closed(self, conn: Connection, event: CloseConnection) -> None:
        ws = conn._ws
        assert ws is not None
        self._pump_hub()  # what listeners emitted before the close frame goes out first
        code, reason = int(event.code), event.reason or ""
        if ws.state is WSState.REMOTE_CLOSING:
            # RFC 6455 5.5.1: answer with a close frame echoing the code.
            self._write_control(conn, ws.send(event.response()))
            self._end(conn, code, reason, None)
        elif ws.state is WSState.CLOSED:
            # The answer to our own close frame.
            self._end(conn, code, reason, None)
        else:
            # wsproto reports a frame it could not parse as a close event in OPEN state.
            self.stats.protocol_errors += 1
            self._fail(conn, RemoteProtocolError(reason or "protocol error", close_code=code))
            return
        # RFC 6455 7.1.1: the server closes the TCP connection first.
        self._close_transport(conn)

    def _too_big(self, conn: Connection, size: int) -> None:
        self.stats.protocol_errors += 1
        limit = self.config.max_message_size
        self._fail(
            conn, RemoteProtocolError(f"message of {size}+ bytes exceeds {limit}", close_code=1009)
        )

    def _fail(self, conn: Connection, error: RemoteProtocolError) -> None:
        """Fail the WebSocket connection (RFC 6455 7.1.7): close frame, then drop it."""
        self._pump_hub()  # what listeners emitted before the failure goes out first
        ws, kws = conn._ws, conn.kws
        code = error.close_code
        reason = str(error)[:100]
        if ws is not None and ws.state in (WSState.OPEN, WSState.REMOTE_CLOSING):
            self._write_control(conn, ws.send(CloseConnection(code=code, reason=reason)))
        if kws is not None and kws.state is _OPEN:
            self.hub.receive_error(kws, error)
        self._end(conn, code, reason, error)
        self._close_transport(conn)

    def _end(self, conn: Connection, code: int, reason: str, error: BaseException | None) -> None:
        """Report the end of the connection to the hub, once."""
        if conn.state is ConnectionState.CLOSED:
            return
        conn.state = ConnectionState.CLOSED
        conn._frag = None
        kws = conn.kws
        if kws is not None:
            self.hub.receive_disconnect(kws, code, reason, error)

    def _close_transport(self, conn: Connection) -> None:
        conn.state = ConnectionState.CLOSED
        if conn in self._conns:
            del self._conns[conn]
            self._actions.append(CloseTransport(conn))

    # -- writing --------------------------------------------------------------------------

    def _write_control(self, conn: Connection, data: bytes) -> None:
        """Queue an HTTP response or a control frame: never dropped, at most 131 bytes each.

        Pongs and close frames are what the peer needs to finish cleanly, so
        ``max_queue`` does not apply to them (RFC 6455 5.5: control frames
        carry at most 125 bytes of payload).
        """
        conn._out.append(data)
        conn.buffered += len(data)
        if not conn.dirty:
            conn.dirty = True
            self._dirty.append(conn)

    def _overflow(self, conn: Connection, size: int) -> None:
        # Only message frames overflow, and only on an open connection (see _send).
        error = SlowConsumer(size, self.config.max_queue)
        kws, ws = conn.kws, conn._ws
        assert kws is not None
        assert ws is not None
        if self.config.backpressure == "close":
            self.stats.overflow_closes += 1
            # What is queued will never be read in time: drop it and fail the connection.
            conn._out = []
            conn.buffered = 0
            self.hub.receive_error(kws, error)  # ignored if the hub already closed it
            self._write_control(
                conn, ws.send(CloseConnection(code=1013, reason="output buffer overflow"))
            )
            self._end(conn, 1013, "output buffer overflow", error)
            self._close_transport(conn)
            return
        self.stats.dropped_messages += 1
        if not conn._overflowing:
            conn._overflowing = True
            self.hub.receive_error(kws, error)

    def _hub_woke(self) -> None:
        if self._wakeup is not None:
            self._wakeup()

    def _pump_hub(self) -> None:
        hub = self.hub
        while hub._queue:
            for action in hub.drain_actions():
                if isinstance(action, Send):
                    self._send(action)
                elif isinstance(action, Close):
                    self._server_close(action)
                else:  # a RunHandler
                    target = action.target
                    conn = target.conn if target is not None else None
                    if not isinstance(conn, Connection):
                        conn = None
                    if conn is not None:
                        conn.blocked += 1
                    self._actions.append(RunHandler(conn, action.awaitable))

    def _send(self, action: Send) -> None:
        # The hot path of every emit and broadcast: the frame is built once for every
        # connection without extensions; per target, one check and one append.
        shared: bytes | None = None
        size = 0
        kind = action.kind
        data = action.data
        max_queue = self.config.max_queue
        mark_dirty = self._dirty.append
        frames = 0
        for kws in action.targets:
            conn = kws.conn
            if conn.__class__ is not Connection or conn.state is not _OPEN:
                continue
            frames += 1
            if conn.compressed:
                # Each compressed connection has its own deflate context (RFC 7692 7.2).
                message: Message[Any] = (
                    TextMessage(data=data.decode("utf-8"))
                    if kind is _TEXT
                    else BytesMessage(data=data)
                )
                frame = conn._ws.send(message)  # type: ignore[union-attr]
                frame_size = len(frame)
            else:
                if shared is None:
                    shared = _frame(kind, data)
                    size = len(shared)
                    self.stats.broadcast_encodes += 1
                frame = shared
                frame_size = size
            # Backpressure above max_queue; a message always fits an empty buffer.
            buffered = conn.buffered
            if buffered and buffered + frame_size > max_queue:
                self._overflow(conn, buffered + frame_size)
                mark_dirty = self._dirty.append  # in case an error listener drained the server
                continue
            conn._out.append(frame)
            conn.buffered = buffered + frame_size
            if not conn.dirty:
                conn.dirty = True
                mark_dirty(conn)
        self.stats.frames_out += frames

    def _server_close(self, action: Close) -> None:
        conn = action.target.conn
        if not isinstance(conn, Connection) or conn.state is not _OPEN or conn._ws is None:
            return
        self._write_control(
            conn, conn._ws.send(CloseConnection(code=action.code, reason=action.reason))
        )
        conn.state = ConnectionState.CLOSING
        conn._deadline = None  # the next tick starts the close_timeout
