"""The hub: connections, listeners, rooms, and the routing of messages into actions.

The hub is pure. Drivers (adapters, the protocol engine, the test client)
feed it inputs (:meth:`Hub.open`, :meth:`Hub.receive_message`,
:meth:`Hub.receive_disconnect`, :meth:`Hub.tick` ...) and take what it wants
done with :meth:`Hub.drain_actions`. Listeners run synchronously inside those
inputs; an ``async def`` listener's awaitable is handed out as a
:class:`RunHandler` action for the driver to await.
"""

from __future__ import annotations

import heapq
import inspect
import logging
import uuid as _uuid
from collections.abc import Awaitable, Callable, Generator, Iterable
from types import MappingProxyType
from typing import Any, Literal, TypeVar, overload

from ._actions import (
    Accept,
    Action,
    Close,
    Reject,
    RunHandler,
    _check_close,
    _send_action,
)
from ._errors import (
    ConnectionClosed,
    DuplicateUUID,
    IdleTimeout,
    LocalProtocolError,
    RemoteProtocolError,
    SlowConsumer,
    UnknownConnection,
)
from ._events import (
    EVENT_CLOSE,
    EVENT_CONNECT,
    EVENT_DISCONNECT,
    EVENT_ERROR,
    EVENT_MESSAGE,
    EVENT_PING,
    EVENT_PONG,
    EventPayload,
    MessageKind,
    _event_payload,
    _message_kind,
)
from ._relays import (
    AbsenceRelay,
    BroadcastRelay,
    EmitRelay,
    FireRelay,
    HelloRelay,
    PresenceRelay,
    Relay,
    RoomRelay,
)
from ._routing import Match, Request, Router
from ._state import ConnectionState, StateInput, transition
from ._websocket import Websocket

__all__ = ["BeforeUpgrade", "Hub", "Listener", "Room", "RouteCallback"]

logger = logging.getLogger("ikisocket")

#: A listener: called with the event's payload; may be ``async def``.
Listener = Callable[[EventPayload], Awaitable[None] | None]
#: A route callback (the seed's ``ikisocket.New`` callback); may be ``async def``.
RouteCallback = Callable[[Websocket], Awaitable[None] | None]
#: The ``before_upgrade`` hook: ``None``/``True`` accepts, ``False`` refuses with 403.
BeforeUpgrade = Callable[[Request], "bool | Accept | Reject | None"]

L = TypeVar("L", bound=Listener)
R = TypeVar("R", bound=RouteCallback)

_OPEN = ConnectionState.OPEN
_TEXT = MessageKind.TEXT


def _payload(data: bytes | str, kind: MessageKind) -> bytes:
    """Normalise outbound data to bytes, refusing text that is not UTF-8."""
    if data.__class__ is str:
        return data.encode("utf-8")
    if data.__class__ is not bytes:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"message data is bytes or str, not {type(data).__name__}")
        data = bytes(data)
    if kind == _TEXT and not data.isascii():
        data.decode("utf-8")  # raises UnicodeDecodeError
    return data


class _Handler:
    """What a :class:`RunHandler` carries: an ``async def`` listener's awaitable, guarded.

    Awaiting it never raises an ``Exception``: a failure goes to the ``error``
    listeners. :meth:`close` discards it unrun (an adapter shutting down)
    and closes the listener's own coroutine too, so Python does not warn that
    it was never awaited.
    """

    __slots__ = ("_awaitable", "_ep", "_hub", "_then_connect")

    def __init__(
        self,
        hub: Hub,
        ep: EventPayload,
        awaitable: Awaitable[Any],
        *,
        then_connect: bool = False,
    ) -> None:
        self._hub = hub
        self._ep = ep
        self._awaitable = awaitable
        self._then_connect = then_connect  # an async route callback: ``connect`` follows it

    def __await__(self) -> Generator[Any, None, None]:
        return self._run().__await__()

    async def _run(self) -> None:
        hub, kws = self._hub, self._ep.kws
        try:
            await self._awaitable
        except Exception as exc:
            hub._listener_failed(self._ep, exc)
        if self._then_connect and kws.state is _OPEN:
            hub._fire_one(kws, EVENT_CONNECT, b"")

    def close(self) -> None:
        """Discard the handler without running it."""
        close = getattr(self._awaitable, "close", None)
        if close is not None:
            close()


class _Refused(Exception):
    """Inside :meth:`Hub.open`: the request gets this answer (already logged)."""

    def __init__(self, reject: Reject) -> None:
        super().__init__(reject.reason)
        self.reject = reject


