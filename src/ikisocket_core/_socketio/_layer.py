"""The hub's Socket.IO layer: mounting the endpoint and sending named events.

One layer of :class:`~ikisocket_core.Hub`, between the federation layer and
the hub itself (see ``_hub``): what a hub offers for Socket.IO whether or not
anything is mounted (named events reach plain clients as JSON too).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, cast

from ikisocket_core._errors import ConnectionClosed, LocalProtocolError
from ikisocket_core._events import AckCallback
from ikisocket_core._federation import _Federation
from ikisocket_core._state import ConnectionState

from ._acks import check_event, emit_plain
from ._mount import SocketIO
from ._namespace import AcksCallback, emit_with_acks
from ._recovery import Recovery

if TYPE_CHECKING:
    from ikisocket_core._hub import Hub
    from ikisocket_core._websocket import Websocket

__all__: list[str] = []

_OPEN = ConnectionState.OPEN


class _SocketIOLayer(_Federation):
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

    def emit_event(self, event: str, *args: Any, namespace: str | None = "/") -> None:
        """Send a named event to every live connection of a namespace.

        Socket.IO clients receive it as that event; plain WebSocket clients
        (namespace ``"/"``) the JSON text ``[event, *args]``. Acks are asked
        of one connection at a time (:meth:`Websocket.emit_event`).

        Args:
            event: The event name.
            *args: Its arguments (JSON values; ``bytes`` for Socket.IO only).
            namespace: The namespace, or ``None`` for every connection.

        Raises:
            LocalProtocolError: A reserved event name.
            TypeError: An argument cannot travel as JSON.
        """
        conns = self._conns.values()
        targets = tuple(
            conns if namespace is None else (k for k in conns if k.namespace == namespace)
        )
        self._emit_event(targets, event, args)

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

        Args:
            event: The event name.
            *args: Its arguments.
            callback: Called once with the answers (sync or ``async def``).
            timeout: Seconds each client has to answer.
            to: ``None`` for every connection, a room name, or UUIDs.
            namespace: Only connections of this namespace (``None``: any).

        Raises:
            LocalProtocolError: Socket.IO is not mounted, a reserved event
                name, or a timeout that is not a positive number.
            TypeError: An argument cannot travel as JSON.
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
            found = {conns[u]: None for u in to if u in conns}
        targets = [k for k in found if namespace is None or k.namespace == namespace]
        emit_with_acks(sio, targets, event, args, callback=callback, timeout=timeout)

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
