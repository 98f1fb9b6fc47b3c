"""The HTTP phase of a connection: h11 parses the request, and we answer it or upgrade.

Every connection starts here (RFC 6455 section 4: the opening handshake is
an HTTP/1.1 request). :class:`HTTPPhase` feeds bytes to h11 until a whole
request head arrived (or the head grew past ``max_request_size``: 431), then
:func:`examine` decides what the request is: a WebSocket upgrade to accept,
a plain GET of a static page, or something to refuse (400, 404, 426).

The usual opening handshake (a ``GET`` whose whole head came in the first
bytes, every line as h11's grammar has it, one ``Host``, no body) is read by
:func:`read_head` without making an h11 connection; anything else, and any
later use of the exchange (an answer, a body, keep-alive), goes through h11,
which is then given the same bytes.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from http import HTTPStatus

import h11

from ._routing import Request

__all__: list[str] = []

Headers = Sequence[tuple[str, str]]


@dataclass(frozen=True, slots=True)
class Answer:
    """Answer the request with this plain HTTP response, then close the connection."""

    status: int
    body: bytes
    headers: Headers = ()
    head: bool = False  # a HEAD request: no body


@dataclass(frozen=True, slots=True)
class Upgrade:
    """A valid WebSocket opening handshake, to accept or refuse."""

    request: Request
    key: bytes


@dataclass(frozen=True, slots=True)
class Poll:
    """A plain HTTP request on a mounted endpoint (Socket.IO's long-polling transport)."""

    request: Request
    method: str
    length: int | None  # the Content-Length announced, if any


@dataclass(frozen=True, slots=True)
class Head:
    """A request head :func:`read_head` read, with what h11 would have made of it."""

    method: bytes
    target: bytes
    headers: list[tuple[bytes, bytes]]  # names lower-cased, values without surrounding spaces


# h11's grammar (RFC 9110/9112, as in h11._abnf), restricted to an origin-form GET of HTTP/1.1.
_REQUEST_LINE = re.compile(rb"GET (/[\x21-\x7e]*) HTTP/1\.1")
_FIELD = re.compile(
    rb"([-!#$%&'*+.^_`|~0-9a-zA-Z]+):[ \t]*((?:[^\x00\s]+(?:[ \t]+[^\x00\s]+)*)?)[ \t]*"
)
_BODY_FIELDS = (b"content-length", b"transfer-encoding")
_SWITCHING = b"HTTP/1.1 101 Switching Protocols\r\n"


def read_head(data: bytes, limit: int) -> tuple[Head, int] | None:
    """Read the usual opening handshake without h11, when all of its head is in ``data``.

    Only heads h11 reads the same way are taken: an origin-form ``GET`` of
    HTTP/1.1, CRLF line ends, every header line a token, a colon and a value
    of visible characters, exactly one ``Host``, no ``Content-Length`` or
    ``Transfer-Encoding``, at most ``limit`` bytes.

    Args:
        data: The first bytes of a connection.
        limit: The largest request head accepted.

    Returns:
        The head and its length in bytes, or ``None``: leave it to h11.
    """
    end = data.find(b"\r\n\r\n")
    if end < 0 or end + 4 > limit:
        return None
    lines = data[:end].split(b"\r\n")
    request = _REQUEST_LINE.fullmatch(lines[0])
    if request is None:
        return None
    headers: list[tuple[bytes, bytes]] = []
    hosts = 0
    for line in lines[1:]:
        field = _FIELD.fullmatch(line)
        if field is None:
            return None
        name = field[1].lower()
        if name in _BODY_FIELDS:
            return None
        hosts += name == b"host"
        headers.append((name, field[2]))
    if hosts != 1:
        return None
    return Head(b"GET", request[1], headers), end + 4


def _text(status: int, text: str, headers: Headers = ()) -> Answer:
    return Answer(status, text.encode("utf-8"), headers)


_UPGRADE_REQUIRED = (("upgrade", "websocket"), ("sec-websocket-version", "13"))


class HTTPPhase:
    """The request half of one connection's HTTP/1.1 exchange, on h11.

    Args:
        max_request_size: The largest request head accepted, in bytes.
    """

    __slots__ = ("_body", "_early", "_h11", "_head_bytes", "_max", "_trailing")

    def __init__(self, max_request_size: int) -> None:
        self._h11: h11.Connection | None = None  # made when first needed
        #: The bytes of a head read without h11 (and what followed it), for h11 if needed.
        self._early = b""
        self._trailing = b""
        self._max = max_request_size
        self._head_bytes = 0
        self._body = bytearray()

    @property
    def _parser(self) -> h11.Connection:
        h = self._h11
        if h is None:
            h = self._h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=self._max)
            if self._early:  # h11 reads the head read_head() read, to the same request
                h.receive_data(self._early)
                h.next_event()
                self._early = self._trailing = b""
        return h

    def receive(self, data: bytes) -> h11.Request | Head | Answer | None:
        """Feed bytes; return the request once its head is complete.

        Args:
            data: Bytes from the peer.

        Returns:
            The request, an :class:`Answer` refusing a malformed or oversized
            one (400, 431), or ``None`` while more bytes are needed.
        """
        if self._h11 is None and not self._head_bytes:
            read = read_head(data, self._max)
            if read is not None:
                head, size = read
                self._head_bytes = len(data)
                self._early = data
                self._trailing = data[size:]
                return head
        self._head_bytes += len(data)
        h = self._parser
        if data:  # empty: parse what is buffered (h11 takes b"" for the end of input)
            h.receive_data(data)
        try:
            event = h.next_event()
        except h11.RemoteProtocolError as exc:
            status = exc.error_status_hint
            return _text(status if status in (400, 431) else 400, "bad request")
        if event is h11.NEED_DATA:
            return None
        if not isinstance(event, h11.Request):  # pragma: no cover - h11 yields a Request first
            return _text(400, "bad request")
        # h11 limits only an incomplete head; one that arrived whole is measured here.
        if self._head_bytes - len(h.trailing_data[0]) > self._max:
            return _text(431, "request header fields too large")
        return event

    def receive_body(self, data: bytes, limit: int) -> bytes | Answer | None:
        """Feed bytes of a request body; return the body once it is whole.

        Args:
            data: Bytes from the peer (may be empty: parse what is buffered).
            limit: The largest body accepted.

        Returns:
            The body, an :class:`Answer` (413 past ``limit``, 400 when
            malformed), or ``None`` while more bytes are needed.
        """
        h = self._parser
        if data:
            h.receive_data(data)
        body = self._body
        try:
            while True:
                event = h.next_event()
                if event is h11.NEED_DATA:
                    return None
                if isinstance(event, h11.Data):
                    body += event.data
                    if len(body) > limit:
                        return _text(413, "Payload Too Large")
                elif isinstance(event, h11.EndOfMessage):
                    self._body = bytearray()
                    return bytes(body)
                else:  # pragma: no cover - h11 yields only data, then the end, in a body
                    return _text(400, "bad request")
        except h11.RemoteProtocolError:
            return _text(400, "bad request")

    def feed(self, data: bytes) -> None:
        """Keep bytes of the next request for later (while the current one is answered).

        Args:
            data: Bytes from the peer (not empty: that is the end of input).
        """
        self._parser.receive_data(data)

    @property
    def buffered(self) -> int:
        """How many bytes of the peer's next request wait in the parser."""
        return len(self._parser.trailing_data[0])

    def next_cycle(self) -> bool:
        """After a keep-alive response: get ready for the next request on the connection.

        Returns:
            Whether the connection may carry another request (else close it).
        """
        h = self._parser
        if h.our_state is not h11.DONE or h.their_state is not h11.DONE:
            return False
        h.start_next_cycle()
        self._head_bytes = len(h.trailing_data[0])
        return True

    @property
    def trailing(self) -> bytes:
        """Bytes that arrived after the request head (the first frames, maybe)."""
        if self._h11 is None:
            return self._trailing
        return bytes(self._h11.trailing_data[0])

    def respond(self, answer: Answer, *, keep_alive: bool = False) -> bytes:
        """Encode a plain response that closes the connection, or keeps it for another request.

        Args:
            answer: The response.
            keep_alive: Leave the connection open (see :meth:`next_cycle`).

        Returns:
            The bytes to write.
        """
        headers = _response_headers(answer, keep_alive)
        phrase = _phrase(answer.status)
        # h11 still lets the server answer after the client's request was unparseable.
        h = self._parser
        response = h11.Response(status_code=answer.status, headers=headers, reason=phrase)
        chunks = [h.send(response) or b""]
        if not answer.head:
            chunks.append(h.send(h11.Data(data=answer.body)) or b"")
        chunks.append(h.send(h11.EndOfMessage()) or b"")
        return b"".join(chunks)

    def switch(self, headers: list[tuple[bytes, bytes]]) -> bytes:
        """Encode the ``101 Switching Protocols`` answer (RFC 6455 section 4.2.2).

        Args:
            headers: The response headers.

        Returns:
            The bytes to write (as h11 writes them; the connection leaves HTTP here).
        """
        return _SWITCHING + b"".join([b"%s: %s\r\n" % field for field in headers]) + b"\r\n"