class Room:
    """A named group of connections, from :meth:`Hub.to` or :meth:`Websocket.to`.

    Args:
        hub: The hub the room lives in.
        name: The room name.
        exclude: A connection that this view never sends to (the sender).
    """

    __slots__ = ("_exclude", "_hub", "name")

    def __init__(self, hub: Hub, name: str, exclude: Websocket | None = None) -> None:
        self._hub = hub
        self.name = name
        self._exclude = exclude

    @property
    def uuids(self) -> tuple[str, ...]:
        """The UUIDs of the room's members, in joining order."""
        return tuple(k.uuid for k in self._hub._room_members(self.name))

    def __len__(self) -> int:
        return len(self._hub._room_members(self.name))

    def emit(self, data: bytes | str, kind: MessageKind = MessageKind.TEXT) -> None:
        """Send a message to every member (but the excluded one).

        Args:
            data: Bytes or text.
            kind: ``TEXT`` or ``BINARY``.
        """
        hub = self._hub
        members = hub._room_members(self.name)
        targets = tuple(k for k in members if k is not self._exclude)
        hub._send(targets, data, kind)
        if hub._node is not None:
            payload, kind = hub._relay_data(data, kind)
            hub._push_relay(
                RoomRelay(
                    node=hub._node,
                    room=self.name,
                    data=payload,
                    kind=kind,
                    exclude=None if self._exclude is None else self._exclude._uuid,
                )
            )

    def fire(self, event: str, data: bytes | str = b"") -> None:
        """Run ``event``'s listeners once for each member (but the excluded one), on every node.

        Args:
            event: The event name.
            data: The payload's data.
        """
        hub = self._hub
        exclude = self._exclude
        hub._depth += 1
        try:
            for kws in tuple(hub._room_members(self.name)):
                if kws is not exclude:
                    hub._fire_one(kws, event, data)
        finally:
            hub._depth -= 1
            hub._flush_outside()
        if hub._node is not None:
            hub._push_relay(
                FireRelay(
                    node=hub._node,
                    event=event,
                    data=data.encode("utf-8") if isinstance(data, str) else data,
                    room=self.name,
                    exclude=None if exclude is None else exclude.uuid,
                )
            )


