"""Listeners and the action queue: running an event's listeners and collecting what they ask for.

The middle layer of the :class:`~ikisocket_core.Hub`. An input or a command
dispatches an event to the hub's listeners and then the connection's own;
whatever they ask for (a message, a close) is queued as an action for the
driver. Listeners run synchronously; an ``async def`` listener's awaitable
leaves as a :class:`~ikisocket_core.RunHandler` action wrapped in a
:class:`_Handler`, which the driver awaits.

``_depth`` counts the input calls in progress, and ``_receiving`` names the
connection whose input runs (a message's input raises only that one, once per
message): actions queued outside any input (a timer's broadcast, an ``async
def`` listener that resumed) make the hub call the driver's wakeup so that it
drains them.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable, Generator
from typing import TYPE_CHECKING, Any, Literal, TypeVar, overload

from ._actions import Action, Close, RunHandler, Send, _check_close, _SendFields
from ._errors import (
    ConnectionClosed,
    HandlerTimeout,
    LocalProtocolError,
    RemoteProtocolError,
    SlowConsumer,
)
from ._events import (
    EVENT_CLOSE,
    EVENT_CONNECT,
    EVENT_DISCONNECT,
    EVENT_ERROR,
    EventPayload,
    Listener,
    MessageKind,
    _message_kind,
    _PayloadFields,
)
from ._registry import _Registry
from ._state import ConnectionState, StateInput, transition

if TYPE_CHECKING:
    from ._socketio import SocketIO
    from ._websocket import Websocket

__all__ = ["RouteCallback"]

logger = logging.getLogger("ikisocket")

#: A route callback (the seed's ``ikisocket.New`` callback); may be ``async def``.
RouteCallback = Callable[["Websocket"], Awaitable[None] | None]

L = TypeVar("L", bound=Listener)

_OPEN = ConnectionState.OPEN
_TEXT = MessageKind.TEXT
_BINARY = MessageKind.BINARY


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

    __slots__ = ("_awaitable", "_ep", "_finished", "_hub", "_then_connect")

    def __init__(
        self,
        hub: _Dispatcher,
        ep: EventPayload,
        awaitable: Awaitable[Any],
        *,
        then_connect: bool = False,
    ) -> None:
        self._hub = hub
        self._ep = ep
        self._awaitable = awaitable
        self._then_connect = then_connect  # an async route callback: ``connect`` follows it
        self._finished = False
        ep.kws._busy += 1

    def __await__(self) -> Generator[Any, None, None]:
        return self._run().__await__()

    async def _run(self) -> None:
        hub, kws = self._hub, self._ep.kws
        try:
            try:
                await self._awaitable
            except Exception as exc:
                hub._listener_failed(self._ep, exc)
            if self._then_connect and kws.state is _OPEN:
                hub._fire_one(kws, EVENT_CONNECT, b"")
        finally:
            self._finish()

    def _finish(self) -> None:
        """Count it finished (once): a terminal event waiting for it may fire now."""
        if not self._finished:
            self._finished = True
            kws = self._ep.kws
            kws._busy -= 1
            if not kws._busy and kws._ending is not None:
                self._hub._end(kws)
                self._hub._flush_outside()

    def timed_out(self, timeout: float) -> None:
        """The driver cancelled the listener after ``timeout`` seconds: report it as its failure.

        The ``error`` listeners get a :class:`HandlerTimeout` and the hub's
        ``on_listener_error`` policy applies, exactly as if the listener had
        raised; an ``async def`` route callback is then followed by ``connect``
        as after a failure.

        Args:
            timeout: The configured handler timeout.
        """
        hub, ep, kws = self._hub, self._ep, self._ep.kws
        awaitable = self._awaitable
        # A coroutine carries its function's name; any other awaitable, its type's.
        name = getattr(awaitable, "__qualname__", type(awaitable).__qualname__)
        hub._listener_failed(ep, HandlerTimeout(timeout, name))
        if self._then_connect and kws.state is _OPEN:
            hub._fire_one(kws, EVENT_CONNECT, b"")

    def close(self) -> None:
        """Discard the handler without running it."""
        close = getattr(self._awaitable, "close", None)
        if close is not None:
            close()
        self._finish()


class _Dispatcher(_Registry):
    """The hub's middle layer: listeners, dispatch, the action queue and server-side closes."""

    # What a message reads of the hub is here: slot reads (see ``_Registry.__slots__``).
    __slots__ = (
        "_clock",
        "_depth",
        "_listeners",
        "_namespaced",
        "_queue",
        "_receiving",
        "_reported_slow",
        "_sio",
        "_slow",
        "_wakeup",
        "_wakeup_pending",
        "on_listener_error",
    )

    def __init__(self, on_listener_error: Literal["keep", "close"]) -> None:
        super().__init__()
        self.on_listener_error = on_listener_error
        self._listeners: dict[str, tuple[Listener, ...]] = {}
        # The listeners of Socket.IO namespaces other than "/" (which is ``_listeners``).
        self._namespaced: dict[str, dict[str, tuple[Listener, ...]]] = {}
        # The mounted Socket.IO endpoint (see ``Hub.socketio``), or None.
        self._sio: SocketIO | None = None
        self._queue: list[Action] = []
        self._depth = 0
        # The engine's connection whose input runs (set by the engine around it), or None:
        # a message to it alone, with nothing queued before, goes onto it directly (_send).
        self._receiving: Any = None
        self._wakeup: Callable[[], None] | None = None
        self._wakeup_pending = False
        # Timing plain listeners (set_listener_clock): the clock, the threshold, and the
        # listeners already reported.
        self._clock: Callable[[], float] | None = None
        self._slow = 0.0
        self._reported_slow: set[str] = set()

    # -- registration ----------------------------------------------------------------------

    @overload
    def on(
        self, event: str, callback: None = None, *, namespace: str = "/"
    ) -> Callable[[L], L]: ...
    @overload
    def on(self, event: str, callback: L, *, namespace: str = "/") -> L: ...
    def on(
        self, event: str, callback: L | None = None, *, namespace: str = "/"
    ) -> L | Callable[[L], L]:
        """Add a listener for an event (the seed's ``ikisocket.On``); many per event.

        Usable as ``hub.on("message", fn)`` or as ``@hub.on("message")``.

        Args:
            event: ``EVENT_MESSAGE``, ``EVENT_CONNECT``... or a custom name.
            callback: The listener, sync or ``async def``. For a Socket.IO event
                that asks for an ack, its return value is the answer (a tuple
                for several arguments).
            namespace: The Socket.IO namespace whose connections it listens to.
                Plain WebSocket connections belong to ``"/"``, the default.

        Returns:
            The listener, or a decorator when ``callback`` is omitted.

        Raises:
            LocalProtocolError: An empty event name, a namespace not starting
                with ``/``, or a callback that is not callable.
        """
        if not isinstance(event, str) or not event:
            raise LocalProtocolError("an event name is a non-empty string")
        if not isinstance(namespace, str) or not namespace.startswith("/"):
            raise LocalProtocolError(f"a namespace starts with '/', not {namespace!r}")
        if callback is None:
            return lambda fn: self.on(event, fn, namespace=namespace)
        if not callable(callback):
            raise LocalProtocolError(f"a listener must be callable, not {callback!r}")
        table = self._table(namespace, create=True)
        table[event] = (*table.get(event, ()), callback)
        return callback

    def off(self, event: str, callback: Listener | None = None, *, namespace: str = "/") -> None:
        """Remove a listener, or every listener of ``event``.

        Args:
            event: The event name.
            callback: The listener to remove; all of ``event``'s when omitted.
            namespace: The namespace it was added for.
        """
        table = self._table(namespace)
        if callback is None:
            table.pop(event, None)
            return
        remaining = tuple(fn for fn in table.get(event, ()) if fn != callback)
        if remaining:
            table[event] = remaining
        else:
            table.pop(event, None)

    def _table(self, namespace: str, *, create: bool = False) -> dict[str, tuple[Listener, ...]]:
        """The listeners of a namespace by event name (a new empty one when it has none)."""
        if namespace == "/":
            return self._listeners
        if create:
            return self._namespaced.setdefault(namespace, {})
        return self._namespaced.get(namespace, {})

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

    def set_listener_clock(self, clock: Callable[[], float] | None, threshold: float) -> None:
        """Time plain listeners with ``clock``; report those slower than ``threshold``.

        A listener that is not ``async def`` (or a route callback) runs on the
        driver's event loop: while it runs, no connection is served. One that
        takes longer than ``threshold`` seconds is logged once, at WARNING, with
        its name. The protocol engine calls this with its driver's clock; the
        hub reads no clock by itself.

        Args:
            clock: A monotonic clock in seconds (``time.perf_counter``), or
                ``None`` to stop timing.
            threshold: Seconds.
        """
        self._clock = clock
        self._slow = threshold

    # -- internals -----------------------------------------------------------------------

    def _push(self, action: Action) -> None:
        self._queue.append(action)
        if self._depth == 0 and self._receiving is None:
            self._flush_outside()

    def _flush_outside(self) -> None:
        if (
            self._queue
            and not self._wakeup_pending
            and self._depth == 0
            and self._receiving is None
            and self._wakeup
        ):
            self._wakeup_pending = True
            self._wakeup()

    def _send(self, targets: tuple[Websocket, ...], data: bytes | str, kind: MessageKind) -> None:
        if kind.__class__ is not MessageKind:
            kind = _message_kind(kind)
        # _payload's checks, inlined for bytes that need none (every emit passes here).
        if data.__class__ is bytes and (kind is not _TEXT or data.isascii()):
            payload: bytes = data
        else:
            payload = _payload(data, kind)
        if targets:
            sio = self._sio
            if sio is not None and sio.connections:
                # Socket.IO connections get the message as their ``message`` event.
                targets = sio._send_message(targets, payload, kind)
                if not targets:
                    return
            receiving = self._receiving
            if (
                receiving is not None
                and len(targets) == 1
                and targets[0].conn is receiving
                and not self._queue
            ):
                # A reply to the connection whose input runs (an echo), nothing queued
                # before it: its driver drains it right after that input, so no detour
                # through the queue. Anywhere else (a timer, a relay from another node, an
                # ``async def`` listener, another target) it takes the queue.
                receiving.deliver_own(payload, kind)
                return
            # _send_action(targets, payload, kind) and self._push, inlined.
            send: Any = _SendFields()
            send.targets = targets
            send.data = payload
            send.kind = kind
            send.__class__ = Send
            self._queue.append(send)
            if self._depth == 0 and self._receiving is None:
                self._flush_outside()

    def _send_one(self, kws: Websocket, data: bytes | str, kind: MessageKind) -> None:
        # _send((kws,), data, kind) for Websocket.emit, its direct path first (an echo). A
        # Socket.IO namespace connection's conn is its session, never the engine's connection:
        # only a plain connection, which gets the payload as it is, can be the one receiving.
        receiving = self._receiving
        if receiving is None or kws.conn is not receiving or self._queue:
            self._send((kws,), data, kind)
            return
        if data.__class__ is bytes and ((kind is _TEXT and data.isascii()) or kind is _BINARY):
            receiving.deliver_own(data, kind)  # bytes that need no check (an echo)
            return
        if kind.__class__ is not MessageKind:
            kind = _message_kind(kind)
        receiving.deliver_own(_payload(data, kind), kind)

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
        namespace = kws.namespace
        table = self._listeners if namespace == "/" else self._table(namespace)
        listeners = table.get(name, ())
        own = kws.listeners  # (the connection's own listeners run after the hub's)
        if own:
            local = own.get(name)
            if local:
                listeners = (*listeners, *local)
        if not listeners:
            if name == EVENT_ERROR and error is not None:
                if isinstance(error, (RemoteProtocolError, SlowConsumer)):
                    # The peer's fault, not the application's: no traceback, and the
                    # engine already logged its one line with the peer's address.
                    logger.debug("connection %s: %s", kws.uuid, error)
                else:
                    logger.error(
                        "error on connection %s (no error listener)", kws.uuid, exc_info=error
                    )
            return
        # kws.payload(name, data, kind, error), inlined (see _event_payload): once per event.
        ep: Any = _PayloadFields()
        ep.kws = kws
        ep.name = name
        ep.socket_uuid = kws._uuid
        ep.socket_attributes = kws._attributes
        ep.error = error
        ep.data = data
        ep.kind = kind
        ep.arguments = None
        ep.__class__ = EventPayload
        # Each listener is called from here, not from a helper: a Python call per listener
        # costs more than the rest of this loop. With a clock, each is timed (two reads).
        clock = self._clock
        if clock is None:
            for fn in listeners:
                try:
                    result = fn(ep)
                except Exception as exc:
                    self._listener_failed(ep, exc)
                    continue
                if result is not None and inspect.isawaitable(result):
                    self._push(RunHandler(target=kws, awaitable=_Handler(self, ep, result)))
            return
        slow = self._slow
        for fn in listeners:
            started = clock()
            try:
                result = fn(ep)
            except Exception as exc:
                elapsed = clock() - started
                if elapsed > slow:
                    self._blocked(fn, name, elapsed)
                self._listener_failed(ep, exc)
                continue
            elapsed = clock() - started
            if elapsed > slow:
                self._blocked(fn, name, elapsed)
            if result is not None and inspect.isawaitable(result):
                self._push(RunHandler(target=kws, awaitable=_Handler(self, ep, result)))

    def _run_route(self, callback: RouteCallback, kws: Websocket) -> None:
        ep = kws.payload(EVENT_CONNECT)
        clock = self._clock
        started = 0.0 if clock is None else clock()
        try:
            result = callback(kws)
        except Exception as exc:
            self._listener_failed(ep, exc)
            result = None
        if clock is not None and clock() - started > self._slow:
            self._blocked(callback, "route callback", clock() - started)
        if result is not None and inspect.isawaitable(result):
            handler = _Handler(self, ep, result, then_connect=True)
            self._push(RunHandler(target=kws, awaitable=handler))
        elif kws.state is _OPEN:
            self._dispatch(kws, EVENT_CONNECT, b"", _TEXT)

    def _blocked(self, fn: Callable[..., Any], event: str, seconds: float) -> None:
        """A plain listener held the event loop for ``seconds``: say so, once per listener."""
        name = f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"
        if name in self._reported_slow:
            return
        self._reported_slow.add(name)
        logger.warning(
            "listener %s (%s) blocked the event loop for %.3f s; every connection waited "
            "(make it async def, or move the blocking work to a thread). Reported once.",
            name,
            event,
            seconds,
        )

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
            if kws.transport is None:
                self._queue.append(Close(target=kws, code=code, reason=reason))
            else:  # a Socket.IO connection: a DISCONNECT packet for its namespace
                assert self._sio is not None
                self._sio._server_closed(kws)
        finally:
            self._depth -= 1
        event = EVENT_CLOSE if cause is None else EVENT_DISCONNECT
        self._terminal(kws, event, ConnectionClosed(code, reason, cause))
        self._flush_outside()

    def _terminal(self, kws: Websocket, event: str, error: BaseException) -> None:
        """Fire ``kws``'s terminal event, once its ``async def`` listeners have finished.

        The connection is already out of routing. The event stays the last one
        of the connection: while listeners of it are queued or running, it waits
        for the last of them (:meth:`_Handler._finish`).
        """
        kws._ending = (event, error)
        if not kws._busy:
            self._end(kws)

    def _end(self, kws: Websocket) -> None:
        event, error = kws._ending  # type: ignore[misc]
        kws._ending = None
        self._depth += 1
        try:
            self._dispatch(kws, event, b"", _TEXT, error)
        finally:
            self._depth -= 1
            kws.release()  # terminal listeners could still read rooms and listeners
