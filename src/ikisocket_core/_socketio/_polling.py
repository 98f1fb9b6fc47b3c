"""Engine.IO's HTTP long-polling transport, and the upgrade of a polling session to WebSocket.

Theory of operation. A polling session is the same :class:`EngineSession` as
a WebSocket one; only its :class:`EngineSocket`'s ``conn`` differs: a
:class:`Polling` record instead of the engine's connection. The engine routes
what is sent to the socket to :meth:`Polling.push` (``deliver``), which queues
it; the client's pending GET (the *waiter*, any object with ``node`` and
``answer``: the engine's keep-alive exchange, or an ASGI request) is answered
once per drain with everything queued, joined by ``0x1E`` (Engine.IO v4
payload encoding; binary as ``b`` + base64). A POST's payload is split the same
way and each packet goes to the session as a WebSocket message would.

The upgrade (Engine.IO v4 "Upgrade"): a WebSocket request with the session's
``sid`` gets a :class:`Probe` socket. ``2probe`` is answered ``3probe`` and the
pending GET ``6`` (noop) so that the client pauses polling; until ``5`` (or the
probe's end), a GET that finds nothing queued gets a noop at once too, since a
client that read the noop before ``3probe`` polls again before it pauses (the
reference server sends a noop every 100 ms instead); ``5`` then moves
the session onto the WebSocket: what the polling queue still holds is written
to it first, then the socket's ``conn`` becomes the WebSocket connection, so
everything sent later follows in order.

Bounds: a POST body is at most ``max_payload`` (413, the session is closed);
the queue waiting for a GET is at most the engine's ``max_queue`` bytes (past
it the session is closed like a slow WebSocket client, 1013); one GET may
wait per session (a second one gets 400 and closes the session, as the
reference server does).
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import TYPE_CHECKING, Any, Protocol

from ikisocket_core._actions import Close, Reject
from ikisocket_core._errors import ConnectionClosed, RemoteProtocolError
from ikisocket_core._events import MessageKind
from ikisocket_core._http import Answer
from ikisocket_core._log import logger
from ikisocket_core._state import ConnectionState, StateInput, transition

from ._packets import PacketError
from ._session import EngineSession
from ._socket import ENDED, EngineSocket

if TYPE_CHECKING:
    from ikisocket_core._routing import Request
    from ikisocket_core.protocol import Server

    from ._mount import SocketIO

__all__: list[str] = []

_TEXT = MessageKind.TEXT
_BINARY = MessageKind.BINARY
_OPEN = ConnectionState.OPEN
_SEPARATOR = "\x1e"
#: GETs answered with a noop at once while a probe is under way (socket.io-client needs one or
#: two: it may poll again before 3probe pauses it). Past them a GET waits for packets again, so
#: a client that polls without pausing does not spin.
PROBE_NOOPS = 3

# The reference server's error bodies (engine.io ``Server.errorMessages``).
UNKNOWN_TRANSPORT = 0
UNKNOWN_SID = 1
BAD_HANDSHAKE_METHOD = 2
BAD_REQUEST = 3
FORBIDDEN = 4
UNSUPPORTED_PROTOCOL_VERSION = 5
_MESSAGES = (
    "Transport unknown",
    "Session ID unknown",
    "Bad handshake method",
    "Bad request",
    "Forbidden",
    "Unsupported protocol version",
)

_JSON = (("content-type", "application/json"),)
_PLAIN = (("content-type", "text/plain; charset=UTF-8"),)
_HTML = (("content-type", "text/html"),)


class Waiter(Protocol):
    """What answers one HTTP request of a polling session (the engine's or ASGI's)."""

    @property
    def node(self) -> Server:
        """The engine the request came through."""
        ...  # pragma: no cover

    def answer(self, answer: Answer) -> None:
        """Send the response.

        Args:
            answer: The response.
        """
        ...  # pragma: no cover

    def held(self, transport: Polling | None) -> None:
        """The request waits for packets of ``transport`` (``None``: no longer).

        Args:
            transport: The session's transport.
        """
        ...  # pragma: no cover


def error(status: int, code: int, headers: tuple[tuple[str, str], ...] = ()) -> Answer:
    """The reference server's JSON error answer.

    Args:
        status: The HTTP status.
        code: The Engine.IO error code.
        headers: More headers (CORS).

    Returns:
        The answer.
    """
    body = json.dumps({"code": code, "message": _MESSAGES[code]}, separators=(",", ":"))
    return Answer(status, body.encode("ascii"), (*_JSON, *headers))


def encode_payload(packets: list[tuple[bytes, MessageKind]]) -> bytes:
    """Join packets as an HTTP long-polling payload (``0x1E``; binary as ``b`` + base64).

    Args:
        packets: Engine.IO packets as WebSocket messages (text is UTF-8).

    Returns:
        The response body.
    """
    parts = [data if kind is _TEXT else b"b" + base64.b64encode(data) for data, kind in packets]
    return b"\x1e".join(parts)


def decode_payload(body: bytes) -> list[tuple[bytes, MessageKind]]:
    """Split an HTTP long-polling payload into packets, as WebSocket messages.

    Args:
        body: A POST body.

    Returns:
        The packets.

    Raises:
        PacketError: The body is not UTF-8, or a binary packet is not base64.
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise PacketError("an HTTP long-polling payload is UTF-8") from None
    packets: list[tuple[bytes, MessageKind]] = []
    for part in text.split(_SEPARATOR):
        if part.startswith("b"):
            try:
                packets.append((base64.b64decode(part[1:], validate=True), _BINARY))
            except (binascii.Error, ValueError):
                raise PacketError("a binary packet's base64 is invalid") from None
        else:
            packets.append((part.encode("utf-8"), _TEXT))
    return packets