def _response_headers(answer: Answer, keep_alive: bool = False) -> list[tuple[str, str]]:
    headers = [("content-length", str(len(answer.body))), *answer.headers]
    if not keep_alive:
        headers.insert(1, ("connection", "close"))
    if not any(name.lower() == "content-type" for name, _ in answer.headers):
        headers.append(("content-type", "text/plain; charset=utf-8"))
    return headers


def _phrase(status: int) -> bytes:
    try:
        return HTTPStatus(status).phrase.encode("ascii")
    except ValueError:
        return b""


def encode_early(answer: Answer) -> bytes:
    """Encode a response sent before the request arrived, then the connection closes.

    h11 only answers a request it has seen; RFC 9112 section 9.6 still lets a
    server send a response (and ``Connection: close``) at any time, which is
    how a server past ``max_handshakes`` turns a connection away at once.

    Args:
        answer: The response (a HEAD request cannot be known yet: the body is sent).

    Returns:
        The bytes to write.
    """
    lines = [b"HTTP/1.1 %d %s" % (answer.status, _phrase(answer.status))]
    lines.extend(
        name.encode("latin-1") + b": " + value.encode("latin-1")
        for name, value in _response_headers(answer)
    )
    return b"\r\n".join(lines) + b"\r\n\r\n" + answer.body


