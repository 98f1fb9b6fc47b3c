"""The HTTP phase of a byte-entry connection: an upgrade, an answer, or keep-alive exchanges.

Split from :mod:`._connection` (whose ``ServerConnection`` it drives until
the connection is open or answered). h11 parses the request (:mod:`._http`);
:func:`receive_http` then upgrades it to WebSocket (the connection limits and
the hub's ``open`` decide first), answers it (a refusal, a static file, a
preflight), or hands it to Socket.IO's long-polling transport.

A plain request on the Socket.IO path does not end the connection's HTTP
phase: :class:`Exchanges` reads its body (at most ``max_payload``: 413), hands
it to the long-polling transport, and writes the answer with keep-alive, now
or later (a GET waits for packets), then parses the next request on the same
connection. While a GET waits, the handshake deadline is off (the session's
ping answers it within ``ping_interval``); between requests the connection has
``handshake_timeout`` to send the next one. Bytes the client sends while its
GET waits stay in the parser, at most ``max_request_size`` of them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from wsproto.utilities import generate_accept_token

from ._actions import Reject
from ._frames import negotiate_extensions
from ._http import Answer, HTTPPhase, Poll, encode_early, examine
from ._log import log_refusal
from ._socketio._polling import Waiter, serve
from ._state import StateInput, transition

if TYPE_CHECKING:
    from ._connection import ServerConnection
    from ._routing import Request
    from ._socketio._polling import Polling
    from ._websocket import Websocket
    from .protocol import Server

__all__: list[str] = []


def receive_http(conn: ServerConnection, data: bytes) -> None:
    """Bytes of the connection's HTTP phase: parse, then upgrade, answer or serve a poll.

    Args:
        conn: The connection, in its HTTP phase.
        data: The bytes (empty: parse what is buffered).
    """
    http = conn._http
    assert http is not None
    node = conn._node
    exchange = conn._exchange
    if exchange is not None and exchange.busy:
        exchange.receive(data)
        return
    received = http.receive(data)
    if received is None:
        return
    outcome = (
        received
        if isinstance(received, Answer)
        else examine(
            received,
            client=conn.client,
            scheme=conn.scheme,
            has_route=lambda path: node.hub.match(path) is not None,
            static=node.config.static,
            polls=None if node.hub._sio is None else node.hub._sio._serves,
        )
    )
    if isinstance(outcome, Poll):
        if exchange is None:
            exchange = conn._exchange = Exchanges(conn, http)
        exchange.start(outcome)
        return
    if isinstance(outcome, Answer):
        _answer(conn, outcome)
        return
    # The connection limits refuse before the hub sees the request (no hub state).
    result: Websocket | Reject | None = node._over_limit(conn.client)
    if result is None:
        result = node.hub.open(outcome.request, conn=conn)
        if isinstance(result, Reject):
            node.stats.rejected += 1
    if isinstance(result, Reject):
        body = result.reason.encode()  # exactly the reason, as behind ASGI
        _answer(conn, Answer(result.status, body, result.headers))
        return
    _upgrade(conn, result, outcome.key)


def _upgrade(conn: ServerConnection, kws: Websocket, key: bytes) -> None:
    http = conn._http
    assert http is not None
    headers: list[tuple[bytes, bytes]] = [
        (b"upgrade", b"websocket"),
        (b"connection", b"Upgrade"),
        (b"sec-websocket-accept", generate_accept_token(key)),
    ]
    if kws.subprotocol is not None:
        headers.append((b"sec-websocket-protocol", kws.subprotocol.encode()))
    compression = conn._node.config.compression
    offers = kws.headers.get_list("sec-websocket-extensions") if compression else []
    accepted, deflate = negotiate_extensions(offers)
    if accepted is not None:
        headers.append((b"sec-websocket-extensions", accepted))
    response = http.switch(headers)
    trailing = http.trailing
    conn._http = None
    conn._open(kws, response, deflate, trailing)


def refuse_early(conn: ServerConnection, refusal: Reject) -> None:
    """Answer before any request arrived (``max_handshakes``), then close.

    Args:
        conn: The connection, just made.
        refusal: What to answer.
    """
    log_refusal(conn.client, refusal.status, refusal.reason)
    answer = Answer(refusal.status, refusal.reason.encode(), refusal.headers)
    conn._write_control(encode_early(answer))
    conn._state = transition(conn._state, StateInput.REJECT)
    conn._close_transport()


def _answer(conn: ServerConnection, answer: Answer) -> None:
    http = conn._http
    assert http is not None
    if answer.status >= 400:
        log_refusal(conn.client, answer.status, answer.body.decode("utf-8", "replace"))
    conn._write_control(http.respond(answer))
    conn._http = None
    conn._state = transition(conn._state, StateInput.REJECT)
    conn._close_transport()


class Exchanges:
    """The HTTP requests of one connection to the long-polling transport (byte entry).

    Args:
        conn: The connection.
        http: Its HTTP phase.
    """

    __slots__ = ("_conn", "_http", "_poll", "waiting")

    def __init__(self, conn: ServerConnection, http: HTTPPhase) -> None:
        self._conn = conn
        self._http = http
        self._poll: Poll | None = None  # a request whose body is being read
        self.waiting: Polling | None = None  # the transport its GET waits on

    @property
    def node(self) -> Server:
        """The engine."""
        return self._conn._node

    @property
    def busy(self) -> bool:
        """Whether a request is in progress (its body being read, or its answer awaited)."""
        return self._poll is not None or self.waiting is not None

    def start(self, poll: Poll) -> None:
        """A request head arrived: read its body, then serve it.

        Args:
            poll: The request.
        """
        sio = self.node.hub._sio
        assert sio is not None
        if poll.length is not None and poll.length > sio.max_payload:
            self._serve(poll, None)
            return
        self._poll = poll
        self.receive(b"")

    def receive(self, data: bytes) -> None:
        """Bytes of the current request's body, or of the next request while a GET waits.

        Args:
            data: The bytes (empty: parse what is buffered).
        """
        http = self._http
        poll = self._poll
        if poll is None:  # a GET waits: keep what follows for later, bounded
            http.feed(data)
            if http.buffered > self.node.config.max_request_size:
                self._conn._drop("a request arrived while a GET was pending, then too many bytes")
            return
        sio = self.node.hub._sio
        assert sio is not None
        body = http.receive_body(data, sio.max_payload)
        if body is None:
            return
        self._poll = None
        if isinstance(body, Answer):
            if body.status == 413:
                self._serve(poll, None)
            else:
                self.answer(body)
            return
        self._serve(poll, body)

    def _serve(self, poll: Poll, body: bytes | None) -> None:
        if serve_request(self.node, poll.request, poll.method, body, self):
            self.node._deadlines.disarm(self._conn)  # the session's ping answers it in time

    def held(self, transport: Polling | None) -> None:
        """The GET waits on ``transport`` (``None``: it was answered).

        Args:
            transport: The session's transport.
        """
        self.waiting = transport

    def answer(self, answer: Answer) -> None:
        """Write the answer, keeping the connection for the next request when HTTP allows.

        Args:
            answer: The response.
        """
        conn = self._conn  # alive: its end takes the waiting GET off its transport first
        http = self._http
        if answer.status >= 400:
            log_refusal(conn.client, answer.status, answer.body.decode("utf-8", "replace"))
        conn._write_control(http.respond(answer, keep_alive=True))
        if not http.next_cycle() or not self.node.hub.accepting:
            # The client asked (or sent more than the answer needed: linger), or the server
            # shuts down (then at once: a browser's idle connection must not hold it).
            conn._drop(None, linger=self.node.hub.accepting)
            return
        node = self.node
        conn._idle(node._now + node.config.handshake_timeout)
        if http.buffered:
            receive_http(conn, b"")

    def gone(self) -> None:
        """The connection ended: a GET that waited ends its session."""
        transport = self.waiting
        if transport is not None:
            self.waiting = None
            transport.gone(self)


def serve_request(
    node: Server, request: Request, method: str, body: bytes | None, waiter: Waiter
) -> bool:
    """Serve one request to the long-polling transport; answer it now, or let it wait.

    Args:
        node: The engine.
        request: The request (its path is the mount's).
        method: Its method.
        body: Its body, or ``None`` when it was larger than ``max_payload``.
        waiter: What answers it.

    Returns:
        Whether it waits (a GET with nothing to send yet).
    """
    sio = node.hub._sio
    assert sio is not None
    hub = sio.hub
    hub._depth += 1
    try:
        answer = serve(sio, request, method, body, waiter)
    finally:
        hub._depth -= 1
    if answer is None:
        return True
    waiter.answer(answer)
    return False
