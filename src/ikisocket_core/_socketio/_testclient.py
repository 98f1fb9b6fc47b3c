"""Virtual Socket.IO clients for :class:`~ikisocket_core.testing.TestClient`.

A :class:`SocketIOTestSession` speaks Engine.IO v4 and Socket.IO v5 over one
virtual WebSocket of the test client (the same engine and the same bytes a
socket.io-client would exchange), answers the server's pings, and sorts what
the server sends by namespace. One session object stands for one namespace;
:meth:`SocketIOTestSession.connect` joins another over the same transport.
"""

from __future__ import annotations

import json
from collections import deque
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any

from ikisocket_core._errors import IkisocketError
from ikisocket_core._events import MessageKind
from ikisocket_core._socketio._packets import (
    EngineType,
    SocketDecoder,
    SocketPacket,
    SocketType,
    decode_engine,
    encode_socket,
)
from ikisocket_core._socketio._polltest import PollingTestTransport

if TYPE_CHECKING:
    from ikisocket_core._websocket import Websocket
    from ikisocket_core.testing import TestClient, WebSocketTestSession

# Public through ikisocket_core.testing.
__all__: list[str] = []


class SocketIORefused(IkisocketError):
    """The server answered a namespace ``CONNECT`` with ``CONNECT_ERROR``.

    Args:
        message: The refusal's message (``"Invalid namespace"``...).
        data: Its extra data, if any.
    """

    def __init__(self, message: str, data: Any = None) -> None:
        super().__init__(f"namespace connection refused: {message}")
        self.message = message
        self.data = data


@dataclass(frozen=True, slots=True)
class ReceivedEvent:
    """An event the server sent to a virtual Socket.IO client.

    Attributes:
        name: The event name (``"message"`` for a hub message).
        args: Its arguments (``bytes`` for binary attachments).
        ack_id: The id to answer with :meth:`SocketIOTestSession.ack`, when
            the server asked for an ack.
    """

    name: str
    args: tuple[Any, ...]
    ack_id: int | None = None


class _Wire:
    """The Engine.IO session a virtual client's namespaces share."""

    def __init__(self, client: TestClient, ws: WebSocketTestSession | PollingTestTransport) -> None:
        self.client = client
        self.ws = ws
        self.handshake: dict[str, Any] = {}
        self.auto_pong = True
        self.pings = 0
        self.inboxes: dict[str, deque[SocketPacket]] = {}
        self.decoder = SocketDecoder(max_attachments=1 << 16, max_attachment_bytes=1 << 40)
        while ws.pending:  # the open packet, already there
            self.receive(*ws.receive())
        ws.on_message = self.receive

    def write(self, packet: SocketPacket) -> None:
        text, attachments = encode_socket(packet)
        self.ws.send_text("4" + text)
        for attachment in attachments:
            self.ws.send_bytes(attachment)

    def read(self) -> None:
        """Take what the server sent so far (messages are sorted as they arrive)."""
        self.client.pump()

    def receive(self, kind: MessageKind, data: bytes) -> None:
        """One message from the server, at once (so pings are answered in time)."""
        packet = decode_engine(data, kind is MessageKind.BINARY)
        if packet.type is EngineType.MESSAGE:
            body = packet.data
            decoder = self.decoder
            found = (
                decoder.receive_binary(body)
                if isinstance(body, bytes)
                else decoder.receive_text(body)
            )
            if found is not None:
                self.inboxes.setdefault(found.namespace, deque()).append(found)
        elif packet.type is EngineType.OPEN:
            self.handshake = json.loads(str(packet.data))
        else:  # a ping: the server sends nothing else
            self.pings += 1
            if self.auto_pong:
                self.ws.send_text("3" + str(packet.data))

    def take(self, namespace: str) -> SocketPacket | None:
        self.read()
        inbox = self.inboxes.get(namespace)
        return inbox.popleft() if inbox else None


