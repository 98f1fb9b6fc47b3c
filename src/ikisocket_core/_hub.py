"""The hub: connections, listeners, rooms, and the routing of messages into actions.

The hub is pure. Drivers (adapters, the protocol engine, the test client)
feed it inputs (:meth:`Hub.open`, :meth:`Hub.receive_message`,
:meth:`Hub.receive_disconnect`, :meth:`Hub.tick` ...) and take what it wants
done with :meth:`Hub.drain_actions`. Listeners run synchronously inside those
inputs; an ``async def`` listener's awaitable is handed out as a
:class:`RunHandler` action for the driver to await.

The class is built in layers, one module each: ``_registry`` (who is where:
connections, rooms, remote presence), ``_dispatch`` (listeners, the action
queue, server-side closes), ``_federation`` (relays in and out) and this
module (routes, the accept decision, the seed's commands, driver inputs and
the idle timer). A :class:`Websocket` reaches its hub only through the
:class:`~ikisocket_core._websocket.ConnectionOwner` the hub gives it.
"""

from __future__ import annotations

import heapq
import logging
import uuid as _uuid
from collections.abc import Callable, Iterable
from typing import Any, Literal, TypeVar, overload

from ._actions import Accept, Reject, _check_close
from ._dispatch import RouteCallback
from ._errors import (
    ConnectionClosed,
    DuplicateUUID,
    LocalProtocolError,
    UnknownConnection,
)
from ._events import (
    EVENT_DISCONNECT,
    EVENT_ERROR,
    EVENT_MESSAGE,
    EVENT_PING,
    EVENT_PONG,
    MessageKind,
)
from ._idle import _IdleTimers
from ._registry import Room
from ._relays import BroadcastRelay, EmitRelay, FireRelay
from ._routing import Match, Request, Router
from ._socketio._socket import EngineSocket
from ._state import ConnectionState, StateInput, transition
from ._websocket import ConnectionOwner, Websocket

__all__ = ["BeforeUpgrade", "Hub"]

logger = logging.getLogger("ikisocket")

#: The ``before_upgrade`` hook: ``None``/``True`` accepts, ``False`` refuses with 403.
BeforeUpgrade = Callable[[Request], "bool | Accept | Reject | None"]

R = TypeVar("R", bound=RouteCallback)

_OPEN = ConnectionState.OPEN
_TEXT = MessageKind.TEXT


class _Refused(Exception):
    """Inside :meth:`Hub.open`: the request gets this answer (already logged)."""

    def __init__(self, reject: Reject) -> None:
        super().__init__(reject.reason)
        self.reject = reject


