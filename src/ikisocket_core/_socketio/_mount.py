"""The Socket.IO endpoint of a hub: ``hub.socketio(...)`` and the glue to the hub.

:class:`SocketIO` holds the settings, the declared namespaces and their
connect hooks, the sessions and one heap of their deadlines (heartbeats,
connect timeouts, acks). The hub calls it for what concerns Socket.IO:
opening a session on its path, the messages of a session's socket, its
ticks, and every send that reaches a Socket.IO connection, which it turns
into that namespace's ``message`` event (encoded once per namespace,
whatever the number of targets).
"""

from __future__ import annotations

import inspect
import secrets
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any, Final, TypeVar, overload

from ikisocket_core._actions import Reject, RunHandler
from ikisocket_core._dispatch import _Handler
from ikisocket_core._errors import AckTimeout, ConnectionClosed, LocalProtocolError
from ikisocket_core._events import (
    EVENT_MESSAGE,
    RESERVED_EVENTS,
    AckCallback,
    MessageKind,
    _event_payload,
)
from ikisocket_core._log import logger
from ikisocket_core._state import ConnectionState, StateInput, transition
from ikisocket_core._timers import Deadlines
from ikisocket_core._websocket import Websocket

from ._acks import _Answering, _data_of, _Reply, check_event, emit_plain
from ._connect import connect_namespace
from ._namespace import Namespace
from ._packets import MAX_NAMESPACE, SocketPacket, SocketType, encode_fields, encode_socket
from ._polling import probe
from ._recovery import EVENT_RECOVER, Recoveries, Recovery, recovery_settings
from ._session import EngineSession, Joined
from ._socket import EngineSocket
from ._timer import PendingAck, Timer

if TYPE_CHECKING:
    from ikisocket_core._hub import Hub
    from ikisocket_core._routing import Request

__all__ = ["ConnectHook", "SocketIO"]

#: A connect hook: sees a namespace connection before it is accepted (``kws.auth``
#: holds the ``CONNECT`` payload). ``None``/``True`` accepts, ``False`` refuses,
#: raising :class:`~ikisocket_core.ConnectRefused` refuses with its message. It
#: may be ``async def``: the ``CONNECT`` is answered when it finished.
ConnectHook = Callable[[Websocket], "bool | Awaitable[bool | None] | None"]

H = TypeVar("H", bound=ConnectHook)

_OPEN: Final[ConnectionState] = ConnectionState.OPEN
_TEXT: Final[MessageKind] = MessageKind.TEXT
_BINARY: Final[MessageKind] = MessageKind.BINARY
_ACK: Final[SocketType] = SocketType.ACK
#: Exact types of what a listener returns that are never awaitable (no isawaitable call).
_NOT_AWAITABLE: Final = frozenset({str, int, float, bool, bytes, list, dict, tuple})


