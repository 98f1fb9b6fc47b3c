"""The hub's Socket.IO layer: mounting the endpoint and sending named events.

One layer of :class:`~ikisocket_core.Hub`, between the federation layer and
the hub itself (see ``_hub``): what a hub offers for Socket.IO whether or not
anything is mounted (named events reach plain clients as JSON too).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, cast

from ikisocket_core._errors import ConnectionClosed, LocalProtocolError, RelayTooLarge
from ikisocket_core._events import AckCallback
from ikisocket_core._log import logger
from ikisocket_core._relays import EventRelay
from ikisocket_core._state import ConnectionState

from ._acks import check_event, emit_plain
from ._handoff import _HandoffLayer
from ._mount import SocketIO
from ._namespace import AcksCallback, emit_with_acks
from ._packets import PacketError, _deconstruct, _loads, _reconstruct, dumps
from ._recovery import Recovery
from ._remote_acks import _RemoteAcks
from ._session import Joined
from ._settings import check_settings

if TYPE_CHECKING:
    from ikisocket_core._hub import Hub
    from ikisocket_core._websocket import Websocket

__all__: list[str] = []

_OPEN = ConnectionState.OPEN


class _SocketIOLayer(_RemoteAcks, _HandoffLayer):
    """Socket.IO for the hub: :meth:`socketio`, :meth:`emit_event` and their helpers."""

    def socketio(
        self,
        path: str = "/socket.io/",
        *,
        ping_interval: float = 25.0,
        ping_timeout: float = 20.0,
        max_payload: int = 1_000_000,
        connect_timeout: float = 45.0,
        cors_allowed_origins: Iterable[str] | None = None,
        recovery: Recovery | float | None = None,
        namespaces: Iterable[str] = (),
        **options: Any,
    ) -> SocketIO:
        """Serve Socket.IO clients (Engine.IO v4, Socket.IO v5) at ``path``, on this hub.

        Each namespace a client joins is a :class:`Websocket` of this hub, so
        rooms, :meth:`broadcast`, :meth:`emit_to` and :meth:`fire` reach
        Socket.IO and plain WebSocket clients alike; a Socket.IO client gets
        a message as its ``message`` event. Client events run the listeners
        of :meth:`on` for their namespace. This version serves the WebSocket
        transport; an HTTP long-polling request is answered 400.

        Args:
            path: The path (``/socket.io/``, the clients' default).
            ping_interval: Seconds between the server's pings.
            ping_timeout: Seconds a client has to answer a ping.
            max_payload: The largest packet accepted, in bytes.
            connect_timeout: Seconds a session may stay without a namespace.
            cors_allowed_origins: The browser ``Origin`` values accepted, or
                ``None`` for any.
            recovery: Connection-state recovery: ``None`` (off), the longest
                disconnection bridged in seconds, or
                :class:`~ikisocket_core.Recovery` for every bound.
            namespaces: Namespaces clients may join besides ``"/"``.
            **options: ``max_pending_acks``, ``max_attachments``,
                ``sid_factory`` (see :class:`~ikisocket_core.SocketIO`).

        Returns:
            The mount: declare namespaces and connect hooks on it.

        Raises:
            LocalProtocolError: Socket.IO is already mounted on this hub, or
                a setting is invalid.
        """
        if self._sio is not None:
            raise LocalProtocolError(f"Socket.IO is already mounted at {self._sio.path}")
        numbers = {"ping_interval": ping_interval, "ping_timeout": ping_timeout}
        numbers |= {"connect_timeout": connect_timeout, "max_payload": max_payload, **options}
        check_settings(path, numbers)
        self._sio = SocketIO(
            cast("Hub", self),
            path,
            ping_interval=ping_interval,
            ping_timeout=ping_timeout,
            max_payload=max_payload,
            connect_timeout=connect_timeout,
            cors_allowed_origins=cors_allowed_origins,
            recovery=recovery,
            namespaces=namespaces,
            **options,
        )
        return self._sio

    def emit_event(
        self,
        event: str,
        *args: Any,
        namespace: str | None = "/",
        to: str | Iterable[str] | None = None,
    ) -> None:
        """Send a named event to the live connections of a namespace, on every node.

        Socket.IO clients receive it as that event; plain WebSocket clients
        (namespace ``"/"``) the JSON text ``[event, *args]``. Acks are asked
        of one connection at a time (:meth:`Websocket.emit_event`). When the
        hub is federated, the other nodes send it to their connections too
        (one :class:`~ikisocket_core.EventRelay`, encoded once; plain clients
        of other nodes are skipped when an argument is ``bytes``).

        Args:
            event: The event name.
            *args: Its arguments (JSON values; ``bytes`` for Socket.IO only).
            namespace: The namespace, or ``None`` for every connection.
            to: ``None`` for every connection, a room name for its members,
                or UUIDs (on any node; unknown ones are ignored).

        Raises:
            LocalProtocolError: A reserved event name.
            TypeError: An argument cannot travel as JSON.
            RelayTooLarge: The hub is federated and the encoded arguments are
                larger than its ``max_relay_size`` (nothing was sent).
        """
        conns = self._conns
        relay = None
        found: Iterable[Websocket]
        if to is None or isinstance(to, str):
            found = conns.values() if to is None else self._room_members(to)
            relay = self._event_relay(event, args, namespace, room=to)
        else:
            listed = dict.fromkeys(to)
            found = {conns[u]: None for u in listed if u in conns}
            if self._node is not None:
                remote = tuple(u for u in listed if u not in conns and self._is_remote(u))
                if remote:
                    relay = self._event_relay(event, args, namespace, uuids=remote)
        targets = tuple(k for k in found if namespace is None or k.namespace == namespace)
        self._emit_event(targets, event, args)
        if relay is not None:
            self._push_relay(relay)

    def emit_with_acks(
        self,
        event: str,
        *args: Any,
        callback: AcksCallback,
        timeout: float,
        to: str | Iterable[str] | None = None,
        namespace: str | None = "/",
    ) -> None:
        """Send a named event to many Socket.IO connections, asking each an ack, one timeout.

        socket.io's ``io.timeout(ms).emit(event, ..., callback)``: every
        Socket.IO target gets the event with its own ack id; ``callback`` is
        called once, when all answered or failed, with the answers by UUID (a
        tuple of the answer's arguments, or an :class:`AckTimeout`, a
        :class:`ConnectionClosed`...). Plain WebSocket connections cannot
        answer: they are not asked. With no target, ``callback({})`` at once.

        On a federated hub the clients of other nodes are asked too (the
        listed UUIDs' nodes, or for a room or everyone every node this one
        knows of), with the one timeout running here: the answers of every
        node come back to this node, and when the timeout fires the clients
        still awaited get an :class:`AckTimeout` (a node that never said whom
        it asked, e.g. one of an older version, adds nobody). Then
        ``callback`` belongs to no connection: its failures are logged on the
        ``ikisocket`` logger.

        Args:
            event: The event name.
            *args: Its arguments.
            callback: Called once with the answers (sync or ``async def``).
            timeout: Seconds each client has to answer.
            to: ``None`` for every connection, a room name, or UUIDs.
            namespace: Only connections of this namespace (``None``: any).

        Raises:
            LocalProtocolError: Socket.IO is not mounted, a reserved event
                name, a timeout that is not a positive number, or (federated)
                ``max_pending_acks`` broadcasts with acks to other nodes pending.
            TypeError: An argument cannot travel as JSON.
            RelayTooLarge: The hub is federated and the encoded arguments are
                larger than its ``max_relay_size`` (nothing was sent).
        """
        sio = self._sio
        if sio is None:
            raise LocalProtocolError("acks need Socket.IO: mount it with hub.socketio()")
        conns = self._conns
        if to is None:
            found: Iterable[Websocket] = conns.values()
        elif isinstance(to, str):
            found = self._room_members(to)
        else:
            to = tuple(to)
            found = {conns[u]: None for u in to if u in conns}
        targets = [k for k in found if namespace is None or k.namespace == namespace]
        if self._node is not None:
            room = to if isinstance(to, str) else None
            uuids = None if to is None or isinstance(to, str) else to
            self._ask_everywhere(
                sio,
                targets,
                event,
                args,
                callback=callback,
                timeout=timeout,
                room=room,
                uuids=uuids,
                namespace=namespace,
            )
            return
        emit_with_acks(sio, targets, event, args, callback=callback, timeout=timeout)

    def _event_relay(
        self,
        event: str,
        args: tuple[Any, ...],
        namespace: str | None,
        *,
        room: str | None = None,
        uuids: tuple[str, ...] = (),
        exclude: Websocket | None = None,
    ) -> EventRelay | None:
        """A named event as a relay for the other nodes (``None`` when not federated).

        Checked (and refused when too large) before anything is sent.
        """
        node = self._node
        if node is None:
            return None
        check_event(event)
        attachments: list[bytes] = []
        data = dumps(_deconstruct(args, attachments)).encode("utf-8")
        size = len(data) + sum(len(a) for a in attachments)
        if size > self._max_relay_size:
            raise RelayTooLarge(size, self._max_relay_size)
        return EventRelay(
            node=node,
            event=event,
            data=data,
            attachments=tuple(attachments),
            namespace=namespace,
            room=room,
            uuids=uuids,
            exclude=None if exclude is None else exclude.uuid,
        )

    def _apply_event(self, relay: EventRelay) -> None:
        """Send another node's named event to this node's targets.

        A relay this node cannot show (a reserved name, arguments that are
        not a JSON array) is logged and dropped: a peer's mistake never
        stops the backplane.
        """
        try:
            check_event(relay.event)
            args = _reconstruct(_loads(relay.data.decode("utf-8")), relay.attachments)
            if not isinstance(args, list):
                raise PacketError("the arguments are not a JSON array")
        except (UnicodeDecodeError, PacketError, LocalProtocolError) as exc:
            logger.warning("ignoring event relay %r from node %s: %s", relay.event, relay.node, exc)
            return
        conns = self._conns
        found: Iterable[Websocket]
        if relay.uuids:
            found = {conns[u]: None for u in relay.uuids if u in conns}
        elif relay.room is not None:
            found = self._room_members(relay.room)
        else:
            found = conns.values()
        namespace = relay.namespace
        binary = bool(relay.attachments)  # plain clients cannot receive bytes: skipped
        targets = tuple(
            k
            for k in found
            if (namespace is None or k.namespace == namespace)
            and k.uuid != relay.exclude
            and not (binary and k.transport is None)
        )
        self._emit_event(targets, relay.event, tuple(args))

    def _emit_event(
        self, targets: tuple[Websocket, ...], event: str, args: tuple[Any, ...]
    ) -> None:
        if self._sio is not None:
            self._sio._emit_event(targets, event, args)
        else:
            check_event(event)
            emit_plain(cast("Hub", self), targets, event, args)

    def _emit_event_one(
        self,
        kws: Websocket,
        event: str,
        args: tuple[Any, ...],
        ack: AckCallback | None,
        timeout: float | None,
    ) -> None:
        if ack is None:
            if timeout is not None:
                raise LocalProtocolError("a timeout is for an ack: give ack= too")
            if kws.state is _OPEN:
                self._emit_event((kws,), event, args)
            return
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
            raise LocalProtocolError("an ack needs a positive timeout (seconds)")
        if kws.transport is None:
            raise LocalProtocolError("a plain WebSocket connection cannot answer acks")
        sio = self._sio
        assert sio is not None  # a Socket.IO connection exists only on a mount
        if kws.state is not _OPEN:
            sio._call_back(kws, ack, ConnectionClosed(1000, "the connection is closed"))
            return
        sio._emit_with_ack(kws, event, args, ack, float(timeout))

    def _end(self, kws: Websocket) -> None:
        super()._end(kws)
        if kws.conn.__class__ is Joined:
            # A namespace connection's handle and the session's record of it (its ``conn``)
            # refer to each other: at its end the handle lets go, so that neither waits in
            # a cycle for the collector (the record is the mount's, never the application's).
            kws.conn = None