class SocketIOTestSession:
    """A virtual Socket.IO client connected to one namespace (see ``TestClient.socketio_connect``).

    Use it as a context manager: leaving the block closes the whole session.

    Attributes:
        namespace: The namespace it joined.
        uuid: The namespace connection's UUID on the server (the ``sid`` of
            the ``CONNECT`` answer, socket.io-client's ``socket.id``).
        pid: The private session id of connection-state recovery (``None``
            when the server does not offer recovery).
        offset: The offset of the last event received, which the server
            appends to events under recovery (here taken off their
            arguments); ``None`` before any.
        recovered: Whether the server recovered the connection this session
            asked back (``auth={"pid": ..., "offset": ...}``).
    """

    __test__ = False

    def __init__(self, wire: _Wire, namespace: str, uuid: str) -> None:
        self._wire = wire
        self.namespace = namespace
        self.uuid = uuid
        self._next_id = 0
        self._answers: dict[int, tuple[Any, ...]] = {}
        self._events: deque[ReceivedEvent] = deque()
        self._disconnected = False
        self.pid: str | None = None
        self.offset: str | None = None
        self.recovered = False

    @classmethod
    def _join(cls, wire: _Wire, namespace: str, auth: dict[str, Any] | None) -> SocketIOTestSession:
        wire.write(SocketPacket(type=SocketType.CONNECT, namespace=namespace, data=auth))
        answer = wire.take(namespace)
        if answer is None:
            raise IkisocketError(f"the server did not answer the CONNECT to {namespace}")
        if answer.type is SocketType.CONNECT_ERROR:
            data = answer.data if isinstance(answer.data, dict) else {"message": answer.data}
            raise SocketIORefused(str(data.get("message", "")), data.get("data"))
        session = cls(wire, namespace, str(answer.data["sid"]))
        pid = answer.data.get("pid")
        session.pid = None if pid is None else str(pid)
        session.recovered = pid is not None and (auth or {}).get("pid") == pid
        return session

    # -- what tests read -----------------------------------------------------------------

    @property
    def ws(self) -> WebSocketTestSession:
        """The virtual WebSocket under the session (send raw packets through it).

        Raises:
            IkisocketError: A polling session that was not upgraded has none
                (see :attr:`polling`).
        """
        transport = self._wire.ws
        ws = transport.ws if isinstance(transport, PollingTestTransport) else transport
        if ws is None:
            raise IkisocketError("this session is on HTTP long-polling: see .polling")
        return ws

    @property
    def polling(self) -> PollingTestTransport:
        """The virtual long-polling transport of a session opened with ``transport="polling"``.

        Raises:
            IkisocketError: The session was opened on a WebSocket.
        """
        transport = self._wire.ws
        if not isinstance(transport, PollingTestTransport):
            raise IkisocketError("this session was opened on a WebSocket")
        return transport

    @property
    def handshake(self) -> dict[str, Any]:
        """The Engine.IO ``open`` packet's data (``sid``, ``pingInterval``...)."""
        return self._wire.handshake

    @property
    def kws(self) -> Websocket:
        """The server-side handle of this namespace connection."""
        return self._wire.client.hub.get(self.uuid)

    @property
    def auto_pong(self) -> bool:
        """Whether the client answers the server's Engine.IO pings (turn off to time out)."""
        return self._wire.auto_pong

    @auto_pong.setter
    def auto_pong(self, value: bool) -> None:
        self._wire.auto_pong = value

    @property
    def pings(self) -> int:
        """How many Engine.IO pings the server sent so far."""
        self._wire.read()
        return self._wire.pings

    @property
    def disconnected(self) -> bool:
        """Whether the server ended this namespace connection or the whole session."""
        self._read()
        return self._disconnected or self._wire.ws.closed

    @property
    def pending(self) -> int:
        """How many received events are waiting."""
        self._read()
        return len(self._events)

    def __enter__(self) -> SocketIOTestSession:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- sending -------------------------------------------------------------------------

    def emit(self, event: str, *args: Any) -> None:
        """Emit an event to the server (socket.io-client's ``socket.emit``).

        Args:
            event: The event name.
            *args: Its arguments (``bytes`` become binary attachments).
        """
        self._wire.write(
            SocketPacket(type=SocketType.EVENT, namespace=self.namespace, data=[event, *args])
        )

    def send(self, data: Any) -> None:
        """Emit a ``message`` event (socket.io-client's ``socket.send``).

        Args:
            data: The message.
        """
        self.emit("message", data)

    def call(self, event: str, *args: Any) -> tuple[Any, ...]:
        """Emit an event that asks for an ack, and return the server's answer.

        Args:
            event: The event name.
            *args: Its arguments.

        Returns:
            The answer's arguments.

        Raises:
            NothingReceived: The server has not answered (yet: an ``async def``
                listener may still run).
        """
        from ikisocket_core.testing import NothingReceived  # noqa: PLC0415 (a cycle)

        ack_id = self._next_id
        self._next_id += 1
        self._wire.write(
            SocketPacket(
                type=SocketType.EVENT, namespace=self.namespace, data=[event, *args], id=ack_id
            )
        )
        self._read()
        if ack_id not in self._answers:
            raise NothingReceived(f"the server did not answer the ack of {event!r}")
        return self._answers.pop(ack_id)

    def ack(self, event: ReceivedEvent, *args: Any) -> None:
        """Answer an event the server sent with ``ack=``.

        Args:
            event: The event (it has an ``ack_id``).
            *args: The answer's arguments.
        """
        if event.ack_id is None:
            raise IkisocketError(f"the server did not ask for an ack of {event.name!r}")
        self._wire.write(
            SocketPacket(
                type=SocketType.ACK, namespace=self.namespace, data=list(args), id=event.ack_id
            )
        )

    def connect(self, namespace: str, auth: dict[str, Any] | None = None) -> SocketIOTestSession:
        """Join another namespace over the same session.

        Args:
            namespace: The namespace.
            auth: The ``CONNECT`` payload.

        Returns:
            Its session object.

        Raises:
            SocketIORefused: The server refused it.
        """
        return SocketIOTestSession._join(self._wire, namespace, auth)

    def disconnect(self) -> None:
        """Leave this namespace (a ``DISCONNECT`` packet); the transport stays."""
        if not self._wire.ws.closed:
            self._wire.write(SocketPacket(type=SocketType.DISCONNECT, namespace=self.namespace))
        self._disconnected = True

    def close(self) -> None:
        """Close the whole session: an Engine.IO ``close`` packet (the server closes the rest)."""
        ws = self._wire.ws
        if not ws.closed:
            ws.send_text("1")  # the server closes the WebSocket then

    # -- receiving -----------------------------------------------------------------------

    def receive(self) -> ReceivedEvent:
        """Take the oldest event the server sent to this namespace.

        Returns:
            The event.

        Raises:
            NothingReceived: None is waiting.
        """
        from ikisocket_core.testing import NothingReceived  # noqa: PLC0415 (a cycle)

        self._read()
        if not self._events:
            raise NothingReceived(f"no event is waiting on {self.namespace}")
        return self._events.popleft()

    def receive_event(self, name: str | None = None) -> tuple[Any, ...]:
        """Take the oldest event, check its name, and return its arguments.

        Args:
            name: The name it must have (any when ``None``).

        Returns:
            Its arguments.

        Raises:
            NothingReceived: None is waiting, or it has another name.
        """
        from ikisocket_core.testing import NothingReceived  # noqa: PLC0415 (a cycle)

        event = self.receive()
        if name is not None and event.name != name:
            self._events.appendleft(event)
            raise NothingReceived(f"expected event {name!r}, the next one is {event.name!r}")
        return event.args

    def _read(self) -> None:
        wire = self._wire
        while (packet := wire.take(self.namespace)) is not None:
            if packet.type is SocketType.EVENT:
                data = packet.data
                if self.pid is not None and packet.id is None:
                    self.offset = data.pop()  # recovery's offset, as socket.io-client keeps it
                self._events.append(ReceivedEvent(data[0], tuple(data[1:]), packet.id))
            elif packet.type is SocketType.ACK:
                assert packet.id is not None
                self._answers[packet.id] = tuple(packet.data)
            elif packet.type is SocketType.DISCONNECT:  # pragma: no branch - nothing else
                self._disconnected = True
