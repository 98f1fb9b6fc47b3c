"""One Engine.IO session over a WebSocket: its heartbeat, its namespaces and their acks.

Theory of operation. A WebSocket request to the mount's path becomes an
:class:`EngineSocket`: a :class:`~ikisocket_core.Websocket` the hub never
registers (broadcasts do not see it), whose ``conn`` is the engine's
connection, so the engine writes what is sent to it and reports what it
reads. The hub hands every message of such a socket to its
:class:`EngineSession`, which decodes Engine.IO and Socket.IO packets and
acts on them:

* ``CONNECT`` to a declared namespace makes a plain ``Websocket`` for that
  namespace (registered in the hub like any connection: UUID, attributes,
  rooms, ``connect``/``disconnect`` events). Its ``conn`` is a
  :class:`Joined` record, which keeps the namespace's ack ids and pending
  acks and leads back to the session;
* ``EVENT`` runs the namespace's listeners; ``ACK`` answers a pending ack;
  ``DISCONNECT`` ends one namespace connection;
* pings are the server's (Engine.IO v4 "Heartbeat"): every ``ping_interval``
  it sends ``2`` and the client has ``ping_timeout`` to answer ``3``.

Time comes from the hub's ticks only. A timer is armed in two steps: first at
the last time the hub was told (so the next tick comes at once), then, from
that tick's fresh reading, at ``now + delay``. A deadline is thus never
early, whatever the driver's tick rate.

Anything malformed closes the whole session with 1002 (Socket.IO v5: "the
receiver MUST close the connection"); its namespace connections get
``error`` then ``disconnect`` events carrying the :class:`PacketError`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from ikisocket_core._actions import Close, _send_action
from ikisocket_core._errors import ConnectionClosed, RemoteProtocolError
from ikisocket_core._events import MessageKind
from ikisocket_core._log import logger, peer_name
from ikisocket_core._state import ConnectionState, StateInput, transition
from ikisocket_core._websocket import Websocket

from ._packets import (
    EngineType,
    PacketError,
    SocketDecoder,
    SocketPacket,
    SocketType,
    decode_engine,
    dumps,
)
from ._socket import ENDED, EngineSocket
from ._timer import Callback

if TYPE_CHECKING:
    from ._mount import SocketIO
    from ._timer import PendingAck

__all__: list[str] = []

_OPEN: Final[ConnectionState] = ConnectionState.OPEN
_CLOSED: Final[ConnectionState] = ConnectionState.CLOSED
_TEXT: Final[MessageKind] = MessageKind.TEXT
_BINARY: Final[MessageKind] = MessageKind.BINARY
_EVENT: Final[SocketType] = SocketType.EVENT
#: How a text EVENT or ACK message starts (Engine.IO ``message``, then the Socket.IO type).
_PLAIN_HEADS: Final = (b"42", b"43")


class PingTimeout(RemoteProtocolError):
    """The client did not answer the server's Engine.IO ping within ``ping_timeout``.

    Args:
        timeout: The ping timeout, in seconds.
    """

    def __init__(self, timeout: float) -> None:
        super().__init__(f"no pong within {timeout:g} s", close_code=1001)


class ConnectTimeout(RemoteProtocolError):
    """The client joined no namespace within ``connect_timeout`` of opening the session.

    Args:
        timeout: The connect timeout, in seconds.
    """

    def __init__(self, timeout: float) -> None:
        super().__init__(f"no namespace joined within {timeout:g} s", close_code=1008)


class Joined:
    """A namespace connection's link to its session: the ``conn`` of its ``Websocket``.

    Attributes:
        session: The Engine.IO session.
        socket: The session's transport socket (what packets are written to).
        kws: The namespace connection.
        next_id: The ack id the next event that asks for an ack gets.
        pending: The acks awaited, by id.
        backlog: Its connection-state recovery state (``None`` when recovery is off).
    """

    __slots__ = ("backlog", "kws", "next_id", "pending", "session", "socket")

    def __init__(self, session: EngineSession, kws: Websocket) -> None:
        self.session = session
        self.socket = session.socket
        self.kws = kws
        self.next_id = 0
        self.pending: dict[int, PendingAck] = {}
        self.backlog: Any = None

    def __repr__(self) -> str:
        return f"<Joined {self.kws.namespace} {self.kws.uuid}>"


class EngineSession:
    """The Engine.IO session of one :class:`EngineSocket`, and its namespace connections.

    Args:
        mount: The Socket.IO mount.
        socket: The transport socket (already OPEN).
        uuid: The UUID the hook chose for the first namespace connection, if any.
        attributes: The attributes the hook gave, for every namespace connection.
    """

    __slots__ = (
        "attributes",
        "close_with",
        "connect_timer",
        "decoder",
        "ended",
        "joined",
        "mount",
        "ping_timer",
        "pinged",
        "socket",
        "uuid",
    )

    def __init__(
        self,
        mount: SocketIO,
        socket: EngineSocket,
        *,
        uuid: str | None,
        attributes: Any,
    ) -> None:
        self.mount = mount
        self.socket = socket
        self.uuid = uuid
        self.attributes = attributes
        self.joined: dict[str, Joined] = {}
        self.decoder = SocketDecoder(
            max_attachments=mount.max_attachments, max_attachment_bytes=mount.max_payload
        )
        self.ended = False
        self.pinged = False
        # How the transport is closed once the server closed its last namespace.
        self.close_with = (1000, "server disconnect")
        self.ping_timer = Callback(self._ping_due)
        self.connect_timer = Callback(self._connect_due)

    def __repr__(self) -> str:
        return f"<EngineSession {self.socket.uuid} {sorted(self.joined)}>"

    @property
    def transport(self) -> str:
        """``"polling"`` or ``"websocket"``: the transport the session is on now."""
        name: str = getattr(self.socket.conn, "transport_name", "websocket")
        return name

    # -- output --------------------------------------------------------------------------

    def write(self, text: str, attachments: tuple[bytes, ...] = ()) -> None:
        """Send one Engine.IO message (``4`` + ``text``) and its binary attachments.

        Args:
            text: The Socket.IO packet's text.
            attachments: Its attachments, one binary message each.
        """
        socket = self.socket
        targets = (socket,)
        hub = self.mount.hub
        # What hub._send does for the transport (not a namespace connection: sent as it is),
        # its direct path included: an ACK during this connection's own input goes onto it.
        data = ("4" + text).encode("utf-8")
        receiving = hub._receiving
        if receiving is not None and receiving is socket.conn and not hub._queue:
            receiving.deliver_own(data, _TEXT)
        else:
            hub._push(_send_action(targets, data, _TEXT))
        for attachment in attachments:
            hub._send(targets, attachment, _BINARY)

    def write_packet(self, packet: SocketPacket) -> None:
        """Encode and send one Socket.IO packet.

        Args:
            packet: The packet.
        """
        self.write(*self.mount._encode(packet))

    # -- input ---------------------------------------------------------------------------

    def opened(self, sid: str) -> None:
        """Send the ``open`` packet and start the heartbeat and the connect timeout.

        Args:
            sid: The Engine.IO session id.
        """
        mount = self.mount
        handshake = {
            "sid": sid,
            # A WebSocket session has nothing to upgrade to.
            "upgrades": ["websocket"] if self.transport == "polling" else [],
            "pingInterval": round(mount.ping_interval * 1000),
            "pingTimeout": round(mount.ping_timeout * 1000),
            "maxPayload": mount.max_payload,
        }
        mount.hub._send((self.socket,), "0" + dumps(handshake), _TEXT)
        mount._arm(self.ping_timer, mount.ping_interval)
        mount._arm(self.connect_timer, mount.connect_timeout)

    def receive(self, data: bytes, kind: MessageKind) -> None:
        """One WebSocket message of the transport. Never raises because of what it holds.

        Args:
            data: The message.
            kind: ``TEXT`` or ``BINARY``.
        """
        if self.ended:
            return
        try:
            if len(data) > self.mount.max_payload:
                raise RemoteProtocolError(
                    f"a packet of {len(data)} bytes exceeds maxPayload", close_code=1009
                )
            if kind is _TEXT and data.startswith(_PLAIN_HEADS):
                # The common packets (a text EVENT or ACK): parsed at a glance, no packet object.
                try:
                    text = data[1:].decode("utf-8")
                except UnicodeDecodeError:  # pragma: no cover - the WebSocket layer checked it
                    raise PacketError("an Engine.IO text packet is UTF-8") from None
                plain = self.decoder.receive_plain(text)
                if plain is not None:
                    type_of, namespace, body, ack_id = plain
                    joined = self.joined.get(namespace)
                    if type_of is _EVENT and joined is not None:  # the common case, at once
                        self.mount._client_event(joined, body, ack_id)
                    else:
                        self._on_packet(type_of, namespace, body, ack_id)
                    return
            packet = decode_engine(data, kind is _BINARY)
            kind_of = packet.type
            if kind_of is EngineType.MESSAGE:
                body = packet.data
                decoder = self.decoder
                found = (
                    decoder.receive_binary(body)
                    if isinstance(body, bytes)
                    else decoder.receive_text(body)
                )
                if found is not None:
                    self._socket_packet(found)
            elif kind_of is EngineType.PONG:
                if self.pinged:
                    self.pinged = False
                    self.mount._arm(self.ping_timer, self.mount.ping_interval)
            elif kind_of is EngineType.PING:
                # v4 clients ping only to probe an upgrade; answer as the protocol says.
                self.mount.hub._send((self.socket,), "3" + str(packet.data), _TEXT)
            elif kind_of is EngineType.CLOSE:
                self.end(ConnectionClosed(1000, "client closed the session"), close=1000)
            elif kind_of is not EngineType.NOOP:
                raise PacketError(f"a client does not send {kind_of.name.lower()} packets")
        except RemoteProtocolError as exc:
            self.fail(exc)

    def _socket_packet(self, packet: SocketPacket) -> None:
        self._on_packet(packet.type, packet.namespace, packet.data, packet.id)

    def _on_packet(self, kind: SocketType, namespace: str, data: Any, ack_id: int | None) -> None:
        joined = self.joined.get(namespace)
        if kind is SocketType.EVENT and joined is not None:  # the common case, first
            self.mount._client_event(joined, data, ack_id)
        elif kind is SocketType.CONNECT:
            if joined is None:
                self.mount._connect_namespace(self, namespace, data or {})
            else:
                # socket.io-client sends CONNECT again when connect() is called while it
                # is connecting: answer it again, the connection stays the same.
                self.write_packet(
                    SocketPacket(
                        type=SocketType.CONNECT, namespace=namespace, data={"sid": joined.kws.uuid}
                    )
                )
        elif kind is SocketType.CONNECT_ERROR:
            raise PacketError("a client does not send CONNECT_ERROR")
        elif joined is None:
            # A namespace this session left (or never joined): the client may not know
            # yet that the server disconnected it, so this is not an error.
            logger.debug("ignoring a packet for namespace %s, not connected", namespace)
        elif kind is SocketType.ACK:
            pending = joined.pending.pop(ack_id, None)  # type: ignore[arg-type]
            if pending is not None:
                self.mount._disarm(pending)
                self.mount._call_back(joined.kws, pending.callback, tuple(data))
        else:  # DISCONNECT
            self.leave(joined, ConnectionClosed(1000, "client namespace disconnect"))
            self.mount.hub.receive_disconnect(joined.kws, 1000, "client namespace disconnect")

    # -- namespaces ----------------------------------------------------------------------

    def join(self, joined: Joined) -> None:
        """A namespace connection was accepted: the connect timeout no longer runs.

        Args:
            joined: Its link.
        """
        self.joined[joined.kws.namespace] = joined
        self.mount.connections += 1
        self.mount._disarm(self.connect_timer)

    def leave(self, joined: Joined, why: BaseException) -> None:
        """A namespace connection ended: fail its pending acks, forget it.

        With no namespace left, the connect timeout runs again: a session
        without namespaces is not kept forever.

        Args:
            joined: Its link.
            why: What its pending acks are failed with.
        """
        del self.joined[joined.kws.namespace]
        self.mount.connections -= 1
        self.fail_acks(joined, why)
        if not self.joined and not self.ended:
            self.mount._arm(self.connect_timer, self.mount.connect_timeout)

    def fail_acks(self, joined: Joined, why: BaseException) -> None:
        """Call every pending ack callback of ``joined`` with ``why``.

        Args:
            joined: The namespace connection.
            why: The exception the callbacks get.
        """
        pending = joined.pending
        joined.pending = {}
        for ack in pending.values():
            self.mount._disarm(ack)
            self.mount._call_back(joined.kws, ack.callback, why)

    # -- timers --------------------------------------------------------------------------

    def _ping_due(self, now: float) -> None:
        mount = self.mount
        if self.pinged:
            self.fail(PingTimeout(mount.ping_timeout))
            return
        self.pinged = True
        mount.hub._send((self.socket,), "2", _TEXT)
        mount._arm(self.ping_timer, mount.ping_timeout)

    def _connect_due(self, now: float) -> None:
        self.fail(ConnectTimeout(self.mount.connect_timeout))

    # -- endings -------------------------------------------------------------------------

    def fail(self, error: RemoteProtocolError) -> None:
        """The client broke the protocol or timed out: end the session and close its socket.

        Args:
            error: What happened; its ``close_code`` is sent.
        """
        logger.info(
            "failed Socket.IO session %s of %s: %s",
            self.socket.uuid,
            peer_name(self.socket.request.client),
            error,
        )
        hub = self.mount.hub
        for joined in tuple(self.joined.values()):
            hub.receive_error(joined.kws, error)
        recoverable = isinstance(error, PingTimeout)
        self.end(error, close=error.close_code, reason=str(error)[:100], recoverable=recoverable)

    def end(
        self,
        why: BaseException,
        *,
        close: int | None = None,
        reason: str = "",
        recoverable: bool = False,
    ) -> None:
        """End the session once: its namespace connections get ``disconnect``.

        Args:
            why: The cause, given to the ``disconnect`` events and failed acks.
            close: Close the transport with this code (``None``: it is gone already).
            reason: The close reason.
            recoverable: The transport dropped: with recovery on, its namespace
                connections are held for their client to come back instead.
        """
        if self.ended:
            return
        self.ended = True
        mount = self.mount
        mount._disarm(self.ping_timer)
        mount._disarm(self.connect_timer)
        # Never armed again (leave arms nothing once ended): they let go of this session.
        self.ping_timer.release()
        self.connect_timer.release()
        socket = self.socket
        if close is not None and socket.state is _OPEN:
            socket.state = transition(socket.state, StateInput.SERVER_CLOSE)
            mount.hub._push(Close(target=socket, code=close, reason=reason))
        code = close if close is not None else 1006
        cause = why.cause if isinstance(why, ConnectionClosed) else why
        text = why.reason if isinstance(why, ConnectionClosed) else reason
        recoveries = mount._recovery if recoverable else None
        for joined in tuple(self.joined.values()):
            if recoveries is not None and joined.backlog is not None:
                recoveries.hold(joined, why, code, text, cause)
                continue
            self.leave(joined, why)
            mount.hub.receive_disconnect(joined.kws, code, text, cause)
        mount._forget(self)
        if socket.state is _CLOSED:
            self.let_go()

    def let_go(self) -> None:
        """The session ended and its socket is ``CLOSED``: the socket lets go of it.

        The socket and the session refer to each other (as do a polling
        transport and the session); once both are over, nothing reads the
        socket's ``session`` (the hub and the engine do only while it is not
        ``CLOSED``), so the links go and neither waits for the garbage
        collector. Called by whichever of the two ends last.
        """
        socket = self.socket
        socket.session = ENDED
        if self.transport == "polling":  # (its conn is the Polling, which holds this session)
            socket.conn = None

    def transport_gone(self, code: int, reason: str, error: BaseException | None) -> None:
        """The engine reports the transport ended (the peer closed it, or it dropped).

        Args:
            code: The WebSocket close code received (1006: none).
            reason: The close reason.
            error: The transport error, if any.
        """
        socket = self.socket  # OPEN, or CLOSING when the server closed it (never CLOSED)
        socket.state = transition(socket.state, StateInput.PEER_GONE)
        if self.ended:  # (the server ended it first: its socket is CLOSED only now)
            self.let_go()
        else:
            self.end(ConnectionClosed(code, reason, error), recoverable=True)