class Hub(_IdleTimers):
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

    Attributes:
        on_listener_error: ``"keep"`` or ``"close"`` (see above).
        allowed_origins: The allowed ``Origin`` values, or ``None`` for any.
        subprotocols: The subprotocols the server speaks, preferred first.
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
        super().__init__(on_listener_error)
        self._uuid_factory = uuid_factory or (lambda: str(_uuid.uuid4()))
        self.allowed_origins = None if allowed_origins is None else frozenset(allowed_origins)
        self.subprotocols = tuple(subprotocols)
        self._idle_timeout = idle_timeout
        self._router = Router()
        self._before_upgrade: BeforeUpgrade | None = None
        self._accepting = True
        self._now = 0.0
        # The idle timer: a heap of (deadline, sequence, connection) with one entry per
        # open connection, re-armed lazily (see ``tick``); entries of closed connections
        # are dropped when they surface or when the heap is compacted.
        self._deadlines: list[tuple[float, int, Websocket]] = []
        self._armed = 0
        # What a Websocket may ask of its hub: bound methods, so a verb costs one call.
        self._owner = ConnectionOwner(
            send=self._send,
            send_one=self._send_one,
            fire=self._fire_one,
            join=self._join,
            leave=self._leave,
            rekey=self._rekey,
            close=self._server_close,
            room=self._room,
            emit_to=self.emit_to,
            emit_to_list=self.emit_to_list,
            broadcast=self._broadcast,
            emit_event=self._emit_event_one,
        )

    @property
    def idle_timeout(self) -> float | None:
        """The idle timeout in seconds, or ``None`` (set when the hub is made)."""
        return self._idle_timeout

    def __repr__(self) -> str:
        return f"<Hub {len(self._conns)} connections, {len(self._router.routes)} routes>"

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
            TypeError: ``kind`` is not a message kind.
            ValueError: ``kind`` is an int other than 1 and 2, or ``TEXT``
                data is not valid UTF-8.
            RelayTooLarge: The connection is on another node and ``data`` is
                larger than the hub's ``max_relay_size``.
        """
        kws = self._conns.get(uuid)
        if kws is None and self._node is not None and self._is_remote(uuid):
            payload, kind = self._relay_data(data, kind)
            self._check_relay_size(payload)
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

        Raises:
            RelayTooLarge: Some are on other nodes and ``data`` is larger than
                the hub's ``max_relay_size`` (nothing was sent).
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
        relay = None
        if remote:
            payload, relay_kind = self._relay_data(data, kind)
            self._check_relay_size(payload)
            relay = EmitRelay(node=self._node, uuids=tuple(remote), data=payload, kind=relay_kind)
        self._send(tuple(local), data, kind)
        if relay is not None:
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

        Raises:
            TypeError: ``kind`` is not a message kind.
            ValueError: ``kind`` is an int other than 1 and 2, or ``TEXT``
                data is not valid UTF-8.
            RelayTooLarge: The hub is federated and ``data`` is larger than
                its ``max_relay_size`` (nothing was sent).
        """
        self._broadcast(data, kind, exclude)

    def fire(self, event: str, data: bytes | str = b"") -> None:
        """Run ``event``'s listeners once per live connection (the seed's ``Fire``).

        Args:
            event: The event name, usually a custom one.
            data: The payload's data.

        Raises:
            RelayTooLarge: The hub is federated and ``data`` is larger than
                its ``max_relay_size`` (no listener ran).
        """
        relay = None
        if self._node is not None:  # checked (and refused if too large) before any listener
            raw = data.encode("utf-8") if isinstance(data, str) else data
            self._check_relay_size(raw)
            relay = FireRelay(node=self._node, event=event, data=raw)
        self._depth += 1
        try:
            for kws in tuple(self._conns.values()):
                self._fire_one(kws, event, data)
        finally:
            self._depth -= 1
            self._flush_outside()
        if relay is not None:
            self._push_relay(relay)

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
        if self._sio is not None:  # first, so that their transports get this code too
            self._depth += 1
            try:
                self._sio._close_all(code, reason)
            finally:
                self._depth -= 1
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
            already connected 409. A failing hook or factory logs its
            traceback on the ``ikisocket`` logger; the driver logs every
            refusal in one line, with the peer's address.
        """
        if not self._accepting:
            return Reject(status=503, reason="the server is not accepting connections")
        sio = self._sio
        # The Socket.IO path comes first: a wildcard route must not hide it.
        served = sio is not None and sio._serves(request.path)
        match = None if served else self._router.match(request.path)
        if match is None and not served:
            return Reject(status=404, reason="no WebSocket route for this path")
        if self.allowed_origins is not None:
            origin = request.origin
            if origin is not None and origin not in self.allowed_origins:
                return Reject(status=403, reason="origin not allowed")
        if match is None:
            assert sio is not None
            self._depth += 1
            try:
                return sio._open(request, conn)
            finally:
                self._depth -= 1
        try:
            uuid, attributes, subprotocol = self._admit(request)
            kws = Websocket(
                self._owner,
                uuid,
                request,
                match.params,
                attributes=attributes,
                subprotocol=subprotocol,
            )
        except _Refused as refused:
            return refused.reject
        except Exception:
            # A broken hook or uuid factory: the same answer on every driver, which carries on.
            logger.exception("refusing the WebSocket request for %s", request.path)
            return Reject(status=500, reason="internal server error")
        kws.conn = conn
        kws.state = transition(kws.state, StateInput.ACCEPT)
        kws.last_activity = self._now
        self._register(kws)
        self._arm_idle(kws)
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
            if kws.__class__ is EngineSocket:  # a Socket.IO session's transport
                kws.session.receive(data, kind)  # type: ignore[arg-type]
            else:
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
        if kws.__class__ is not EngineSocket:  # a Socket.IO transport's are not events
            self._input_event(kws, EVENT_PING, data)

    def receive_pong(self, kws: Websocket, data: bytes = b"") -> None:
        """A pong arrived: run the ``pong`` listeners.

        After calling this, you must drain actions.

        Args:
            kws: The connection.
            data: The pong's application data.
        """
        if kws.__class__ is not EngineSocket:
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
            if kws.__class__ is EngineSocket:  # reported to the session's connections
                for joined in tuple(kws.session.joined.values()):
                    self._dispatch(joined.kws, EVENT_ERROR, data, _TEXT, error)
            else:
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
        if kws.__class__ is EngineSocket:
            self._depth += 1
            try:
                kws.session.transport_gone(code, reason, error)
            finally:
                self._depth -= 1
            return
        kws.state = transition(state, StateInput.PEER_GONE)
        if state is not _OPEN:
            return
        self._unregister(kws)
        self._terminal(kws, EVENT_DISCONNECT, ConnectionClosed(code, reason, error))

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
        sio = self._sio
        if sio is not None:
            self._depth += 1
            try:
                sio._tick(now)
            finally:
                self._depth -= 1

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
        ours = deadlines[0][0] if deadlines else None
        sio = self._sio
        theirs = None if sio is None else sio._deadlines.next()
        if ours is None or theirs is None:
            return theirs if ours is None else ours
        return min(ours, theirs)

    # -- internals -----------------------------------------------------------------------

    def _broadcast(
        self, data: bytes | str, kind: MessageKind, exclude: Websocket | str | None
    ) -> None:
        relay = None
        if self._node is not None:  # checked (and refused if too large) before any send
            payload, relay_kind = self._relay_data(data, kind)
            self._check_relay_size(payload)
            skipped = exclude if exclude is None or isinstance(exclude, str) else exclude.uuid
            relay = BroadcastRelay(node=self._node, data=payload, kind=relay_kind, exclude=skipped)
        if isinstance(exclude, str):
            exclude = self._conns.get(exclude)
        self._send(self._all_but(exclude), data, kind)
        if relay is not None:
            self._push_relay(relay)

    def _room(self, name: str, exclude: Websocket) -> Room:
        return Room(self, name, exclude)

    def _admit(self, request: Request) -> tuple[str, Any, str | None]:
        """The new connection's UUID, attributes and subprotocol, or raise ``_Refused``.

        Any other exception means a hook or the UUID factory misbehaved (500).
        """
        offered = request.subprotocols
        subprotocol = next((p for p in self.subprotocols if p in offered), None)
        uuid: str | None = None
        attributes: Any = None
        taken = False
        verdict = self._verdict(request)
        if verdict is not None:
            uuid, attributes = verdict.uuid, verdict.attributes
            if verdict.subprotocol is not None:
                if verdict.subprotocol not in offered:
                    raise LocalProtocolError(
                        f"before_upgrade chose subprotocol {verdict.subprotocol!r},"
                        " which the client did not offer"
                    )
                subprotocol = verdict.subprotocol
        if uuid is None:
            try:
                uuid = self._uuid_factory()
            except DuplicateUUID as exc:  # the factory knows its UUID is taken
                uuid = exc.uuid
                taken = True
            if not isinstance(uuid, str) or not uuid:
                raise LocalProtocolError(f"the uuid factory made {uuid!r}, not a non-empty str")
        if taken or self._is_taken(uuid):
            logger.debug(  # the driver logs the refusal (409) with the peer's address
                "refusing a WebSocket request for %s: uuid %r is already connected",
                request.path,
                uuid,
            )
            raise _Refused(Reject(status=409, reason="this uuid is already connected"))
        return uuid, attributes, subprotocol

    def _verdict(self, request: Request) -> Accept | None:
        """What the ``before_upgrade`` hook says: an :class:`Accept`, ``None``, or ``_Refused``.

        Any other exception means the hook answered something invalid (500).
        """
        hook = self._before_upgrade
        if hook is None:
            return None
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
            return verdict
        if verdict is not None and verdict is not True:
            raise LocalProtocolError(
                f"before_upgrade returns None, a bool, Accept or Reject, not {verdict!r}"
            )
        return None

    def _verdict_for(self, request: Request) -> Accept | Reject | None:
        """:meth:`_verdict` for the Socket.IO mount: a refusal is returned, not raised."""
        try:
            return self._verdict(request)
        except _Refused as refused:
            return refused.reject
        except Exception:
            logger.exception("refusing the Socket.IO request for %s", request.path)
            return Reject(status=500, reason="internal server error")
