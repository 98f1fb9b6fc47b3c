"""A virtual HTTP long-polling transport for :class:`~ikisocket_core.testing.TestClient`.

:class:`PollingTestTransport` speaks Engine.IO v4 over keep-alive HTTP/1.1
requests to the engine, as socket.io-client does: one connection keeps a GET
pending (the next one is sent as soon as an answer arrives), another carries
the POSTs. It offers what a virtual WebSocket offers to the Socket.IO test
session (``send_text``, ``send_bytes``, ``on_message``, ``closed``...), so a
:class:`SocketIOTestSession` runs over it unchanged, and :meth:`upgrade`
moves it to a WebSocket as socket.io-client does (``2probe``, ``3probe``,
``5``).
"""

from __future__ import annotations

import base64
import json
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import h11

from ikisocket_core._errors import IkisocketError
from ikisocket_core._events import MessageKind

from ._polling import decode_payload

if TYPE_CHECKING:
    from ikisocket_core.testing import TestClient, WebSocketTestSession

__all__: list[str] = []

_TEXT = MessageKind.TEXT
_BINARY = MessageKind.BINARY

#: What a virtual HTTP connection calls with each whole response: status, headers, body.
OnResponse = Callable[[int, dict[str, str], bytes], None]


class HTTPTestConnection:
    """One virtual keep-alive HTTP/1.1 connection to the engine.

    Attributes:
        closed: Whether the server closed it.
        waiting: Whether a request awaits its answer.
    """

    __test__ = False
    _reading = True  # what TestClient.pump asks of a peer

    def __init__(self, client: TestClient, on_response: OnResponse) -> None:
        self._client = client
        self._h11 = h11.Connection(h11.CLIENT)
        self._on_response = on_response
        self._status = 0
        self._headers: dict[str, str] = {}
        self._body = bytearray()
        self.closed = False
        self.waiting = False
        self.conn = client._connect()
        self.conn.transport = self

    def send(
        self, method: str, target: str, body: bytes = b"", headers: tuple[tuple[str, str], ...] = ()
    ) -> None:
        """Send one request (its answer goes to ``on_response`` when it comes).

        Args:
            method: The method.
            target: The request target.
            body: The body.
            headers: Extra headers.
        """
        h = self._h11
        head = [("host", "testserver"), ("content-length", str(len(body))), *headers]
        data = h.send(h11.Request(method=method, target=target, headers=head)) or b""
        if body:
            data += h.send(h11.Data(data=body)) or b""
        data += h.send(h11.EndOfMessage()) or b""
        self.waiting = True
        self._client._feed(self.conn, data)

    def deliver(self, data: bytes) -> None:
        """Bytes from the engine.

        Args:
            data: The bytes.
        """
        h = self._h11
        h.receive_data(data)
        while True:
            event = h.next_event()
            if isinstance(event, h11.Response):
                self._status = event.status_code
                self._headers = {k.decode(): v.decode() for k, v in event.headers}
            elif isinstance(event, h11.Data):
                self._body += event.data
            elif isinstance(event, h11.EndOfMessage):
                body = bytes(self._body)
                self._body = bytearray()
                self.waiting = False
                if h.our_state is h11.DONE and h.their_state is h11.DONE:
                    h.start_next_cycle()
                self._on_response(self._status, self._headers, body)
            else:
                return

    def transport_closed(self) -> None:
        """The engine closed the connection."""
        self.closed = True