def examine(
    req: h11.Request | Head,
    *,
    client: tuple[str, int] | None,
    scheme: str,
    has_route: Callable[[str], bool],
    static: Mapping[str, tuple[str, bytes]],
    polls: Callable[[str], bool] | None = None,
) -> Upgrade | Answer | Poll:
    """Decide what a complete request is.

    Args:
        req: The request head, from h11 or :func:`read_head`.
        client: The peer's address.
        scheme: ``"ws"`` or ``"wss"``.
        has_route: Whether a path is one of the hub's WebSocket routes.
        static: The static pages.
        polls: Whether a path serves HTTP long-polling (Socket.IO's): a
            plain request there is a :class:`Poll`.

    Returns:
        The upgrade to accept or refuse, the poll to serve, or the answer to send.
    """
    if not req.target.startswith(b"/"):
        # Only the origin-form names a route here ("*", "http://host/ws" do not).
        return _text(400, "the request target must be a path")
    request = Request.from_target(req.target, req.headers, client=client, scheme=scheme)
    headers = request.headers
    upgrade = "websocket" in headers.get("upgrade", "").lower() and any(
        t.lower() == "upgrade" for t in headers.get_list("connection")
    )
    if req.method != b"GET" or not upgrade:
        if polls is not None and polls(request.path):
            length = headers.get("content-length")
            size = int(length) if length is not None and length.isdigit() else None
            return Poll(request, req.method.decode("ascii", "replace"), size)
        if has_route(request.path):
            return _text(426, "this is a WebSocket endpoint: upgrade required", _UPGRADE_REQUIRED)
        if req.method in (b"GET", b"HEAD") and request.path in static:
            ctype, body = static[request.path]
            return Answer(200, body, (("content-type", ctype),), head=req.method == b"HEAD")
        return _text(404, "not found")
    if headers.get("sec-websocket-version") != "13":
        return _text(426, "unsupported WebSocket version", (("sec-websocket-version", "13"),))
    key = headers.get("sec-websocket-key", "")
    try:
        valid_key = len(base64.b64decode(key, validate=True)) == 16
    except (binascii.Error, ValueError):
        valid_key = False
    if not valid_key:
        return _text(400, "missing or invalid Sec-WebSocket-Key")
    return Upgrade(request, key.encode("ascii"))