class Polling:
    """The ``conn`` of a polling session's socket: its queue and its pending GET.

    Attributes:
        session: The session.
        queue: Packets waiting for a GET, as WebSocket messages.
        size: Their bytes.
        max_queue: The bound on ``size``.
        waiter: The pending GET, if any.
        headers: The headers its answer gets (CORS).
        closed: Whether the session ended (only its close packet is left to send).
        scheduled: Whether the engine will answer the GET at its next drain.
        probing: WebSockets that answered ``2probe`` and have neither upgraded nor ended.
        probe_noops: GETs answered at once with a noop since the last ``2probe``
            (at most :data:`PROBE_NOOPS`).
    """

    transport_name = "polling"

    __slots__ = (
        "closed",
        "headers",
        "max_queue",
        "probe_noops",
        "probing",
        "queue",
        "scheduled",
        "session",
        "size",
        "waiter",
    )

    def __init__(self, session: EngineSession, max_queue: int) -> None:
        self.session = session
        self.queue: list[tuple[bytes, MessageKind]] = []
        self.size = 0
        self.max_queue = max_queue
        self.waiter: Waiter | None = None
        self.headers: tuple[tuple[str, str], ...] = ()
        self.closed = False
        self.scheduled = False
        self.probing = 0
        self.probe_noops = 0

    def __repr__(self) -> str:
        return f"<Polling {self.session.socket.uuid} {len(self.queue)} queued>"

    def push(self, data: bytes, kind: MessageKind) -> None:
        """Queue one message sent to the socket (called by the engine's ``deliver``).

        Args:
            data: The Engine.IO packet (UTF-8 for text).
            kind: ``TEXT`` or ``BINARY``.
        """
        if self.closed:
            return
        size = self.size + len(data)
        if self.queue and size > self.max_queue:
            self.queue = []
            self.size = 0
            self.closed = True  # the rest of this send (its attachments) is dropped too
            self.session.fail(
                RemoteProtocolError(
                    f"{size} bytes wait for a GET: past max_queue={self.max_queue}",
                    close_code=1013,
                )
            )
            return
        self.queue.append((data, kind))
        self.size = size
        self._schedule()

    def _schedule(self) -> None:
        waiter = self.waiter
        if waiter is not None and not self.scheduled:
            self.scheduled = True
            waiter.node._polls.append(self)

    def wait(self, waiter: Waiter, headers: tuple[tuple[str, str], ...]) -> None:
        """A GET arrived: it is answered at the next drain that finds packets queued.

        Args:
            waiter: The request.
            headers: Its answer's headers.
        """
        self.waiter = waiter
        self.headers = headers
        waiter.held(self)
        if self.probing and not self.queue and self.probe_noops < PROBE_NOOPS:
            self.probe_noops += 1
            self.push(b"6", _TEXT)  # the client pauses once it reads 3probe: let it
        elif self.queue:
            self._schedule()

    def flush(self) -> None:
        """Answer the pending GET with everything queued (the engine calls it while draining)."""
        self.scheduled = False
        waiter = self.waiter
        if waiter is None or not self.queue:
            return
        body = encode_payload(self.queue)
        self.queue = []
        self.size = 0
        self.waiter = None
        waiter.held(None)
        waiter.answer(Answer(200, body, (*_PLAIN, *self.headers)))

    def close(self) -> None:
        """The session closed its transport (a ``Close`` action).

        The close packet goes to a client that has nothing else waiting. Packets
        still waiting (a ``DISCONNECT``) go alone: socket.io-client handles a
        close packet before the packets that came with it, which would hide why
        the session ended; its next request learns the end from the 400.
        """
        if not self.queue:
            self.queue.append((b"1", _TEXT))
            self._schedule()
        self.closed = True
        session = self.session
        socket = session.socket
        socket.state = transition(socket.state, StateInput.PEER_GONE)
        session.let_go()  # (it ended: this is the Close it asked for)

    def gone(self, waiter: Waiter) -> None:
        """The pending GET's connection closed before its answer: the session ends.

        Args:
            waiter: The request that was pending.
        """
        self.waiter = None  # it was this one: an answer takes it off before it ends
        self.closed = True
        session = self.session
        if not session.ended:  # else its close packet was on the way
            socket = session.socket
            socket.state = transition(socket.state, StateInput.PEER_GONE)
            # A drop, as a WebSocket's: with recovery on, the namespaces are held.
            session.end(
                ConnectionClosed(1006, "poll connection closed prematurely"), recoverable=True
            )