class Hub:
    """Connections, listeners, rooms and routing: the state of one ikisocket application.

    Args:
        uuid_factory: Makes connection UUIDs (default: random ``uuid4`` strings).
        on_listener_error: What happens to a connection whose listener raised:
            ``"keep"`` it open (default) or ``"close"`` it with 1011. Either way
            the exception reaches the ``error`` listeners.
        allowed_origins: If given, browsers from any other ``Origin`` are
            refused with 403 (cross-site WebSocket hijacking protection).
            Requests without an ``Origin`` header (non-browser clients) pass.
        subprotocols: Subprotocols the server speaks, preferred first.
        idle_timeout: Close connections with 1001 after this many seconds
            without a message (measured by :meth:`tick`); they get a
            ``disconnect`` event whose error's ``cause`` is an
            :class:`IdleTimeout`. ``None`` disables it.
    """

    def __init__(
        self,
        *,
        uuid_factory: Callable[[], str] | None = None,
        on_listener_error: Literal["keep", "close"] = "keep",
        allowed_origins: Iterable[str] | None = None,
        subprotocols: Iterable[str] = (),
        idle_timeout: float | None = None,
    ) -> None:
        if on_listener_error not in ("keep", "close"):
            raise LocalProtocolError("on_listener_error is 'keep' or 'close'")
        if idle_timeout is not None and idle_timeout <= 0:
            raise LocalProtocolError("idle_timeout must be positive")
        self._uuid_factory = uuid_factory or (lambda: str(_uuid.uuid4()))
        self.on_listener_error = on_listener_error
        self.allowed_origins = None if allowed_origins is None else frozenset(allowed_origins)
        self.subprotocols = tuple(subprotocols)
        self._idle_timeout = idle_timeout
        self._router = Router()
        self._before_upgrade: BeforeUpgrade | None = None
        self._listeners: dict[str, tuple[Listener, ...]] = {}
        self._conns: dict[str, Websocket] = {}
        self._all: tuple[Websocket, ...] | None = None
        self._rooms: dict[str, dict[Websocket, None]] = {}
        self._accepting = True
        self._now = 0.0
        # The idle timer: a heap of (deadline, sequence, connection) with one entry per
        # open connection, re-armed lazily (see ``tick``); entries of closed connections
        # are dropped when they surface or when the heap is compacted.
        self._deadlines: list[tuple[float, int, Websocket]] = []
        self._armed = 0
        self._queue: list[Action] = []
        self._depth = 0
        self._wakeup: Callable[[], None] | None = None
        self._wakeup_pending = False
        # Federation (off until ``federate``): relays for the backplane, remote presence.
        self._node: str | None = None
        self._relays: list[Relay] = []
        self._relay_wakeup: Callable[[], None] | None = None
        self._relay_wakeup_pending = False
        self._remote: dict[str, dict[str, None]] = {}

    @property
    def idle_timeout(self) -> float | None:
        """The idle timeout in seconds, or ``None`` (set when the hub is made)."""
        return self._idle_timeout

    def __repr__(self) -> str:
        return f"<Hub {len(self._conns)} connections, {len(self._router.routes)} routes>"

    # -- registration ----------------------------------------------------------------------

    @overload
    def on(self, event: str, callback: None = None) -> Callable[[L], L]: ...
    @overload
    def on(self, event: str, callback: L) -> L: ...
    def on(self, event: str, callback: L | None = None) -> L | Callable[[L], L]:
        """Add a listener for an event (the seed's ``ikisocket.On``); many per event.

        Usable as ``hub.on("message", fn)`` or as ``@hub.on("message")``.

        Args:
            event: ``EVENT_MESSAGE``, ``EVENT_CONNECT``... or a custom name.
            callback: The listener, sync or ``async def``.

        Returns:
            The listener, or a decorator when ``callback`` is omitted.
        """
        if not isinstance(event, str) or not event:
            raise LocalProtocolError("an event name is a non-empty string")
        if callback is None:
            return lambda fn: self.on(event, fn)
        if not callable(callback):
            raise LocalProtocolError(f"a listener must be callable, not {callback!r}")
        self._listeners[event] = (*self._listeners.get(event, ()), callback)
        return callback

    def off(self, event: str, callback: Listener | None = None) -> None:
        """Remove a listener, or every listener of ``event``.

        Args:
            event: The event name.
            callback: The listener to remove; all of ``event``'s when omitted.
        """
        if callback is None:
            self._listeners.pop(event, None)
            return
        remaining = tuple(fn for fn in self._listeners.get(event, ()) if fn != callback)
        if remaining:
            self._listeners[event] = remaining
        else:
            self._listeners.pop(event, None)

    @overload
    def websocket(self, path: str, callback: None = None) -> Callable[[R], R]: ...
    @overload
    def websocket(self, path: str, callback: R) -> R: ...
    def websocket(self, path: str, callback: R | None = None) -> R | Callable[[R], R]:
        """Mount a WebSocket route and its callback (the seed's ``ikisocket.New``).

        The callback runs first for every new connection on the route, already
        registered (it can emit and be emitted to), before ``connect``.

        Args:
            path: ``/ws/:id``, ``/ws/{id}``, optional ``:id?``, trailing ``*``.
            callback: The route callback, sync or ``async def``.

        Returns:
            The callback, or a decorator when ``callback`` is omitted.
        """
        if callback is None:
            return lambda fn: self.websocket(path, fn)
        self._router.add(path, callback)
        return callback

    def before_upgrade(self, hook: BeforeUpgrade) -> BeforeUpgrade:
        """Set the hook that sees each matching request before it is accepted.

        The hook returns ``None`` or ``True`` to accept, ``False`` to refuse with
        403, a :class:`Reject` for another status, or an :class:`Accept` that
        also picks the UUID, initial attributes or subprotocol. Usable as a
        decorator.

        Args:
            hook: The hook.

        Returns:
            The hook.
        """
        self._before_upgrade = hook
        return hook

    def match(self, path: str) -> Match | None:
        """Find the route for a path (drivers use it to answer 404 or 426).

        Args:
            path: A percent-decoded request path.

        Returns:
            The match, or ``None``.
        """
        return self._router.match(path)

    # -- looking connections up -----------------------------------------------------------

    @property
    def connections(self) -> tuple[str, ...]:
        """The UUIDs of the live connections."""
        return tuple(self._conns)

    def __len__(self) -> int:
        return len(self._conns)

    def __contains__(self, uuid: object) -> bool:
        return uuid in self._conns

    def get(self, uuid: str) -> Websocket:
        """The live connection with this UUID.

        Args:
            uuid: The UUID.

        Returns:
            Its handle.

        Raises:
            UnknownConnection: No live connection has it.
        """
        try:
            return self._conns[uuid]
        except KeyError:
            raise UnknownConnection(uuid) from None

    @property
    def rooms(self) -> dict[str, tuple[str, ...]]:
        """Every non-empty room and its members' UUIDs."""
        return {name: tuple(k.uuid for k in m) for name, m in self._rooms.items()}

    # -- commands -------------------------------------------------------------------------

    def emit_to(self, uuid: str, data: bytes | str, kind: MessageKind = _TEXT) -> None:
        """Send a message to one connection (the seed's ``EmitTo``).

        Args:
            uuid: The target's UUID.
            data: Bytes or text.
            kind: ``TEXT`` or ``BINARY``.

        Raises:
            UnknownConnection: No live connection has that UUID (on any node,
                when the hub is federated).
        """
        kws = self._conns.get(uuid)
        if kws is None and self._node is not None and self._is_remote(uuid):
            payload, kind = self._relay_data(data, kind)
            self._push_relay(EmitRelay(node=self._node, uuids=(uuid,), data=payload, kind=kind))
            return
        if kws is None:
            raise UnknownConnection(uuid)
        self._send((kws,), data, kind)

    def emit_to_list(
        self, uuids: Iterable[str], data: bytes | str, kind: MessageKind = _TEXT
    ) -> None:
        """Send a message to each live connection listed; unknown UUIDs are ignored.

        Args:
            uuids: Target UUIDs (a duplicate is sent to once).
            data: Bytes or text.
            kind: ``TEXT`` or ``BINARY``.
        """
        conns = self._conns
        if self._node is None:
            targets = {conns[u]: None for u in uuids if u in conns}
            self._send(tuple(targets), data, kind)
            return
        local: dict[Websocket, None] = {}
        remote: dict[str, None] = {}
        for u in uuids:
            kws = conns.get(u)
            if kws is not None:
                local[kws] = None
            elif self._is_remote(u):
                remote[u] = None
        self._send(tuple(local), data, kind)
        if remote:
            payload, kind = self._relay_data(data, kind)
            relay = EmitRelay(node=self._node, uuids=tuple(remote), data=payload, kind=kind)
            self._push_relay(relay)

    def broadcast(
        self,
        data: bytes | str,
        kind: MessageKind = _TEXT,
        *,
        exclude: Websocket | str | None = None,
    ) -> None:
        """Send a message to every live connection (the seed's ``Broadcast``).

        Args:
            data: Bytes or text.
            kind: ``TEXT`` or ``BINARY``.
            exclude: A connection (or its UUID) to skip.
        """
        targets = self._all
        if targets is None:
            targets = self._all = tuple(self._conns.values())
        if exclude is not None:
            skip = self._conns.get(exclude) if isinstance(exclude, str) else exclude
            if skip is not None and self._conns.get(skip._uuid) is skip:
                listed = list(targets)
                listed.remove(skip)
                targets = tuple(listed)
        self._send(targets, data, kind)
        if self._node is not None:
            skipped = exclude if exclude is None or isinstance(exclude, str) else exclude._uuid
            payload, kind = self._relay_data(data, kind)
            relay = BroadcastRelay(node=self._node, data=payload, kind=kind, exclude=skipped)
            self._push_relay(relay)

    def fire(self, event: str, data: bytes | str = b"") -> None:
        """Run ``event``'s listeners once per live connection (the seed's ``Fire``).

        Args:
            event: The event name, usually a custom one.
            data: The payload's data.
        """
        self._depth += 1
        try:
            for kws in tuple(self._conns.values()):
                self._fire_one(kws, event, data)
        finally:
            self._depth -= 1
            self._flush_outside()
        if self._node is not None:
            raw = data.encode("utf-8") if isinstance(data, str) else data
            self._push_relay(FireRelay(node=self._node, event=event, data=raw))

    def to(self, room: str) -> Room:
        """A view of a room to emit or fire to.

        Args:
            room: The room name.

        Returns:
            The room view.
        """
        return Room(self, room)

    def close(self, uuid: str, code: int = 1000, reason: str = "") -> None:
        """Close one connection from the server (fires its ``close`` event).

        Args:
            uuid: The connection's UUID.
            code: The close code.
            reason: The close reason.

        Raises:
            UnknownConnection: No live connection has that UUID.
        """
        self._server_close(self.get(uuid), code, reason)

    def close_all(self, code: int = 1001, reason: str = "") -> None:
        """Close every connection from the server, e.g. when shutting down.

        Args:
            code: The close code (1001 "going away" by default).
            reason: The close reason.
        """
        _check_close(code, reason)
        for kws in tuple(self._conns.values()):
            self._server_close(kws, code, reason)

    def stop_accepting(self) -> None:
        """Enter the draining state: new connections get 503, existing ones carry on."""
        self._accepting = False

    def resume_accepting(self) -> None:
        """Leave the draining state."""
        self._accepting = True

    @property
    def accepting(self) -> bool:
        """Whether new connections are accepted (``False`` while draining)."""
        return self._accepting

    # -- driver inputs -------------------------------------------------------------------

    def open(self, request: Request, *, conn: Any = None) -> Websocket | Reject:
        """A WebSocket request arrived: route it, run the hooks, and accept or refuse it.

        When accepted, the connection is registered, its route callback runs,
        then the ``connect`` listeners. After calling this, the driver sends its
        handshake answer (101 or the rejection) and then must drain actions.

        Args:
            request: The request.
            conn: The driver's object for this connection, kept as ``kws.conn``.

        Returns:
            The new connection's handle, or the :class:`Reject` to answer with.
            It never raises: a ``before_upgrade`` hook or UUID factory that
            fails or answers something invalid (an unknown value, a
            subprotocol the client did not offer) gets 500, a UUID that is
            already connected 409; each is logged once on the ``ikisocket``
            logger.
        """
        if not self._accepting:
            return Reject(status=503, reason="the server is not accepting connections")
        match = self._router.match(request.path)
        if match is None:
            return Reject(status=404, reason="no WebSocket route for this path")
        if self.allowed_origins is not None:
            origin = request.origin
            if origin is not None and origin not in self.allowed_origins:
                return Reject(status=403, reason="origin not allowed")
        try:
            uuid, attributes, subprotocol = self._admit(request)
            kws = Websocket(
                self, uuid, request, match.params, attributes=attributes, subprotocol=subprotocol
            )
        except _Refused as refused:
            return refused.reject
        except Exception:
            # A broken hook or uuid factory: the same answer on every driver, which carries on.
            logger.exception("refusing the WebSocket request for %s", request.path)
            return Reject(status=500, reason="internal server error")
        kws.conn = conn
        kws.state = transition(kws.state, StateInput.ACCEPT)
        kws.last_activity = now = self._now
        if self._idle_timeout is not None:
            self._arm(kws, now + self._idle_timeout)
        self._conns[uuid] = kws
        self._all = None
        if self._node is not None:
            self._push_relay(PresenceRelay(node=self._node, uuids=(uuid,)))
        self._depth += 1
        try:
            self._run_route(match.route.callback, kws)
        finally:
            self._depth -= 1
        return kws

    def receive_message(self, kws: Websocket, data: bytes | str, kind: MessageKind = _TEXT) -> None:
        """A whole message arrived on ``kws``: run the ``message`` listeners.

        Ignored when the connection is no longer open. After calling this, you
        must drain actions.

        Args:
            kws: The connection.
            data: The message (text may be given as ``str``).
            kind: ``TEXT`` or ``BINARY``: how it arrived.
        """
        if kws.state is not _OPEN:
            return
        if data.__class__ is str:
            data = data.encode("utf-8")
        kws.last_activity = self._now
        self._depth += 1
        try:
            self._dispatch(kws, EVENT_MESSAGE, data, kind)  # type: ignore[arg-type]
        finally:
            self._depth -= 1

    def receive_ping(self, kws: Websocket, data: bytes = b"") -> None:
        """A ping arrived (the driver answers it): run the ``ping`` listeners.

        After calling this, you must drain actions.

        Args:
            kws: The connection.
            data: The ping's application data.
        """
        self._input_event(kws, EVENT_PING, data)

    def receive_pong(self, kws: Websocket, data: bytes = b"") -> None:
        """A pong arrived: run the ``pong`` listeners.

        After calling this, you must drain actions.

        Args:
            kws: The connection.
            data: The pong's application data.
        """
        self._input_event(kws, EVENT_PONG, data)

    def receive_error(self, kws: Websocket, error: BaseException, data: bytes = b"") -> None:
        """Something went wrong on ``kws`` (e.g. the peer broke the protocol).

        Runs the ``error`` listeners of an open connection (ignored once its
        terminal event fired); it does not end the connection (report that
        with :meth:`receive_disconnect`). After calling this, you must
        drain actions.

        Args:
            kws: The connection.
            error: What went wrong.
            data: Data related to the error, if any.
        """
        if kws.state is not _OPEN:
            return  # after its terminal event, nothing more is reported for a connection
        self._depth += 1
        try:
            self._dispatch(kws, EVENT_ERROR, data, _TEXT, error)
        finally:
            self._depth -= 1

    def receive_disconnect(
        self,
        kws: Websocket,
        code: int = 1006,
        reason: str = "",
        error: BaseException | None = None,
    ) -> None:
        """The connection ended: the peer closed it, the transport dropped, or it timed out.

        For an open connection this fires ``disconnect`` once, after removing it
        from routing. For one the server was closing it just completes the
        close. Later calls are ignored. After calling this, you must drain
        actions.

        Args:
            kws: The connection.
            code: The close code received (1006 when there was none).
            reason: The close reason received.
            error: What caused the end, if it was an error.
        """
        state = kws.state
        if state is ConnectionState.CLOSED:
            return
        kws.state = transition(state, StateInput.PEER_GONE)
        if state is not _OPEN:
            return
        self._unregister(kws)
        self._depth += 1
        try:
            self._dispatch(kws, EVENT_DISCONNECT, b"", _TEXT, ConnectionClosed(code, reason, error))
        finally:
            self._depth -= 1
            self._forget(kws)

    def tick(self, now: float) -> None:
        """Tell the hub the time (seconds, any monotonic origin) and run its timers.

        Closes connections idle for longer than ``idle_timeout`` (1001, with a
        ``disconnect`` event: the peer timed out). Drivers may call it as
        often as they like (the engine does on every read): it costs
        O(1) when no deadline has passed, and O(log n) per passed deadline.
        After calling this, you must drain actions.

        Args:
            now: The current monotonic time.
        """
        self._now = now
        deadlines = self._deadlines
        if deadlines and deadlines[0][0] <= now:
            self._expire(now)

    def next_deadline(self) -> float | None:
        """When :meth:`tick` next has work to do, or ``None`` if never.

        The time may be early (a connection that was active since its
        deadline was armed is re-armed by that :meth:`tick`), never late.

        Returns:
            A time on the clock :meth:`tick` is given.
        """
        deadlines = self._deadlines
        while deadlines and deadlines[0][2].state is not _OPEN:
            heapq.heappop(deadlines)  # a connection that ended: its deadline goes with it
        return deadlines[0][0] if deadlines else None

    # -- driver outputs ------------------------------------------------------------------

    def drain_actions(self) -> list[Action]:
        """Take every queued action, oldest first, and clear the queue.

        Returns:
            The actions to perform, in order.
        """
        queue = self._queue
        self._queue = []
        self._wakeup_pending = False
        return queue

    def set_wakeup(self, callback: Callable[[], None] | None) -> None:
        """Register what to call when actions are queued outside an input call.

        Commands from background jobs (``hub.broadcast`` from a timer) and from
        ``async def`` listeners queue actions while the driver is not in an
        input call; the hub then calls ``callback`` once, until the next
        :meth:`drain_actions`, so the driver can schedule a drain. The callback
        must not drain synchronously.

        Args:
            callback: A plain function, or ``None`` to remove it.
        """
        self._wakeup = callback

    # -- federation (several processes, one application) -----------------------------------

    def federate(self, node_id: str) -> None:
        """Make this hub one node of several that share connections through a backplane.

        From now on broadcasts, room emits, hub-wide fires, emits to remote
        connections, and the opening and ending of connections are also queued
        as :class:`~ikisocket_core.Relay` values for the backplane
        (:meth:`drain_relays`), and the backplane feeds other nodes' relays in
        with :meth:`receive_relay`.
        Calling it again with the same id does nothing.

        Args:
            node_id: This node's id, unique among the nodes.

        Raises:
            LocalProtocolError: The id is empty, or the hub is already a node
                with another id.
        """
        if not isinstance(node_id, str) or not node_id:
            raise LocalProtocolError("a node id is a non-empty string")
        if self._node is not None and self._node != node_id:
            raise LocalProtocolError(f"this hub is already federated as node {self._node!r}")
        self._node = node_id

    @property
    def node_id(self) -> str | None:
        """This hub's node id, or ``None`` when it is not federated."""
        return self._node

    @property
    def remote_nodes(self) -> tuple[str, ...]:
        """The other nodes this hub knows connections of."""
        return tuple(self._remote)

    @property
    def all_connections(self) -> tuple[str, ...]:
        """The UUIDs of the live connections on this node and, when federated, on the others."""
        every = dict.fromkeys(self._conns)
        for members in self._remote.values():
            every.update(members)
        return tuple(every)

    def drain_relays(self) -> list[Relay]:
        """Take every queued relay, oldest first, and clear the queue.

        Returns:
            The relays for the backplane to publish, in order.
        """
        relays = self._relays
        self._relays = []
        self._relay_wakeup_pending = False
        return relays

    def set_relay_wakeup(self, callback: Callable[[], None] | None) -> None:
        """Register what to call when a relay is queued.

        The hub calls ``callback`` once when a relay is queued, then not again
        until the next :meth:`drain_relays`, also from inside input calls (the
        backplane is not the driver of the connections). The callback must
        not drain synchronously.

        Args:
            callback: A plain function, or ``None`` to remove it.
        """
        self._relay_wakeup = callback

    def receive_relay(self, relay: Relay) -> None:
        """Apply a relay another node published; it is not relayed again.

        Messages go to this node's connections (honouring ``exclude``), a
        :class:`~ikisocket_core.FireRelay` runs listeners on this node's
        connections (or its room's members), presence and absence relays
        update what this hub knows of the other node, and a
        :class:`~ikisocket_core.HelloRelay` is answered with a
        :class:`~ikisocket_core.PresenceRelay` listing this node's
        connections. Relays from this node itself are ignored. Commands queue
        actions as commands from a background job do: the driver's wakeup
        (see :meth:`set_wakeup`) is called.

        Args:
            relay: The relay.

        Raises:
            LocalProtocolError: The hub is not federated, or the relay is of
                a kind this hub does not know.
        """
        if self._node is None:
            raise LocalProtocolError("receive_relay needs a federated hub (see Hub.federate)")
        node = relay.node
        if node == self._node:
            return
        if isinstance(relay, PresenceRelay):
            self._remote.setdefault(node, {}).update(dict.fromkeys(relay.uuids))
        elif isinstance(relay, AbsenceRelay):
            known = self._remote.get(node)
            if known is not None:
                for u in relay.uuids:
                    known.pop(u, None)
        elif isinstance(relay, HelloRelay):
            self._remote.setdefault(node, {})
            self._push_relay(PresenceRelay(node=self._node, uuids=tuple(self._conns)))
        elif isinstance(relay, (BroadcastRelay, RoomRelay, EmitRelay, FireRelay)):
            self._depth += 1
            try:
                self._apply(relay)
            finally:
                self._depth -= 1
                self._flush_outside()
        else:
            raise LocalProtocolError(f"unknown relay {relay!r}")

    def forget_node(self, node_id: str) -> None:
        """Drop what this hub knows of another node's connections (it is gone).

        Args:
            node_id: The node's id.
        """
        self._remote.pop(node_id, None)

    # -- internals -----------------------------------------------------------------------

    def _admit(self, request: Request) -> tuple[str, Any, str | None]:
        """The new connection's UUID, attributes and subprotocol, or raise ``_Refused``.

        Any other exception means a hook or the UUID factory misbehaved (500).
        """
        offered = request.subprotocols
        subprotocol = next((p for p in self.subprotocols if p in offered), None)
        uuid: str | None = None
        attributes: Any = None
        taken = False
        hook = self._before_upgrade
        if hook is not None:
            try:
                verdict = hook(request)
            except Exception:
                logger.exception("before_upgrade failed for %s", request.path)
                raise _Refused(Reject(status=500, reason="internal server error")) from None
            if verdict is False:
                raise _Refused(Reject(status=403, reason="forbidden"))
            if isinstance(verdict, Reject):
                raise _Refused(verdict)
            if isinstance(verdict, Accept):
                uuid, attributes = verdict.uuid, verdict.attributes
                if verdict.subprotocol is not None:
                    if verdict.subprotocol not in offered:
                        raise LocalProtocolError(
                            f"before_upgrade chose subprotocol {verdict.subprotocol!r},"
                            " which the client did not offer"
                        )
                    subprotocol = verdict.subprotocol
            elif verdict is not None and verdict is not True:
                raise LocalProtocolError(
                    f"before_upgrade returns None, a bool, Accept or Reject, not {verdict!r}"
                )
        if uuid is None:
            try:
                uuid = self._uuid_factory()
            except DuplicateUUID as exc:  # the factory knows its UUID is taken
                uuid = exc.uuid
                taken = True
            if not isinstance(uuid, str) or not uuid:
                raise LocalProtocolError(f"the uuid factory made {uuid!r}, not a non-empty str")
        if taken or self._is_taken(uuid):
            logger.warning(
                "refusing a WebSocket request for %s: uuid %r is already connected",
                request.path,
                uuid,
            )
            raise _Refused(Reject(status=409, reason="this uuid is already connected"))
        return uuid, attributes, subprotocol

    def _is_taken(self, uuid: str) -> bool:
        return uuid in self._conns or self._is_remote(uuid)

    def _is_remote(self, uuid: str) -> bool:
        return any(uuid in members for members in self._remote.values())

    def _push_relay(self, relay: Relay) -> None:
        self._relays.append(relay)
        if not self._relay_wakeup_pending and self._relay_wakeup is not None:
            self._relay_wakeup_pending = True
            self._relay_wakeup()

    def _apply(self, relay: BroadcastRelay | RoomRelay | EmitRelay | FireRelay) -> None:
        conns = self._conns
        if isinstance(relay, EmitRelay):
            self._send(
                tuple({conns[u]: None for u in relay.uuids if u in conns}), relay.data, relay.kind
            )
            return
        skip = None if relay.exclude is None else conns.get(relay.exclude)
        room = None if isinstance(relay, BroadcastRelay) else relay.room
        found: tuple[Websocket, ...] | dict[Websocket, None]
        found = tuple(conns.values()) if room is None else self._room_members(room)
        targets = tuple(k for k in found if k is not skip)
        if isinstance(relay, FireRelay):
            for kws in targets:
                self._fire_one(kws, relay.event, relay.data)
        else:
            self._send(targets, relay.data, relay.kind)

    def _relay_data(self, data: bytes | str, kind: MessageKind) -> tuple[bytes, MessageKind]:
        """A message's data and kind as a relay carries them (validated as for a send)."""
        if kind.__class__ is not MessageKind:
            kind = _message_kind(kind)
        return _payload(data, kind), kind

    def _push(self, action: Action) -> None:
        self._queue.append(action)
        if self._depth == 0:
            self._flush_outside()

    def _flush_outside(self) -> None:
        if self._queue and not self._wakeup_pending and self._depth == 0 and self._wakeup:
            self._wakeup_pending = True
            self._wakeup()

    def _send(self, targets: tuple[Websocket, ...], data: bytes | str, kind: MessageKind) -> None:
        if kind.__class__ is not MessageKind:
            kind = _message_kind(kind)
        payload = _payload(data, kind)
        if targets:
            self._push(_send_action(targets, payload, kind))

    def _input_event(self, kws: Websocket, name: str, data: bytes) -> None:
        if kws.state is not _OPEN:
            return
        self._depth += 1
        try:
            self._dispatch(kws, name, data, _TEXT)
        finally:
            self._depth -= 1

    def _fire_one(self, kws: Websocket, event: str, data: bytes | str) -> None:
        if kws.state is not _OPEN:
            return
        if data.__class__ is str:
            data = data.encode("utf-8")
        self._depth += 1
        try:
            self._dispatch(kws, event, data, _TEXT)  # type: ignore[arg-type]
        finally:
            self._depth -= 1
            self._flush_outside()

    def _dispatch(
        self,
        kws: Websocket,
        name: str,
        data: bytes,
        kind: MessageKind,
        error: BaseException | None = None,
    ) -> None:
        listeners = self._listeners.get(name, ())
        local = kws._listeners.get(name, ()) if kws._listeners else ()
        if not listeners and not local:
            if name == EVENT_ERROR and error is not None:
                if isinstance(error, (RemoteProtocolError, SlowConsumer)):
                    # The peer's fault, not the application's: no traceback.
                    logger.info("connection %s: %s", kws.uuid, error)
                else:
                    logger.error(
                        "error on connection %s (no error listener)", kws.uuid, exc_info=error
                    )
            return
        ep = _event_payload(
            kws, name, kws._uuid, MappingProxyType(kws._attributes), error, data, kind
        )
        for fn in listeners:
            self._call(fn, ep)
        for fn in local:
            self._call(fn, ep)

    def _call(self, fn: Listener, ep: EventPayload) -> None:
        try:
            result = fn(ep)
        except Exception as exc:
            self._listener_failed(ep, exc)
            return
        if result is not None and inspect.isawaitable(result):
            self._push(RunHandler(target=ep.kws, awaitable=_Handler(self, ep, result)))

    def _run_route(self, callback: RouteCallback, kws: Websocket) -> None:
        ep = EventPayload(
            kws=kws,
            name=EVENT_CONNECT,
            socket_uuid=kws.uuid,
            socket_attributes=MappingProxyType(kws._attributes),
        )
        try:
            result = callback(kws)
        except Exception as exc:
            self._listener_failed(ep, exc)
            result = None
        if result is not None and inspect.isawaitable(result):
            handler = _Handler(self, ep, result, then_connect=True)
            self._push(RunHandler(target=kws, awaitable=handler))
        elif kws.state is _OPEN:
            self._dispatch(kws, EVENT_CONNECT, b"", _TEXT)

    def _listener_failed(self, ep: EventPayload, exc: Exception) -> None:
        kws = ep.kws
        if ep.name == EVENT_ERROR:
            logger.error("error listener failed on connection %s", kws.uuid, exc_info=exc)
            return
        self._depth += 1
        try:
            self._dispatch(kws, EVENT_ERROR, ep.data, ep.kind, exc)
            if self.on_listener_error == "close" and kws.state is _OPEN:
                self._server_close(kws, 1011, "internal error")
        finally:
            self._depth -= 1
            self._flush_outside()

    def _server_close(
        self,
        kws: Websocket,
        code: int,
        reason: str,
        cause: BaseException | None = None,
    ) -> None:
        # With a cause the peer is at fault (it timed out): that is a ``disconnect``.
        _check_close(code, reason)
        if kws.state is not _OPEN:
            return
        kws.state = transition(kws.state, StateInput.SERVER_CLOSE)
        self._unregister(kws)
        self._depth += 1
        try:
            self._queue.append(Close(target=kws, code=code, reason=reason))
            event = EVENT_CLOSE if cause is None else EVENT_DISCONNECT
            self._dispatch(kws, event, b"", _TEXT, ConnectionClosed(code, reason, cause))
        finally:
            self._depth -= 1
            self._forget(kws)
            self._flush_outside()

    def _unregister(self, kws: Websocket) -> None:
        del self._conns[kws._uuid]
        self._all = None
        if self._node is not None:
            self._push_relay(AbsenceRelay(node=self._node, uuids=(kws._uuid,)))
        for room in kws._rooms:
            members = self._rooms[room]
            del members[kws]
            if not members:
                del self._rooms[room]

    def _forget(self, kws: Websocket) -> None:
        # Terminal listeners could still read rooms and listeners; now drop them.
        kws._rooms = {}
        kws._listeners = None

    def _rekey(self, kws: Websocket, new: str) -> None:
        old = kws._uuid
        if new == old:
            return
        if kws.state is not _OPEN:
            kws._uuid = new
            return
        if new in self._conns or self._is_remote(new):
            raise DuplicateUUID(new)
        del self._conns[old]
        self._conns[new] = kws
        kws._uuid = new
        self._all = None
        if self._node is not None:
            self._push_relay(AbsenceRelay(node=self._node, uuids=(old,)))
            self._push_relay(PresenceRelay(node=self._node, uuids=(new,)))

    def _join(self, kws: Websocket, room: str) -> None:
        if kws.state is not _OPEN or room in kws._rooms:
            return
        kws._rooms[room] = None
        self._rooms.setdefault(room, {})[kws] = None

    def _leave(self, kws: Websocket, room: str) -> None:
        if room not in kws._rooms:
            return
        del kws._rooms[room]
        if kws.state is _OPEN:
            members = self._rooms[room]
            del members[kws]
            if not members:
                del self._rooms[room]

    def _room_members(self, room: str) -> dict[Websocket, None]:
        return self._rooms.get(room, {})

    def _arm(self, kws: Websocket, deadline: float) -> None:
        deadlines = self._deadlines
        if len(deadlines) > 2 * len(self._conns) + 64:
            # Mostly ended connections: drop them (amortised O(1) per connection).
            deadlines[:] = [entry for entry in deadlines if entry[2].state is _OPEN]
            heapq.heapify(deadlines)
        self._armed += 1
        heapq.heappush(deadlines, (deadline, self._armed, kws))

    def _expire(self, now: float) -> None:
        deadlines = self._deadlines
        timeout = self._idle_timeout
        assert timeout is not None  # only then is anything armed
        self._depth += 1
        try:
            while deadlines and deadlines[0][0] <= now:
                kws = heapq.heappop(deadlines)[2]
                if kws.state is not _OPEN:
                    continue
                # Lazy re-arming: activity since the deadline was armed moves it (never early).
                due = kws.last_activity + timeout
                if due <= now:
                    self._server_close(kws, 1001, "idle timeout", IdleTimeout(timeout))
                else:
                    self._arm(kws, due)
        finally:
            self._depth -= 1