class PollingTestTransport:
    """A virtual Engine.IO session on HTTP long-polling (see the module docstring).

    Args:
        client: The test client.
        target: The request target of the handshake, without ``sid``.
        headers: Extra headers of every request.

    Attributes:
        sid: The session id from the ``open`` packet.
        probe_answer: What the server answered ``2probe`` with (``3probe``).
        ws: The WebSocket once upgraded.
        on_message: Called with each packet from the server, once set.
        responses: The status of every answer, oldest first.
    """

    __test__ = False

    def __init__(
        self, client: TestClient, target: str, headers: tuple[tuple[str, str], ...] = ()
    ) -> None:
        self._client = client
        self._target = target
        self._headers = headers
        self._inbox: deque[tuple[MessageKind, bytes]] = deque()
        self._polling = True
        self._closed = False
        self.sid = ""
        self.ws: WebSocketTestSession | None = None
        self._probe: WebSocketTestSession | None = None
        self.probe_answer = ""
        self.on_message: Callable[[MessageKind, bytes], None] | None = None
        self.responses: list[int] = []
        self._get = HTTPTestConnection(client, self._got)
        self._post = HTTPTestConnection(client, self._posted)
        self._get.send("GET", target, headers=headers)
        if not self.sid:
            raise IkisocketError(f"no open packet: the handshake was answered {self.responses}")

    @property
    def closed(self) -> bool:
        """Whether the session is over for this client."""
        ws = self.ws
        return self._closed if ws is None else ws.closed

    @property
    def pending(self) -> int:
        """Packets received and not taken yet."""
        return len(self._inbox)

    def receive(self) -> tuple[MessageKind, bytes]:
        """Take the oldest packet received.

        Returns:
            Its kind and bytes.
        """
        return self._inbox.popleft()

    def _got(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.responses.append(status)
        if status != 200:
            self._closed = True
            return
        for data, kind in decode_payload(body):
            if kind is _TEXT and data == b"1":
                self._closed = True
            elif kind is _TEXT and data.startswith(b"0") and not self.sid:
                self.sid = str(json.loads(data[1:])["sid"])
                self._take(kind, data)
            elif not (kind is _TEXT and data == b"6"):
                self._take(kind, data)
        if self._polling and not self._closed:
            self._get.send("GET", self._with_sid(), headers=self._headers)

    def _posted(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.responses.append(status)
        if status != 200:
            self._closed = True

    def _take(self, kind: MessageKind, data: bytes) -> None:
        if self.on_message is None:
            self._inbox.append((kind, data))
        else:
            self.on_message(kind, data)

    def _with_sid(self) -> str:
        return f"{self._target}&sid={self.sid}"

    def post(self, body: bytes) -> None:
        """POST a raw payload (several packets joined by ``0x1E``).

        Args:
            body: The payload.
        """
        self._post.send("POST", self._with_sid(), body, self._headers)

    def send_text(self, data: str) -> None:
        """Send one text packet.

        Args:
            data: The packet.
        """
        if self.ws is not None:
            self.ws.send_text(data)
        elif not self._closed:
            self.post(data.encode("utf-8"))

    def send_bytes(self, data: bytes) -> None:
        """Send one binary packet (base64 on polling).

        Args:
            data: The packet.
        """
        if self.ws is not None:
            self.ws.send_bytes(data)
        elif not self._closed:
            self.post(b"b" + base64.b64encode(data))

    def upgrade(self) -> None:
        """Move the session to a WebSocket as socket.io-client does: probe, then finish."""
        self.probe()
        self.finish()

    def probe(self) -> WebSocketTestSession:
        """Open the WebSocket with the session's ``sid`` and probe it (``2probe``, ``3probe``).

        Polling pauses: the pending GET gets its noop, no other is sent.

        Returns:
            The WebSocket (the server answered ``3probe`` on it).
        """
        target = self._target.replace("transport=polling", "transport=websocket")
        ws = self._client.websocket_connect(f"{target}&sid={self.sid}", headers=self._headers)
        self._polling = False
        ws.send_text("2probe")
        self._probe = ws
        self.probe_answer = ws.receive_text()
        return ws

    def finish(self) -> None:
        """Send ``5``: the session moves to the probed WebSocket."""
        ws = self._probe
        assert ws is not None, "probe() first"
        ws.send_text("5")
        self.ws = ws
        while ws.pending:  # what the polling queue still held
            self._take(*ws.receive())
        ws.on_message = self._take

    def __repr__(self) -> str:
        return f"<PollingTestTransport {self.sid}>"


def polling_transport(client: TestClient, target: str, headers: Any) -> PollingTestTransport:
    """Open a virtual polling session (the handshake GET is answered already).

    Args:
        client: The test client.
        target: The mount's path with its query (``EIO=4&transport=polling`` added).
        headers: Extra headers (pairs).

    Returns:
        The transport.
    """
    path, _, query = target.partition("?")
    extra = "&" + query if query else ""
    return PollingTestTransport(client, f"{path}?EIO=4&transport=polling{extra}", tuple(headers))