class Probe:
    """What a WebSocket joining a polling session carries: the probe, then the session.

    Its socket stays the WebSocket connection's handle: after ``5`` it hands what
    arrives, and the connection's end, to the session (whose socket's ``conn`` is
    the WebSocket connection from then on), so that frames read in the same batch
    as ``5`` reach the session too.

    Attributes:
        session: The polling session.
        socket: The probe's own socket (its ``conn`` is the WebSocket's).
        polling: The polling transport whose ``2probe`` it answered, once it did.
        upgraded: Whether ``5`` moved the session onto this WebSocket.
    """

    __slots__ = ("polling", "session", "socket", "upgraded")

    def __init__(self, session: EngineSession, socket: EngineSocket) -> None:
        self.session = session
        self.socket = socket
        self.upgraded = False
        self.polling: Polling | None = None

    @property
    def joined(self) -> dict[str, Any]:
        """The session's namespace connections once upgraded (errors reach them), else none."""
        return self.session.joined if self.upgraded else {}

    def receive(self, data: bytes, kind: MessageKind) -> None:
        """One message of the probing WebSocket.

        Args:
            data: The message.
            kind: ``TEXT`` or ``BINARY``.
        """
        session = self.session
        if self.upgraded:
            session.receive(data, kind)
            return
        transport = session.socket.conn
        hub = session.mount.hub
        if session.ended or transport.__class__ is not Polling:
            self._refuse("the session ended")
        elif kind is _TEXT and data == b"2probe":
            self.polling = transport
            transport.probing += 1
            transport.probe_noops = 0
            hub._send((self.socket,), b"3probe", _TEXT)
            transport.push(b"6", _TEXT)  # the pending GET returns: the client pauses polling
        elif kind is _TEXT and data == b"5" and self.polling is not None:
            self._upgrade(transport)
        else:
            self._refuse("expected 2probe, then 5")

    def _refuse(self, why: str) -> None:
        socket = self.socket
        logger.info(
            "refused the upgrade of Socket.IO session %s: %s", self.session.socket.uuid, why
        )
        socket.state = transition(socket.state, StateInput.SERVER_CLOSE)
        self.session.mount.hub._push(Close(target=socket, code=1002, reason=why))

    def _upgrade(self, transport: Polling) -> None:
        from ikisocket_core._actions import Send  # noqa: PLC0415 - once per session
        from ikisocket_core._delivery import deliver  # noqa: PLC0415 - import cycle

        session = self.session
        wsconn = self.socket.conn
        # What the client has not fetched yet goes first, straight to the WebSocket;
        # anything sent later (queued in the hub) reaches the socket's new conn after it.
        for data, kind in transport.queue:
            deliver(wsconn._node, Send(targets=(self.socket,), data=data, kind=kind))
        transport.queue = []
        transport.size = 0
        transport.closed = True
        waiter = transport.waiter
        if waiter is not None:  # a GET that arrived after the noop: answer it with one
            transport.waiter = None
            waiter.held(None)
            waiter.answer(Answer(200, b"6", (*_PLAIN, *transport.headers)))
        self.upgraded = True
        session.socket.conn = wsconn
        for joined in session.joined.values():
            joined.kws.transport = "websocket"

    def transport_gone(self, code: int, reason: str, error: BaseException | None) -> None:
        """The WebSocket closed: before the upgrade the session stays on polling; after, it ends.

        Args:
            code: The close code.
            reason: The close reason.
            error: The error, if any.
        """
        socket = self.socket
        socket.state = transition(socket.state, StateInput.PEER_GONE)
        socket.session = ENDED  # (CLOSED: nothing reads it again; no cycle left with this)
        if self.upgraded:
            self.session.transport_gone(code, reason, error)
        elif self.polling is not None:  # back to plain polling: a GET waits for packets again
            self.polling.probing -= 1


