"""One connection, sans-IO: bytes (or whole messages) in, hub events, output out.

A :class:`ServerConnection` is what every driver feeds, whatever it is: a
socket adapter gives it bytes from the first request byte on (the *byte
entry*: HTTP phase with h11, then frames with our :mod:`._reader`, whose
oracle is wsproto); an ASGI server, which
does the handshake and the framing itself, gives it whole messages of a
connection that starts OPEN (the *message entry*). Either way the same object
applies the same limits, output bound and its drop/close policy, counters,
close codes, keepalive and ordering, so they are written once.

Its lifecycle is the hub's :class:`~ikisocket_core.Websocket` state once the
connection is accepted (one state, moved only through ``_state.transition``);
before that it is its own ``CONNECTING``. The node (:class:`~ikisocket_core.
protocol.Server`) routes hub actions to connections, holds their deadlines
and collects their output for the driver; it decides nothing itself.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any, Final

from wsproto.connection import Connection as WSConnection
from wsproto.connection import ConnectionType

from ._errors import LocalProtocolError, RemoteProtocolError, SlowConsumer
from ._events import EVENT_MESSAGE, MessageKind
from ._frames import _SHORT_HEADS, _close_frame, _frame, _Inflater, deflate_frame
from ._handshake import receive_http
from ._log import logger, peer_name
from ._reader import CLOSE, PING, PONG, FrameReader
from ._socketio._socket import EngineSocket
from ._state import ConnectionState, StateInput, transition
from ._timeouts import (
    _HANDSHAKE,
    _PONG,
    _SCHEDULE_PING,
    _STAMP_CLOSE,
    on_deadline,
)

if TYPE_CHECKING:
    from wsproto.extensions import PerMessageDeflate

    from ._handshake import Exchanges
    from ._http import HTTPPhase
    from ._websocket import Websocket
    from .protocol import Server

# Public through ikisocket_core.protocol, not the package top level.
__all__: list[str] = []

# What a connection counts against in the node's connection limits.
UNCOUNTED: Final = 0
COUNTED_HANDSHAKE: Final = 1  # max_handshakes: in its HTTP phase
COUNTED_OPEN: Final = 2  # max_connections and max_connections_per_ip: upgraded

_CONNECTING: Final[ConnectionState] = ConnectionState.CONNECTING
_OPEN: Final[ConnectionState] = ConnectionState.OPEN
_CLOSED: Final[ConnectionState] = ConnectionState.CLOSED
_TEXT: Final[MessageKind] = MessageKind.TEXT
_BINARY: Final[MessageKind] = MessageKind.BINARY
_KINDS: Final = (_BINARY, _TEXT, _BINARY)  # by opcode (1: text, 2: binary)

# What a connection gets of a broadcast (its ``_framing``; see ``deliver``).
_SHARED_FRAME: Final = 0  # the frame built once for every such target
_MESSAGE: Final = 1  # the message encoded once by the node's encode_message (message level)
_OWN_FRAME: Final = 2  # a frame of its own (permessage-deflate: its own compression context)
#: (A name of this module's own: the compiled build reads it without a dict lookup.)
_ENGINE_SOCKET: Final = EngineSocket


class ServerConnection:
    """One connection as the engine sees it; made by the node (``Server.connect`` / ``accept``).

    Attributes:
        transport: The driver's own object (socket, transport, stream, ASGI
            send); never touched by the engine.
        client: The peer's address, as the driver gave it.
        kws: The hub's handle from the accept to the connection's end, else ``None``
            (the engine lets go of it at the end; :attr:`state` stays ``CLOSED``).
        message_level: Whether the driver frames messages itself (ASGI):
            :meth:`take` then returns encoded messages, not bytes.
        blocked: How many ``async def`` listeners of this connection are
            running; no further input is parsed while it is above 0.
        buffered: Output bytes waiting to be taken by :meth:`take`.
        compressed: Whether permessage-deflate was negotiated.
        close_code: For a message-level connection, the close code the
            driver must send when it gets ``CloseTransport`` (``None``: none).
        close_reason: The reason that goes with ``close_code``.
        due: When its one armed deadline is (see :meth:`Server.next_deadline`).
    """

    __slots__ = (
        "_counted",
        "_encode",
        "_exchange",
        "_flush",
        "_framing",
        "_held",
        "_host",
        "_http",
        "_hub",
        "_limit",
        "_max_queue",
        "_node",
        "_out",
        "_out_closed",
        "_overflowing",
        "_ping",
        "_reader",
        "_state",
        "_stats",
        "_timer",
        "_ws",
        "blocked",
        "buffered",
        "client",
        "close_code",
        "close_reason",
        "compressed",
        "dirty",
        "due",
        "kws",
        "message_level",
        "scheme",
        "transport",
    )

    def __init__(
        self,
        node: Server,
        *,
        client: tuple[str, int] | None,
        scheme: str,
        transport: Any,
        message_level: bool = False,
    ) -> None:
        self._node = node
        # What the node fixed when it was made, read per message: held here, one lookup
        # fewer each (and in the compiled build a field of this object's own instead of
        # an attribute of a Python one).
        self._hub = node.hub
        self._stats = node.stats
        self._limit = node._message_limit
        self._max_queue = node.config.max_queue
        self._encode = node.encode_message
        self.transport = transport
        self.client = client
        self.scheme = scheme
        self.message_level = message_level
        # What a broadcast queues for it (deliver): the shared frame, the shared encoded
        # message (message level), or a frame of its own (its own deflate context).
        self._framing = _MESSAGE if message_level else _SHARED_FRAME
        self.kws: Websocket | None = None
        self._state = _CONNECTING
        self.blocked = 0
        self.buffered = 0
        self.compressed = False
        self.dirty = False
        # The Flush naming only this connection, made once: drain_actions hands it out
        # whenever this connection alone has output (every echo), instead of a new one.
        self._flush: Any = None
        self.due: float | None = None
        self.close_code: int | None = None
        self.close_reason = ""
        self._out: list[Any] = []
        self._out_closed = False  # a close was written: nothing may follow (RFC 6455 5.5.1)
        self._overflowing = False
        self._http: HTTPPhase | None = None
        self._exchange: Exchanges | None = None  # keep-alive requests to Socket.IO's polling
        self._reader: FrameReader | None = None  # once upgraded (byte entry)
        self._ws: WSConnection | None = None  # frames what we send when compressed
        self._timer = _HANDSHAKE
        self._ping = b""
        self._held: deque[tuple[bytes, MessageKind]] | None = None
        self._counted = UNCOUNTED
        self._host: str | None = None

    def __repr__(self) -> str:
        return f"<ServerConnection {self.client} {self.state.value}>"

    # -- what drivers read -----------------------------------------------------------------

    @property
    def state(self) -> ConnectionState:
        """The connection's lifecycle state (that of its ``kws`` once accepted)."""
        kws = self.kws
        return self._state if kws is None else kws.state

    @property
    def can_read(self) -> bool:
        """Whether the driver should read more input from this connection now.

        ``False`` while its ``async def`` listeners run (``blocked``) and while
        its unwritten output exceeds ``max_queue`` (a peer that sends but never
        reads, pings included); read again once it is ``True`` (after
        :meth:`take` or ``handler_done``).
        """
        return self.blocked == 0 and self.buffered <= self._max_queue

    def take(self) -> list[Any]:
        """Take everything waiting to be written, oldest first.

        Returns:
            Byte chunks (write them in order), or for a message-level
            connection the messages as the node's ``encode_message`` made them.
        """
        # (Inlined where it runs once per input: receive_message and receive_data.)
        out = self._out
        self._out = []
        self.buffered = 0
        self._overflowing = False
        return out

    # -- the byte entry ------------------------------------------------------------------

    def receive_data(self, data: bytes, *, take: bool = False) -> list[Any] | None:
        """Bytes arrived. Never raises because of what the peer sent.

        After calling this, the driver must drain the node's actions, unless
        it asked to ``take`` and got a list.

        Args:
            data: The bytes (empty is ignored; use :meth:`receive_eof`).
            take: The driver can write this connection's output at once. When
                that output is all the node has to do (an echo, a reply, an
                ack), it is taken and returned (as :meth:`take` would), and
                there is nothing to drain.

        Returns:
            With ``take``, this connection's output when it was all there was
            to do; else ``None`` (drain the node's actions).
        """
        kws = self.kws
        if not data or (self._state if kws is None else kws.state) is _CLOSED:
            return None
        node = self._node
        self._stats.bytes_in += len(data)
        reader = self._reader
        if reader is not None:
            reader.feed(data)
            hub = self._hub
            hub._receiving = self  # a reply to it goes onto it directly (Hub._send)
            try:
                self._read_frames(reader)
            finally:
                hub._receiving = None
            if take and self.dirty:  # (the hub's queue is empty: the reading pumps it)
                dirty = node._dirty
                if len(dirty) == 1 and not node._actions and not node._polls:
                    # drain_actions() and take(), inlined (receive_message's twin: once per
                    # read, where a shared helper would add a call): only this one has output.
                    dirty.clear()
                    self.dirty = False
                    out = self._out
                    self._out = []
                    self.buffered = 0
                    self._overflowing = False
                    return out
        elif self._http is not None:
            receive_http(self, data)
        else:
            raise LocalProtocolError("a message-level connection takes messages, not bytes")
        return None

    def receive_eof(self) -> None:
        """The peer half-closed its side: the connection ends (1006 without a close frame).

        After calling this, the driver must drain the node's actions.
        """
        self._end(1006, "", None)
        self._close_transport(linger=False)

    def connection_lost(self, error: BaseException | None = None) -> None:
        """The transport is gone; nothing more will be written or read.

        After calling this, the driver must drain the node's actions.

        Args:
            error: The transport error, if any.
        """
        self._end(1006, "", error)
        self._out_closed = True
        self._out = []
        self.buffered = 0
        self._node._deadlines.disarm(self)
        self._node._forget(self)

    def handler_done(self) -> None:
        """One ``async def`` listener of this connection finished: parse what waited.

        After calling this, the driver must drain the node's actions.
        """
        if self.blocked == 0:
            return
        self.blocked -= 1
        if self.blocked or self.state is _CLOSED:
            return
        if self._reader is not None:
            # Within an input for the hub, as receive_data's naming of the receiving
            # connection makes it: what listeners send waits for the drain that follows.
            hub = self._hub
            hub._depth += 1
            try:
                self._read_frames(self._reader)
            finally:
                hub._depth -= 1
        held = self._held
        while held and not self.blocked and self.state is not _CLOSED:
            data, kind = held.popleft()
            self._message(data, kind)

    # -- the message entry ---------------------------------------------------------------

    def receive_message(
        self, data: bytes, kind: MessageKind, take: bool = False
    ) -> list[Any] | None:
        """A whole message arrived at a message-level connection.

        Held while the connection's ``async def`` listeners run (drivers stop
        reading while :attr:`can_read` is ``False``, so at most one waits).
        After calling this, the driver must drain the node's actions, unless
        it asked to ``take`` and got a list.

        Args:
            data: The payload, UTF-8 for text.
            kind: ``TEXT`` or ``BINARY``.
            take: The driver can write this connection's output at once. When
                that output is all the node has to do (an echo, a reply),
                it is taken and returned (as :meth:`take` would), and there
                is nothing to drain.

        Returns:
            With ``take``, this connection's output when it was all there was
            to do; else ``None`` (drain the node's actions).
        """
        kws = self.kws  # (the state property, inlined: once per message)
        state = self._state if kws is None else kws.state
        if state is _CLOSED:
            return None
        node = self._node
        stats = self._stats
        size = len(data)
        stats.bytes_in += size
        if self.blocked:
            if self._held is None:
                self._held = deque()
            self._held.append((data, kind))
            return None
        # self._message(data, kind), inlined: once per message.
        if size > self._limit:
            self._too_big(size)
            return None
        stats.messages_in += 1
        hub = self._hub
        if state is _OPEN:  # (kws is set once OPEN)
            # hub.receive_message(kws, data, kind), inlined (once per message), with this
            # connection as the one whose input runs: a reply to it goes onto it directly.
            # Naming the receiving connection also marks the hub as within an input (no
            # wakeup for what listeners queue: the driver drains next), as _depth would.
            kws.last_activity = hub._now  # type: ignore[union-attr]
            hub._receiving = self
            try:
                if type(kws) is _ENGINE_SOCKET:  # a Socket.IO session's transport
                    kws.session.receive(data, kind)
                else:
                    hub._dispatch(kws, EVENT_MESSAGE, data, kind)  # type: ignore[arg-type]
            finally:
                hub._receiving = None
        if hub._queue:
            node._pump_hub()  # a RunHandler action raises self.blocked
        if take and self.dirty:
            dirty = node._dirty
            if len(dirty) == 1 and not node._actions and not node._polls:
                # drain_actions() and take(), inlined: only this connection has output.
                dirty.clear()
                self.dirty = False
                out = self._out
                self._out = []
                self.buffered = 0
                self._overflowing = False
                return out
        return None

    def receive_close(self, code: int = 1005, reason: str = "") -> None:
        """The peer closed a message-level connection (its server saw the close or EOF).

        After calling this, the driver must drain the node's actions.

        Args:
            code: The close code the peer sent (1005: none, 1006: no close frame).
            reason: The close reason.
        """
        self._end(code, reason, None)
        self._close_transport()

    # -- opening (the byte entry) ------------------------------------------------------

    def _open(
        self,
        kws: Websocket,
        response: bytes,
        deflate: PerMessageDeflate | None,
        trailing: bytes,
    ) -> None:
        """The handshake (``._handshake``) accepted: write the 101, then read frames."""
        node = self._node
        self.kws = kws
        limit = node.config.max_message_size
        if deflate is not None:
            self.compressed = True
            self._framing = _OWN_FRAME
            self._ws = WSConnection(ConnectionType.SERVER, [deflate])
            inflater = _Inflater(
                limit, deflate.client_max_window_bits, deflate.client_no_context_takeover
            )
            self._reader = FrameReader(limit, inflater)
        else:
            self._reader = FrameReader(limit)
        node._count_open(self)
        self._stats.upgrades += 1
        # Nothing was written yet (hub actions are converted later): the 101 goes first.
        self._write_control(response)
        if node.config.ping_interval is None:
            node._deadlines.disarm(self)  # the handshake deadline
        else:
            self._arm(_SCHEDULE_PING, node._now)
        if trailing:
            self._stats.bytes_in -= len(trailing)  # counted once already, as they arrived
            self.receive_data(trailing)

    def _idle(self, when: float) -> None:
        """A keep-alive connection waits for its next request until ``when``."""
        self._arm(_HANDSHAKE, when)

    def _drop(self, reason: str | None, *, linger: bool = True) -> None:
        """End a keep-alive HTTP connection: after its last answer, or when it misbehaves."""
        if reason is not None:
            logger.info("failed %s: %s", peer_name(self.client), reason)
        self._end(1006, reason or "", None)
        self._close_transport(linger=linger)

    # -- messages in -----------------------------------------------------------------------

    def _read_frames(self, reader: FrameReader) -> None:
        kws = self.kws
        assert kws is not None
        node = self._node
        hub = self._hub
        stats = self._stats
        # Emits queued so far go out first, and an async listener (a route callback
        # included) holds every later frame back until handler_done.
        if hub._queue:
            node._pump_hub()
        if self.blocked or kws.state is _CLOSED:
            return
        next_frame = reader.next
        kinds = _KINDS
        # (Within an input for the hub: receive_data names this connection the receiving
        # one, handler_done raises the hub's depth.)
        try:
            while (item := next_frame()) is not None:
                opcode, payload = item
                if opcode < CLOSE:  # a whole message, its UTF-8 checked
                    stats.messages_in += 1
                    # hub.receive_message(kws, payload, kind), inlined: once per message.
                    if kws.state is _OPEN:
                        kws.last_activity = hub._now
                        if type(kws) is _ENGINE_SOCKET:  # a Socket.IO session's transport
                            kws.session.receive(payload, kinds[opcode])
                        else:
                            hub._dispatch(kws, EVENT_MESSAGE, payload, kinds[opcode])
                elif opcode == PING:
                    if not self._out_closed:
                        # Answered even past max_queue: the driver stops reading meanwhile.
                        self._write_control(_frame(PONG, payload))
                    hub.receive_ping(kws, payload)
                elif opcode == PONG:
                    if self._timer == _PONG and payload == self._ping:
                        # Only the answer to our own ping proves the peer alive (RFC 6455 5.5.3).
                        self._arm(_SCHEDULE_PING, node._now)
                    hub.receive_pong(kws, payload)
                else:  # CLOSE: nothing more is read
                    self._peer_closed(reader.close_code, reader.close_reason)
                    return
                if hub._queue:
                    node._pump_hub()  # a RunHandler action raises self.blocked
                if self.blocked or kws.state is _CLOSED:
                    return
                if reader._pos == len(reader._buf) and not reader._chunks:
                    return  # every byte read is parsed: no call to find nothing more
        except RemoteProtocolError as error:
            stats.protocol_errors += 1
            self._fail(error)

    def _message(self, data: bytes, kind: MessageKind) -> None:
        """A whole message at the message entry: the same limit as frames get."""
        if len(data) > self._limit:
            self._too_big(len(data))
            return
        self._stats.messages_in += 1
        hub = self._hub
        hub.receive_message(self.kws, data, kind)  # type: ignore[arg-type]
        if hub._queue:
            self._node._pump_hub()  # a RunHandler action raises self.blocked

    def _peer_closed(self, code: int, reason: str) -> None:
        self._node._pump_hub()  # what listeners emitted before the close frame goes out first
        if not self._out_closed:
            # RFC 6455 5.5.1: answer with a close frame echoing the code (none: none).
            self._write_control(
                _SHORT_HEADS[CLOSE][0] if code == 1005 else _close_frame(code, reason)
            )
            self._out_closed = True
        # else: the answer to our own close frame.
        self._end(code, reason, None)
        # RFC 6455 7.1.1: the server closes the TCP connection first.
        self._close_transport(linger=False)

    def _too_big(self, size: int) -> None:
        self._stats.protocol_errors += 1
        limit = self._node.config.max_message_size
        self._fail(
            RemoteProtocolError(f"message of {size}+ bytes exceeds {limit}", close_code=1009)
        )

    # -- endings -------------------------------------------------------------------------

    def _fail(self, error: RemoteProtocolError) -> None:
        """Fail the WebSocket connection (RFC 6455 7.1.7): close frame, then drop it."""
        self._node._pump_hub()  # what listeners emitted before the failure goes out first
        code = error.close_code
        reason = str(error)[:100]
        self._log_failure(code, reason)
        self._write_close(code, reason)
        kws = self.kws
        if kws is not None and kws.state is _OPEN:
            self._hub.receive_error(kws, error)
        self._end(code, reason, error)
        self._close_transport()

    def _log_failure(self, code: int, reason: str) -> None:
        kws = self.kws
        uuid = "" if kws is None else f" ({kws.uuid})"
        logger.info("failed %s%s: %d %s", peer_name(self.client), uuid, code, reason)

    def _end(self, code: int, reason: str, error: BaseException | None) -> None:
        """Report the end of the connection to the hub, once."""
        self._reader = None  # nothing more is read: drop what was buffered
        self._held = None
        exchange = self._exchange
        if exchange is not None:
            self._exchange = None
            self._http = None
            exchange.gone()
        kws = self.kws
        if kws is None:
            if self._state is _CONNECTING:
                self._state = transition(self._state, StateInput.PEER_GONE)
        elif kws.state is not _CLOSED:  # pragma: no branch - (closed: let go of, kws is None)
            self._hub.receive_disconnect(kws, code, reason, error)  # (the handle is CLOSED)
            # The handle and this connection refer to each other: drop it, so that neither
            # waits in a cycle for the collector; only a listener keeps it now.
            self._state = _CLOSED
            self.kws = None

    def _close_transport(self, *, linger: bool = True) -> None:
        self._node._deadlines.disarm(self)
        self._node._forget(self, close=True, linger=linger)

    def close(self, code: int, reason: str) -> None:
        """Start the closing handshake from the server (the hub's ``Close`` action).

        Args:
            code: The close code.
            reason: The close reason.
        """
        if self._out_closed or self.state is _CLOSED:
            return
        if code == 1011:  # a listener failed (its traceback is logged by the hub)
            self._log_failure(code, reason)
        self._write_close(code, reason)
        if self.message_level:
            self._close_transport()  # the ASGI server runs the closing handshake
        else:
            self._arm(_STAMP_CLOSE, self._node._now)

    def _write_close(self, code: int, reason: str) -> None:
        if self._out_closed:
            return
        self._out_closed = True
        if self.message_level:
            self.close_code = code
            self.close_reason = reason
            return
        # Until now nothing was closed either way (a peer's close is answered at once).
        self._write_control(_close_frame(code, reason))

    # -- timers --------------------------------------------------------------------------

    def _arm(self, timer: int, when: float) -> None:
        self._timer = timer
        self._node._deadlines.arm(self, when)

    def on_deadline(self, now: float) -> None:
        """The node's clock reached this connection's deadline (``_timeouts.on_deadline``).

        Args:
            now: The current time.
        """
        on_deadline(self, now)

    # -- output --------------------------------------------------------------------------

    def deliver_own(self, data: bytes, kind: MessageKind) -> None:
        """Queue one message for this connection alone: ``deliver`` for a single target.

        The hub calls it for a message to the connection whose own input runs
        (:attr:`Server.receiving`) when nothing is queued before it (an echo,
        a reply, a Socket.IO ``ACK``): the driver drains this connection right
        after the input, so the message skips the hub's queue. The framing,
        the counters and the output bound are ``deliver``'s.

        Args:
            data: The payload (UTF-8 for text).
            kind: ``TEXT`` or ``BINARY``.
        """
        if self._out_closed:
            return
        framing = self._framing
        stats = self._stats
        if framing == _SHARED_FRAME:
            item: Any = _frame(kind, data)
            size = len(item)
            stats.broadcast_encodes += 1
        elif framing == _MESSAGE:
            # (A callable held in an attribute, read then called: in CPython 3.11 a call
            # written ``self._encode(...)`` is never specialized, its lookup stays the
            # generic one on every reply; the read alone is a specialized one.)
            encode = self._encode
            item = encode(kind, data)
            size = len(data)
        else:
            item = deflate_frame(self._ws, data, kind)
            size = len(item)
        stats.frames_out += 1
        buffered = self.buffered
        if buffered and buffered + size > self._max_queue:
            self._overflow(buffered + size)
            return
        self._out.append(item)
        self.buffered = buffered + size
        if not self.dirty:
            self.dirty = True
            self._node._dirty.append(self)

    def _write_control(self, data: bytes) -> None:
        """Queue an HTTP response or a control frame: never dropped, at most 131 bytes each.

        Pongs and close frames are what the peer needs to finish cleanly, so
        they are never dropped; they still count in ``buffered``, and past
        ``max_queue`` :attr:`can_read` turns ``False`` so the driver stops
        reading a peer that pings without reading the answers.
        """
        self._out.append(data)
        self.buffered += len(data)
        if not self.dirty:
            self.dirty = True
            self._node._dirty.append(self)

    def _overflow(self, size: int) -> None:
        """The output bound was hit: the ``backpressure`` policy decides, here only."""
        node = self._node
        error = SlowConsumer(size, self._max_queue)
        kws = self.kws
        assert kws is not None
        if node.config.backpressure == "close":
            self._stats.overflow_closes += 1
            # What is queued will never be read in time: drop it and fail the connection.
            self._out = []
            self.buffered = 0
            self._log_failure(1013, str(error))
            self._hub.receive_error(kws, error)  # ignored if the hub already closed it
            self._write_close(1013, "output buffer overflow")
            self._end(1013, "output buffer overflow", error)
            self._close_transport()
            return
        self._stats.dropped_messages += 1
        if not self._overflowing:
            self._overflowing = True
            logger.info("dropping messages to %s (%s): %s", peer_name(self.client), kws.uuid, error)
            self._hub.receive_error(kws, error)