class SocketIO:
    """Socket.IO (Engine.IO v4, Socket.IO v5) on a hub: made by :meth:`Hub.socketio`.

    Each namespace connection of a session is a
    :class:`~ikisocket_core.Websocket` of the hub (its own UUID, attributes,
    rooms and events), so hub commands reach Socket.IO clients and plain
    ones alike. Sessions run on WebSocket or on HTTP long-polling (and upgrade).

    Attributes:
        hub: The hub it is mounted on.
        path: The path it answers on (``/socket.io/``; without the final
            slash too).
        ping_interval: Seconds between the server's Engine.IO pings.
        ping_timeout: Seconds the client has to answer a ping.
        max_payload: The largest Engine.IO packet accepted, in bytes (also
            the bound on one packet's attachments together).
        connect_timeout: Seconds a session may stay without any namespace.
        cors_allowed_origins: The ``Origin`` values accepted, or ``None`` for
            any (the hub's ``allowed_origins`` applies as well).
        max_pending_acks: The most acks one connection may await at once.
        max_attachments: The most binary attachments one packet may announce.
        recovery: The connection-state recovery settings, or ``None`` when off.
        connections: How many namespace connections are open, on every session
            (held ones included).
    """

    def __init__(
        self,
        hub: Hub,
        path: str = "/socket.io/",
        *,
        ping_interval: float = 25.0,
        ping_timeout: float = 20.0,
        max_payload: int = 1_000_000,
        connect_timeout: float = 45.0,
        cors_allowed_origins: Iterable[str] | None = None,
        recovery: Recovery | float | None = None,
        namespaces: Iterable[str] = (),
        max_pending_acks: int = 1024,
        max_attachments: int = 64,
        sid_factory: Callable[[], str] | None = None,
    ) -> None:
        # Hub.socketio checked the settings (_settings.check_settings).
        self.hub = hub
        self.path = path
        self._paths = frozenset({path, path.rstrip("/") or "/"})
        self.ping_interval = float(ping_interval)
        self.ping_timeout = float(ping_timeout)
        self.connect_timeout = float(connect_timeout)
        self.max_payload = max_payload
        self.max_pending_acks = max_pending_acks
        self.max_attachments = max(0, max_attachments)
        self.recovery = recovery_settings(recovery)
        self._recovery = None if self.recovery is None else Recoveries(self, self.recovery)
        #: Sessions' namespaces whose ``async def`` connect hook runs.
        self._connecting: dict[tuple[EngineSession, str], None] = {}
        self.cors_allowed_origins = (
            None if cors_allowed_origins is None else frozenset(cors_allowed_origins)
        )
        self._sid_factory = sid_factory or (lambda: secrets.token_urlsafe(15))
        self._namespaces: dict[str, str] = {"/": "/"}
        self._hooks: dict[str, ConnectHook] = {}
        self._sessions: dict[EngineSession, None] = {}
        self._sids: dict[str, EngineSession] = {}
        #: How many namespace connections are open (sends skip Socket.IO work at 0).
        self.connections = 0
        self._deadlines: Deadlines[Timer] = Deadlines()
        for name in namespaces:
            self.namespace(name)

    def __repr__(self) -> str:
        return f"<SocketIO {self.path} {len(self._sessions)} sessions>"

    # -- configuration -------------------------------------------------------------------

    @property
    def namespaces(self) -> frozenset[str]:
        """The namespaces clients may connect to (``"/"`` always)."""
        return frozenset(self._namespaces)

    @property
    def sessions(self) -> int:
        """How many Engine.IO sessions are open."""
        return len(self._sessions)

    def namespace(self, name: str) -> SocketIO:
        """Declare a namespace clients may connect to, besides ``"/"``.

        Args:
            name: The namespace, e.g. ``"/admin"``.

        Returns:
            This mount, so that declarations chain.

        Raises:
            TypeError: The name is not a string.
            LocalProtocolError: The name does not start with ``/``, is too
                long or holds a comma.
        """
        if not isinstance(name, str):
            raise TypeError(f"a namespace is a str, not {type(name).__name__}")
        if not name.startswith("/") or "," in name or len(name) > MAX_NAMESPACE:
            raise LocalProtocolError(f"invalid namespace {name!r}")
        self._namespaces.setdefault(name, name)
        return self

    def of(self, name: str) -> Namespace:
        """A view of one namespace: its connections, its rooms, its broadcasts with acks.

        ``sio.of("/chat").to("lobby")`` reaches the members of the hub room
        ``lobby`` that belong to ``/chat`` only, as ``io.of("/chat").to("lobby")``
        does in socket.io.

        Args:
            name: The namespace.

        Returns:
            The view.
        """
        return Namespace(self, name)

    @overload
    def before_connect(self, hook: None = None, *, namespace: str = "/") -> Callable[[H], H]: ...
    @overload
    def before_connect(self, hook: H, *, namespace: str = "/") -> H: ...
    def before_connect(
        self, hook: H | None = None, *, namespace: str = "/"
    ) -> H | Callable[[H], H]:
        """Set the hook that sees each connection to ``namespace`` before it is accepted.

        The hook gets the connection (not yet registered: ``kws.auth`` is the
        client's ``CONNECT`` payload, ``kws.headers`` and ``kws.query`` its
        request's; it may set attributes). It returns ``None`` or ``True`` to
        accept, ``False`` to refuse (``CONNECT_ERROR`` "Connection refused"),
        or raises :class:`~ikisocket_core.ConnectRefused` to refuse with its
        message and data. Usable as a decorator. The namespace is declared.

        Args:
            hook: The hook (sync or ``async def``).
            namespace: The namespace it guards.

        Returns:
            The hook, or a decorator when ``hook`` is omitted.
        """
        if hook is None:
            return lambda fn: self.before_connect(fn, namespace=namespace)
        self.namespace(namespace)
        self._hooks[namespace] = hook
        return hook

    def close_transport(self, kws: Websocket) -> None:
        """Close the transport under a Socket.IO connection, as if the network dropped it.

        No ``DISCONNECT`` is sent, so its client reconnects by itself
        (socket.io's ``socket.conn.close()``). Every namespace connection of
        that session ends, or with recovery on is held for its client to come
        back (see :class:`~ikisocket_core.Recovery`).

        Args:
            kws: A Socket.IO connection of this mount.

        Raises:
            LocalProtocolError: It is a plain WebSocket connection.
        """
        if kws.transport is None:
            raise LocalProtocolError("a plain WebSocket connection has no Socket.IO transport")
        if kws.conn is None:
            return  # it ended (its session with it)
        session = kws.conn.session
        session.end(
            ConnectionClosed(1001, "the server closed the transport"),
            close=1001,
            reason="transport closed",
            recoverable=True,
        )

    # -- the hub's entry points ----------------------------------------------------------

    def _serves(self, path: str) -> bool:
        """Whether ``path`` is this endpoint's.

        Args:
            path: A request path.

        Returns:
            Whether requests to it are Socket.IO's.
        """
        return path in self._paths

    def _refuse_plain(self, request: Request) -> Reject:
        """The answer to a WebSocket request on the path without ``transport=websocket``.

        Args:
            request: The request.

        Returns:
            400.
        """
        return Reject(status=400, reason="a WebSocket request needs transport=websocket")

    def _open(self, request: Request, conn: Any) -> EngineSocket | Reject:
        """A WebSocket request for the path: check it, run the hub's hook, start a session.

        Args:
            request: The request.
            conn: The driver's object for the transport.

        Returns:
            The transport socket, or the refusal.
        """
        query = request.query()
        if query.get("EIO") != "4":
            return Reject(status=400, reason="unsupported Engine.IO version: EIO=4 is required")
        if query.get("transport") != "websocket":
            return self._refuse_plain(request)
        if "sid" in query:  # a WebSocket joining a polling session: the upgrade
            return probe(self, request, conn, query["sid"])
        origin = request.origin
        allowed = self.cors_allowed_origins
        if origin is not None and allowed is not None and origin not in allowed:
            return Reject(status=403, reason="origin not allowed")
        return self._start(request, conn)

    def _start(self, request: Request, conn: Any) -> EngineSocket | Reject:
        """Run the hub's hook and start a session (its ``open`` packet is the caller's).

        Args:
            request: The request.
            conn: The transport's ``conn``.

        Returns:
            The session's socket, or the refusal.
        """
        hub = self.hub
        verdict = hub._verdict_for(request)
        if isinstance(verdict, Reject):
            return verdict
        try:
            sid = self._sid_factory()
        except Exception:
            logger.exception("the Socket.IO sid factory failed")
            return Reject(status=500, reason="internal server error")
        socket = EngineSocket(hub._owner, sid, request, {})
        socket.conn = conn  # its transport stays None: it is written to as it is
        socket.state = transition(socket.state, StateInput.ACCEPT)
        session = socket.session = EngineSession(
            self,
            socket,
            uuid=None if verdict is None else verdict.uuid,
            attributes=None if verdict is None else verdict.attributes,
        )
        self._sessions[session] = None
        self._sids[sid] = session
        if conn is not None:
            session.opened(sid)
        return socket

    def _forget(self, session: EngineSession) -> None:
        """A session ended.

        Args:
            session: The session.
        """
        self._sessions.pop(session, None)
        if self._sids.get(session.socket.uuid) is session:
            del self._sids[session.socket.uuid]

    def _close_all(self, code: int, reason: str) -> None:
        """Close every session's transport (the server shuts down).

        Args:
            code: The WebSocket close code.
            reason: The close reason.
        """
        hub = self.hub
        for session in tuple(self._sessions):
            session.close_with = (code, reason)
            for joined in tuple(session.joined.values()):
                hub._server_close(joined.kws, code, reason)  # ``close`` events, DISCONNECT
            session.end(ConnectionClosed(code, reason), close=code, reason=reason)
        if self._recovery is not None:
            self._recovery.close_all(code, reason)

    # -- timers --------------------------------------------------------------------------

    def _arm(self, timer: Timer, delay: float) -> None:
        """Arm ``timer`` to fire ``delay`` seconds after the next tick (two steps).

        Args:
            timer: The timer.
            delay: Seconds.
        """
        timer.delay = delay
        timer.stamped = False
        self._deadlines.arm(timer, self.hub._now)

    def _disarm(self, timer: Timer) -> None:
        """Disarm ``timer``.

        Args:
            timer: The timer.
        """
        self._deadlines.disarm(timer)

    def _tick(self, now: float) -> None:
        """Fire the timers that are due.

        Args:
            now: The current time.
        """
        deadlines = self._deadlines
        for timer in deadlines.expired(now):
            if timer.stamped:
                timer.fire(now)
            else:
                timer.stamped = True
                deadlines.arm(timer, now + timer.delay)

    # -- sessions' requests ---------------------------------------------------------------

    def _encode(self, packet: SocketPacket) -> tuple[str, tuple[bytes, ...]]:
        """Encode a packet (see :func:`encode_socket`).

        Args:
            packet: The packet.

        Returns:
            Its text and attachments.
        """
        return encode_socket(packet)

    def _connect_namespace(self, session: EngineSession, name: str, auth: dict[str, Any]) -> None:
        """A client asked to join ``name`` (see ``_connect``).

        Args:
            session: The session.
            name: The namespace.
            auth: The ``CONNECT`` payload.
        """
        connect_namespace(self, session, name, auth)

    def _client_event(self, joined: Joined, data: list[Any], ack_id: int | None) -> None:
        """A client event: run the namespace's listeners; answer its ack if it asked.

        Args:
            joined: The namespace connection.
            data: The event's array: its name, then its arguments.
            ack_id: The id to answer, or ``None``.
        """
        hub = self.hub
        kws = joined.kws
        kws.last_activity = hub._now
        name = data[0]
        args = tuple(data[1:])
        if (name != EVENT_MESSAGE and name in RESERVED_EVENTS) or (
            name == EVENT_RECOVER and self._recovery is not None
        ):
            # "connect", "disconnect", "error"...: the hub's own events cannot be spoofed.
            logger.debug("ignoring a client event named %r on %s", name, kws.uuid)
            return
        namespace = kws.namespace
        table = hub._listeners if namespace == "/" else hub._table(namespace)
        listeners = table.get(name, ())
        own = kws.listeners
        if own and name in own:
            listeners = (*listeners, *own[name])
        # A string first argument (most events) as the payload's data, and kws.payload(...),
        # inlined: once per client event.
        if args and isinstance(args[0], str):
            payload, kind = args[0].encode("utf-8"), _TEXT
        else:
            payload, kind = _data_of(args)
        ep = _event_payload(kws, name, kws._uuid, kws._attributes, None, payload, kind, args)
        # The ack is the first non-None result; with none, an empty answer once every
        # listener returned. A _Reply counts them only once an ``async def`` one runs.
        reply: _Reply | None = None
        sent = False
        for fn in listeners:
            try:
                result = fn(ep)
            except Exception as exc:
                hub._listener_failed(ep, exc)
                continue
            if result is None:
                continue
            if result.__class__ not in _NOT_AWAITABLE and inspect.isawaitable(result):
                if ack_id is None:
                    hub._push(RunHandler(target=kws, awaitable=_Handler(hub, ep, result)))
                    continue
                if reply is None:
                    reply = _Reply(self, joined, ack_id)
                    reply.sent = sent
                reply.expect()
                handler = _Answering(hub, ep, result, reply)
                hub._push(RunHandler(target=kws, awaitable=handler))
            elif reply is not None:
                reply.expect()
                reply.done(result)
            elif ack_id is not None and not sent:
                sent = True
                self._answer(joined, ack_id, result)
        if reply is not None:
            reply.done(None)
        elif ack_id is not None and not sent:
            self._answer(joined, ack_id, None)

    def _answer(self, joined: Joined, ack_id: int, value: Any) -> None:
        """Send the ``ACK`` answering a client event (not once the connection ended).

        Args:
            joined: The namespace connection.
            ack_id: The event's ack id.
            value: What a listener returned: ``None`` for no arguments, a
                tuple for several, anything else for one.
        """
        kws = joined.kws
        if kws.state is not _OPEN or joined.session.ended:
            return
        args = [] if value is None else list(value) if isinstance(value, tuple) else [value]
        try:
            # Its fields are valid by construction: the client's id, a list, the namespace.
            joined.session.write(*encode_fields(_ACK, kws.namespace, args, ack_id))
        except (TypeError, ValueError) as exc:
            hub = self.hub
            hub._listener_failed(kws.payload(EVENT_MESSAGE, b"", _TEXT), exc)

    def _call_back(self, kws: Websocket, callback: AckCallback, answer: Any) -> None:
        """Run an ``ack`` callback (failures go to the ``error`` listeners).

        Args:
            kws: The connection the ack was asked of.
            callback: The callback.
            answer: The client's answer (a tuple) or the exception that ended the wait.
        """
        hub = self.hub
        ep = kws.payload("ack")
        hub._depth += 1
        try:
            result = callback(answer)
        except Exception as exc:
            hub._listener_failed(ep, exc)
            return
        finally:
            hub._depth -= 1
        if result is not None and inspect.isawaitable(result):
            hub._push(RunHandler(target=kws, awaitable=_Handler(hub, ep, result)))

    def _ack_timed_out(self, pending: PendingAck) -> None:
        self._call_back(pending.joined.kws, pending.callback, AckTimeout(pending.timeout))

    def _server_closed(self, kws: Websocket) -> None:
        """The hub closed a namespace connection: tell the client with ``DISCONNECT``.

        Its pending acks fail; a session left with no namespace is closed too
        (a Socket.IO client closes it anyway once its last socket is gone).

        Args:
            kws: The connection (already out of routing).
        """
        joined: Joined = kws.conn
        if self._recovery is not None and self._recovery.closed(joined):
            return  # it was held: there is no transport to tell
        session = joined.session  # not ended: its connections would be closed already
        session.write_packet(SocketPacket(type=SocketType.DISCONNECT, namespace=kws.namespace))
        session.leave(joined, ConnectionClosed(1000, "server namespace disconnect"))
        if not session.joined:
            code, reason = session.close_with
            session.end(ConnectionClosed(code, reason), close=code, reason=reason)

    # -- sends ---------------------------------------------------------------------------

    def _send_message(
        self, targets: tuple[Websocket, ...], data: bytes, kind: MessageKind
    ) -> tuple[Websocket, ...]:
        """Queue a message for the Socket.IO connections among ``targets`` as their ``message``.

        Args:
            targets: The connections to send to.
            data: The payload (UTF-8 for text).
            kind: ``TEXT`` or ``BINARY``.

        Returns:
            The plain WebSocket connections among ``targets``, which still need it.
        """
        groups = self._split(targets)
        if groups is None:
            return targets
        plain = groups.pop(None, [])
        value: Any = data.decode("utf-8") if kind is _TEXT else data
        for namespace, conns in groups.items():
            assert namespace is not None
            self._write_event(namespace, ["message", value], conns)
        return tuple(plain)

    def _emit_event(
        self,
        targets: tuple[Websocket, ...],
        event: str,
        args: tuple[Any, ...],
    ) -> None:
        """Queue a named event for ``targets``, Socket.IO and plain ones.

        Args:
            targets: The connections.
            event: The event name.
            args: Its arguments.
        """
        check_event(event)
        groups = self._split(targets)
        if groups is None:
            emit_plain(self.hub, targets, event, args)
            return
        plain = groups.pop(None, [])
        for namespace, conns in groups.items():
            assert namespace is not None
            self._write_event(namespace, [event, *args], conns)
        emit_plain(self.hub, tuple(plain), event, args)

    def _emit_with_ack(
        self,
        kws: Websocket,
        event: str,
        args: tuple[Any, ...],
        ack: AckCallback,
        timeout: float,
    ) -> None:
        """Queue a named event that asks one Socket.IO connection for an ack.

        A connection held for recovery cannot answer: its callback gets a
        :class:`~ikisocket_core.ConnectionClosed` at once (acks are never replayed).

        Args:
            kws: The connection.
            event: The event name.
            args: Its arguments.
            ack: The callback.
            timeout: Seconds to wait.

        Raises:
            LocalProtocolError: Too many acks pending on the connection.
        """
        check_event(event)
        joined: Joined = kws.conn
        if len(joined.pending) >= self.max_pending_acks:
            raise LocalProtocolError(
                f"{len(joined.pending)} acks are pending on {kws.uuid}: no more than"
                f" max_pending_acks={self.max_pending_acks}"
            )
        ack_id = joined.next_id
        # A valid EVENT by construction: a checked name, the connection's namespace, our id.
        text, attachments = encode_fields(  # raises before anything is kept
            SocketType.EVENT, kws.namespace, [event, *args], ack_id
        )
        if joined.backlog is not None and joined.backlog.held is not None:
            self._call_back(kws, ack, ConnectionClosed(1006, "held for connection-state recovery"))
            return
        joined.next_id = (ack_id + 1) % 10**9
        pending = joined.pending[ack_id] = PendingAck(joined, ack_id, ack, timeout)
        self._arm(pending, timeout)
        joined.session.write(text, attachments)

    def _split(self, targets: tuple[Websocket, ...]) -> dict[str | None, list[Websocket]] | None:
        """Group targets by namespace (``None``: plain), or ``None`` when all are plain."""
        groups: dict[str | None, list[Websocket]] | None = None
        for index, kws in enumerate(targets):
            if kws.transport is None:
                if groups is not None:
                    groups[None].append(kws)
                continue
            if groups is None:
                groups = {None: list(targets[:index])}
            groups.setdefault(kws.namespace, []).append(kws)
        return groups

    def _write_event(self, namespace: str, data: list[Any], conns: list[Websocket]) -> None:
        """Encode one ``EVENT`` once and queue it for namespace connections.

        With recovery on it carries a new offset as its last argument, and
        each connection's backlog keeps it (a held one only keeps it).

        Args:
            namespace: Their namespace.
            data: The event's name and arguments.
            conns: The connections.
        """
        # A valid EVENT by construction (its name passed check_event): encoded from its fields.
        recoveries = self._recovery
        if recoveries is None:
            text, attachments = encode_fields(SocketType.EVENT, namespace, data, None)
            self._write_to(tuple(k.conn.socket for k in conns), text, attachments)
            return
        offset = recoveries.next_offset()
        data.append(str(offset))
        text, attachments = encode_fields(SocketType.EVENT, namespace, data, None)
        self._write_to(recoveries.deliver(conns, offset, text, attachments), text, attachments)

    def _write_to(
        self, sockets: tuple[Websocket, ...], text: str, attachments: tuple[bytes, ...]
    ) -> None:
        send = self.hub._send
        send(sockets, "4" + text, _TEXT)
        for attachment in attachments:
            send(sockets, attachment, _BINARY)