def _cors(mount: SocketIO, request: Request) -> tuple[tuple[str, str], ...] | None:
    """The CORS headers for the request's origin, or ``None`` when it is not allowed."""
    origin = request.origin
    if origin is None:
        return ()
    allowed = mount.hub.allowed_origins
    if allowed is not None and origin not in allowed:
        return None
    mine = mount.cors_allowed_origins
    if mine is not None and origin not in mine:
        return None
    return (
        ("access-control-allow-origin", origin),
        ("access-control-allow-credentials", "true"),
        ("vary", "Origin"),
    )


def serve(
    mount: SocketIO, request: Request, method: str, body: bytes | None, waiter: Waiter
) -> Answer | None:
    """Serve one HTTP request of the long-polling transport.

    Args:
        mount: The Socket.IO mount.
        request: The request.
        method: Its method.
        body: Its body, or ``None`` when it was larger than ``max_payload``.
        waiter: What answers it later (a GET that waits for packets).

    Returns:
        The answer to send now, or ``None`` when the request waits.
    """
    cors = _cors(mount, request)
    if cors is None:
        return error(403, FORBIDDEN)
    if method == "OPTIONS":
        asked = request.headers.get("access-control-request-headers")
        headers = (
            *cors,
            ("access-control-allow-methods", "GET, POST, OPTIONS"),
            *((("access-control-allow-headers", asked),) if asked else ()),
        )
        return Answer(204, b"", headers)
    query = request.query()
    if query.get("EIO") != "4":
        return error(400, UNSUPPORTED_PROTOCOL_VERSION, cors)
    if query.get("transport") != "polling":
        return error(400, UNKNOWN_TRANSPORT if "transport" not in query else BAD_REQUEST, cors)
    sid = query.get("sid")
    if sid is None:
        if method != "GET":
            return error(400, BAD_HANDSHAKE_METHOD, cors)
        return _open(mount, request, waiter, cors)
    session = mount._sids.get(sid)
    transport = None if session is None else session.socket.conn
    if session is None or transport.__class__ is not Polling or transport.closed:
        return error(400, UNKNOWN_SID, cors)
    assert isinstance(transport, Polling)
    if body is None:
        session.fail(RemoteProtocolError("a POST body exceeds maxPayload", close_code=1009))
        return Answer(413, b"Payload Too Large", (*_PLAIN, *cors))
    if method == "GET":
        if transport.waiter is not None:
            # The reference server's "overlap from client": the session ends.
            session.fail(PacketError("a second GET while one is pending"))
            return error(400, BAD_REQUEST, cors)
        transport.wait(waiter, cors)
        return None
    if method != "POST":
        return error(400, BAD_REQUEST, cors)
    try:
        packets = decode_payload(body)
    except PacketError as exc:
        session.fail(exc)
        return error(400, BAD_REQUEST, cors)
    hub = mount.hub
    socket = session.socket
    for data, kind in packets:
        if session.ended:
            break
        hub.receive_message(socket, data, kind)
    return Answer(200, b"ok", (*_HTML, *cors))


def _open(
    mount: SocketIO, request: Request, waiter: Waiter, cors: tuple[tuple[str, str], ...]
) -> Answer | None:
    hub = mount.hub
    if not hub.accepting:
        return Answer(503, b"the server is not accepting connections", (*_PLAIN, *cors))
    refusal = waiter.node._over_limit(request.client)
    started = refusal if refusal is not None else mount._start(request, None)
    if isinstance(started, Reject):
        headers = (*_PLAIN, *started.headers, *cors)
        return Answer(started.status, started.reason.encode(), headers)
    session = started.session
    assert isinstance(session, EngineSession)
    transport = Polling(session, waiter.node.config.max_queue)
    started.conn = transport
    transport.wait(waiter, cors)
    session.opened(started.uuid)
    return None


def probe(mount: SocketIO, request: Request, conn: Any, sid: str) -> EngineSocket | Reject:
    """A WebSocket request with a ``sid``: the client wants to upgrade that polling session.

    Args:
        mount: The Socket.IO mount.
        request: The WebSocket request.
        conn: The engine's connection for it.
        sid: The session id it names.

    Returns:
        The probe's socket, or a refusal (400: unknown session, or one not on polling).
    """
    session = mount._sids.get(sid)
    if session is None or session.socket.conn.__class__ is not Polling:
        return Reject(status=400, reason="unknown Engine.IO session id")
    socket = EngineSocket(mount.hub._owner, sid, request, {})
    socket.conn = conn
    socket.state = transition(socket.state, StateInput.ACCEPT)
    socket.session = Probe(session, socket)
    return socket
