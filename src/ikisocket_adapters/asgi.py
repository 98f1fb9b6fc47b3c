"""Run a hub behind any ASGI 3 server: uvicorn, hypercorn (asyncio or trio), daphne, granian.

::

    from ikisocket_adapters.asgi import asgi_app

    app = asgi_app(hub)                      # uvicorn module:app
    app = asgi_app(hub, fallback=other_app)  # wrap an existing ASGI application

Here the server does the HTTP upgrade and the framing; only the
:class:`~ikisocket_core.Hub` is used. For each connection the adapter runs a
reader (ASGI ``receive`` -> hub inputs), one sender task that writes the
connection's bounded outbound queue through its own ASGI ``send``, and, when
``async def`` listeners ran, one task awaiting them in order. A slow client only
fills its own queue; past ``max_queue`` bytes the ``backpressure`` policy drops
messages for it or closes it with 1013, reported through the hub's ``error``
event and :attr:`ASGIApp.stats`.

A background service drains actions queued outside an input (async listeners,
``hub.broadcast`` from a timer) and runs :meth:`Hub.tick` for ``idle_timeout``.
It lives in the ASGI lifespan when the server sends one (or in
:meth:`ASGIApp.lifespan` entered from a host application's lifespan) and
otherwise in the task group of a live connection.
"""

from __future__ import annotations

import weakref
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Literal

import anyio
from anyio.abc import TaskGroup

from ikisocket_core import (
    Close,
    ConnectionState,
    Headers,
    Hub,
    MessageKind,
    Reject,
    RemoteProtocolError,
    Request,
    RunHandler,
    Send,
    SlowConsumer,
    Websocket,
)

from ._common import SHUTDOWN_CODE, TICK_RESOLUTION, logger

__all__ = ["ASGIApp", "ASGIStats", "asgi_app"]

#: ASGI's types, spelled as Starlette and the ASGI spec spell them.
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
ASGISend = Callable[[Message], Awaitable[None]]
ASGIApplication = Callable[[Scope, Receive, ASGISend], Awaitable[None]]

#: The close code for a connection whose queue overflowed ("try again later").
OVERFLOW_CODE = 1013
_TEXT = MessageKind.TEXT
_BINARY = MessageKind.BINARY


@dataclass(slots=True)
class ASGIStats:
    """Counters of one hub's ASGI connections (read them; they only grow)."""

    connections: int = 0
    rejected: int = 0
    messages_in: int = 0
    messages_out: int = 0
    dropped_messages: int = 0
    overflow_closes: int = 0


def asgi_app(
    hub: Hub,
    *,
    fallback: ASGIApplication | None = None,
    max_queue: int = 4 * 1024 * 1024,
    backpressure: Literal["drop", "close"] = "drop",
    max_message_size: int | None = 1024 * 1024,
    close_timeout: float = 10.0,
) -> ASGIApp:
    """Make the ASGI 3 application that serves ``hub``'s WebSocket routes.

    Args:
        hub: The application's hub. The ASGI app becomes its driver.
        fallback: An ASGI app for everything that is not one of the hub's
            WebSocket routes (HTTP requests, other WebSockets, the lifespan).
            Without it, HTTP requests get 404 (426 on a WebSocket route).
        max_queue: Outbound bytes a connection may have waiting before the
            ``backpressure`` policy applies. A message is always accepted into
            an empty queue, whatever its size.
        backpressure: ``"drop"`` the message for that connection, or
            ``"close"`` the connection with 1013.
        max_message_size: Largest message accepted, in bytes; more closes the
            connection with 1009. ``None`` leaves the limit to the server.
        close_timeout: Seconds to wait for a close to be written, and for
            connections to finish when the lifespan shuts down.

    Returns:
        The application.
    """
    if backpressure not in ("drop", "close"):
        raise ValueError("backpressure is 'drop' or 'close'")
    if max_queue <= 0:
        raise ValueError("max_queue must be positive")
    if max_message_size is not None and max_message_size <= 0:
        raise ValueError("max_message_size must be positive or None")
    return ASGIApp(
        hub,
        fallback=fallback,
        max_queue=max_queue,
        backpressure=backpressure,
        max_message_size=max_message_size,
        close_timeout=close_timeout,
    )


class ASGIApp:
    """The ASGI application :func:`asgi_app` returns (call it as ``app(scope, receive, send)``).

    Attributes:
        hub: The hub it serves.
        fallback: The wrapped application, if any.
    """

    def __init__(
        self,
        hub: Hub,
        *,
        fallback: ASGIApplication | None,
        max_queue: int,
        backpressure: Literal["drop", "close"],
        max_message_size: int | None,
        close_timeout: float,
    ) -> None:
        self.hub = hub
        self.fallback = fallback
        self.max_queue = max_queue
        self.backpressure = backpressure
        self.max_message_size = max_message_size
        self.close_timeout = close_timeout
        self._driver = _Driver.of(hub)

    @property
    def stats(self) -> ASGIStats:
        """The hub's connection counters (shared by every app of the same hub)."""
        return self._driver.stats

    async def __call__(self, scope: Scope, receive: Receive, send: ASGISend) -> None:
        """Serve one ASGI connection or the lifespan.

        Args:
            scope: The ASGI scope.
            receive: The ASGI receive callable.
            send: The ASGI send callable.
        """
        kind = scope["type"]
        if kind == "websocket":
            path = _route_path(scope)
            if self.fallback is not None and self.hub.match(path) is None:
                await self.fallback(scope, receive, send)
            else:
                await self._websocket(scope, path, receive, send)
        elif kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(scope, receive, send)
        elif self.fallback is not None:
            await self.fallback(scope, receive, send)
        else:
            raise RuntimeError(f"unsupported ASGI scope type {kind!r}")

    @asynccontextmanager
    async def lifespan(self) -> AsyncIterator[None]:
        """Host the background service for the block, e.g. inside a host app's lifespan.

        Starlette and FastAPI do not pass the lifespan to mounted apps; enter
        this from theirs to keep ``idle_timeout`` and background emits on a
        long-lived task. Leaving it closes every connection with 1001.

        Yields:
            Nothing; the service runs until the block ends.
        """
        async with anyio.create_task_group() as tg:
            self._driver.pin(tg)
            try:
                yield
            finally:
                with anyio.CancelScope(shield=True):
                    await self._shutdown()
                self._driver.unpin(tg)

    # -- scopes ---------------------------------------------------------------------------

    async def _http(self, scope: Scope, receive: Receive, send: ASGISend) -> None:
        if self.hub.match(_route_path(scope)) is not None:
            await _respond(
                send,
                426,
                b"This is a WebSocket endpoint: upgrade the connection.\n",
                [(b"upgrade", b"websocket"), (b"sec-websocket-version", b"13")],
            )
        elif self.fallback is not None:
            await self.fallback(scope, receive, send)
        else:
            await _respond(send, 404, b"Not Found\n")

    async def _lifespan(self, scope: Scope, receive: Receive, send: ASGISend) -> None:
        driver = self._driver
        async with anyio.create_task_group() as tg:
            if self.fallback is not None:

                async def relay() -> Message:
                    message = await receive()
                    if message["type"] == "lifespan.startup":
                        driver.pin(tg)
                    elif message["type"] == "lifespan.shutdown":
                        await self._shutdown()
                    return message

                try:
                    await self.fallback(scope, relay, send)
                finally:
                    driver.unpin(tg)
                return
            try:
                while True:
                    message = await receive()
                    if message["type"] == "lifespan.startup":
                        driver.pin(tg)
                        await send({"type": "lifespan.startup.complete"})
                    elif message["type"] == "lifespan.shutdown":
                        await self._shutdown()
                        driver.unpin(tg)
                        await send({"type": "lifespan.shutdown.complete"})
                        return
            finally:
                driver.unpin(tg)

    async def _shutdown(self) -> None:
        """Close every connection with 1001 and wait (bounded) for them to finish."""
        driver = self._driver
        driver.install()
        self.hub.stop_accepting()
        self.hub.close_all(SHUTDOWN_CODE, "server shutting down")
        driver.drain()
        with anyio.move_on_after(self.close_timeout):
            while driver.conns:
                await anyio.sleep(0.01)

    async def _websocket(self, scope: Scope, path: str, receive: Receive, send: ASGISend) -> None:
        message = await receive()
        if message["type"] != "websocket.connect":
            return  # the client left before the handshake
        driver = self._driver
        driver.install()
        conn = _Conn(self, driver, send)
        try:
            result = self.hub.open(_request(scope, path), conn=conn)
        except Exception:
            logger.exception("opening a WebSocket on %s failed", path)
            result = Reject(status=500, reason="internal server error")
        if isinstance(result, Reject):
            driver.stats.rejected += 1
            await _reject(scope, send, result)
            driver.drain()
            return
        conn.kws = result
        driver.stats.connections += 1
        await conn.serve(receive)


class _Driver:
    """Moves one hub's actions into its connections' queues; one per hub."""

    @classmethod
    def of(cls, hub: Hub) -> _Driver:
        driver = _drivers.get(id(hub))
        if driver is None or driver.hub is not hub:
            driver = _drivers[id(hub)] = cls(hub)
        return driver

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.stats = ASGIStats()
        self.conns: dict[_Conn, None] = {}
        self._installed = False
        self._draining = False
        self._wake: anyio.Event | None = None
        self._service_scope: anyio.CancelScope | None = None
        self._service_tg: TaskGroup | None = None
        self._host: object = None  # the _Conn or pinned task group running the service
        self._pinned: TaskGroup | None = None
        self._moving = False

    def install(self) -> None:
        """Become the hub's driver (lazily, so importing an app never steals a hub)."""
        if not self._installed:
            self._installed = True
            self.hub.set_wakeup(self._woken)

    def _woken(self) -> None:
        # Called by the hub, possibly deep inside a command: only schedule the drain.
        if self._wake is not None:
            self._wake.set()

    # -- draining ------------------------------------------------------------------------

    def drain(self) -> None:
        """Perform every queued action; synchronous, so no other task interleaves."""
        if self._draining:
            return  # the loop below picks up what was queued meanwhile
        self._draining = True
        try:
            hub = self.hub
            while actions := hub.drain_actions():
                for action in actions:
                    try:
                        if isinstance(action, Send):
                            self._send(action)
                        elif isinstance(action, Close):
                            conn = action.target.conn
                            if isinstance(conn, _Conn):
                                conn.push_close(action.code, action.reason)
                        elif isinstance(action, RunHandler):
                            self._run(action)
                    except Exception:
                        logger.exception("performing %r failed", action)
        finally:
            self._draining = False

    def _send(self, action: Send) -> None:
        data = action.data
        # Decoded once per message, whatever the number of targets; ASGI servers
        # only read these dicts, so every target shares the same one.
        if action.kind is _TEXT:
            message: Message = {"type": "websocket.send", "text": data.decode("utf-8")}
        else:
            message = {"type": "websocket.send", "bytes": data}
        size = len(data)
        for target in action.targets:
            conn = target.conn
            if isinstance(conn, _Conn) and conn.writable:
                conn.push(message, size)

    def _run(self, action: RunHandler) -> None:
        target = action.target
        conn = target.conn if target is not None else None
        if isinstance(conn, _Conn) and not conn.done:
            conn.add_handler(action.awaitable)
        elif self._service_tg is not None:
            self._service_tg.start_soon(_await, action.awaitable)
        else:
            logger.warning("no task to run an async listener on; it was dropped")
            _discard(action.awaitable)

    # -- the background service ----------------------------------------------------------

    def pin(self, tg: TaskGroup) -> None:
        """Run the service in ``tg`` (a lifespan) rather than in connections."""
        self.install()
        self.hub.resume_accepting()
        self._pinned = tg
        if self._host is None:
            self._start(tg, tg)
        elif isinstance(self._host, _Conn):
            self._move()

    def unpin(self, tg: TaskGroup) -> None:
        """Stop running the service in ``tg``."""
        if self._pinned is tg:
            self._pinned = None
            if self._host is tg:
                self._move()

    def attach(self, conn: _Conn) -> None:
        """A connection is being served; make sure the service runs somewhere."""
        self.conns[conn] = None
        if self._host is None:
            self._ensure_service()

    def release(self, conn: _Conn) -> None:
        """A connection is ending: move the service off its task group."""
        if self._host is conn:
            self._move()

    def detach(self, conn: _Conn) -> None:
        """A connection is gone."""
        self.conns.pop(conn, None)
        if self._host is None:
            self._ensure_service()

    def _move(self) -> None:
        if self._service_scope is not None:
            self._moving = True
            self._service_scope.cancel()

    def _ensure_service(self) -> None:
        if self._pinned is not None:
            self._start(self._pinned, self._pinned)
            return
        for conn in self.conns:
            if conn.tg is not None and not conn.done:
                self._start(conn.tg, conn)
                return

    def _start(self, tg: TaskGroup, host: object) -> None:
        self._host = host
        self._service_tg = tg
        # Made now, not in the task: the host may leave before the task first runs.
        self._service_scope = anyio.CancelScope()
        tg.start_soon(self._service, self._service_scope)

    async def _service(self, scope: anyio.CancelScope) -> None:
        hub = self.hub
        next_tick = 0.0
        try:
            with scope:
                self._wake = anyio.Event()
                while True:
                    now = anyio.current_time()
                    if now >= next_tick:
                        hub.tick(now)
                        interval = TICK_RESOLUTION
                        if hub.idle_timeout is not None:
                            interval = min(interval, hub.idle_timeout / 4)
                        next_tick = now + interval
                        deadline = hub.next_deadline()
                        if deadline is not None and now < deadline < next_tick:
                            next_tick = deadline
                    self.drain()
                    with anyio.move_on_after(next_tick - now):
                        await self._wake.wait()
                    if self._wake.is_set():
                        self._wake = anyio.Event()
        finally:
            self._service_scope = None
            self._service_tg = None
            self._wake = None
            self._host = None
            if self._moving:
                self._moving = False
                self._ensure_service()


class _Conn:
    """One accepted ASGI WebSocket: its outbound queue, sender, reader and handler runner."""

    __slots__ = (
        "_close",
        "_handlers",
        "_idle",
        "_in_flight",
        "_overflowing",
        "_queue",
        "_reader_scope",
        "_send_scope",
        "_wake",
        "app",
        "done",
        "driver",
        "kws",
        "queued",
        "running_handlers",
        "send",
        "tg",
        "writable",
    )

    def __init__(self, app: ASGIApp, driver: _Driver, send: ASGISend) -> None:
        self.app = app
        self.driver = driver
        self.send = send
        self.kws: Websocket | None = None
        self.tg: TaskGroup | None = None
        #: Messages still accepted for this connection.
        self.writable = True
        #: The connection finished; late async listeners run on the service.
        self.done = False
        #: Bytes queued, including the message being written.
        self.queued = 0
        self.running_handlers = False
        self._queue: deque[tuple[Message, int]] = deque()
        self._in_flight = 0
        self._overflowing = False
        self._handlers: deque[Awaitable[None]] = deque()
        self._wake = anyio.Event()
        self._idle = anyio.Event()
        #: The close to send once the queue is written (or at once, after an overflow).
        self._close: Message | None = None
        #: Cancelled to abandon the queue (and a write stuck on a client that stopped reading).
        self._send_scope = anyio.CancelScope()
        self._reader_scope: anyio.CancelScope | None = None

    # -- called while draining (synchronous) ---------------------------------------------

    def push(self, message: Message, size: int) -> None:
        queued = self.queued
        if queued and queued + size > self.app.max_queue:
            self._overflow(queued + size)
            return
        self._queue.append((message, size))
        self.queued = queued + size
        self._wake.set()

    def push_close(self, code: int, reason: str) -> None:
        if self._close is None:
            self._close = {"type": "websocket.close", "code": code, "reason": reason}
            self.writable = False
            self._wake.set()

    def fail(self, error: BaseException, code: int, reason: str) -> None:
        """The peer is at fault: report ``error``, end the connection (``disconnect``), close."""
        kws = self.kws
        assert kws is not None
        hub = self.driver.hub
        if kws.is_alive:
            hub.receive_error(kws, error)
            hub.receive_disconnect(kws, code, reason, error)
        self.push_close(code, reason)

    def add_handler(self, awaitable: Awaitable[None]) -> None:
        self._handlers.append(awaitable)
        if not self.running_handlers and self.tg is not None:
            self._start_handlers()

    def _overflow(self, size: int) -> None:
        kws = self.kws
        assert kws is not None
        stats = self.driver.stats
        error = SlowConsumer(size, self.app.max_queue)
        if self.app.backpressure == "close":
            stats.overflow_closes += 1
            # The backlog will not be read in time: drop it and close at once.
            self._discard_queue()
            self.fail(error, OVERFLOW_CODE, "slow consumer")
            return
        stats.dropped_messages += 1
        if not self._overflowing:
            self._overflowing = True  # report once until the queue empties
            if kws.is_alive:
                self.driver.hub.receive_error(kws, error)

    def _discard_queue(self) -> None:
        self._queue.clear()
        self.queued = 0
        self._in_flight = 0
        self._send_scope.cancel()

    # -- tasks ---------------------------------------------------------------------------

    async def serve(self, receive: Receive) -> None:
        """Accept, then read and write until either side closes."""
        kws = self.kws
        assert kws is not None
        driver = self.driver
        hub = driver.hub
        try:
            async with anyio.create_task_group() as tg:
                self.tg = tg
                driver.attach(self)
                try:
                    await self._run(receive)
                finally:
                    # From here on the task group takes no new tasks (trio closes it).
                    self.done = True
                    self.writable = False
                    self._discard_queue()
                    self._wake.set()
                    driver.release(self)
        finally:
            self.done = True
            if kws.state is not ConnectionState.CLOSED:
                # Cancelled from outside (server shutdown): still end it in the hub.
                hub.receive_disconnect(kws, 1006)
                driver.drain()
            for awaitable in self._handlers:
                _discard(awaitable)
            self._handlers.clear()
            driver.detach(self)

    async def _run(self, receive: Receive) -> None:
        kws = self.kws
        assert kws is not None
        driver = self.driver
        if self._handlers:
            self._start_handlers()
        try:
            accept: Message = {"type": "websocket.accept"}
            if kws.subprotocol is not None:
                accept["subprotocol"] = kws.subprotocol
            await self.send(accept)
        except Exception as exc:
            driver.hub.receive_disconnect(kws, 1006, error=exc)
            driver.drain()
        else:
            assert self.tg is not None
            self.tg.start_soon(self._sender)
            driver.drain()
            await self._reader(receive)
        # Terminal listeners may still be running; the connection ends after them.
        while self.running_handlers:
            await self._idle.wait()

    async def _reader(self, receive: Receive) -> None:
        kws = self.kws
        assert kws is not None
        driver = self.driver
        hub = driver.hub
        stats = driver.stats
        limit = self.app.max_message_size
        with anyio.CancelScope() as scope:
            self._reader_scope = scope
            while True:
                message = await receive()
                while self.running_handlers:
                    await self._idle.wait()  # one connection's events stay in order
                kind = message["type"]
                if kind == "websocket.receive":
                    data = message.get("bytes")
                    if data is not None:
                        mkind = _BINARY
                    else:
                        data = (message.get("text") or "").encode("utf-8")
                        mkind = _TEXT
                    stats.messages_in += 1
                    if limit is not None and len(data) > limit:
                        error = RemoteProtocolError(
                            f"a {len(data)}-byte message exceeds max_message_size={limit}",
                            close_code=1009,
                        )
                        self.fail(error, 1009, "message too big")
                    else:
                        hub.receive_message(kws, data, mkind)
                    driver.drain()
                elif kind == "websocket.disconnect":
                    code = message.get("code", 1005)
                    hub.receive_disconnect(kws, code, message.get("reason") or "")
                    driver.drain()
                    return

    async def _sender(self) -> None:
        queue = self._queue
        stats = self.driver.stats
        send = self.send
        with self._send_scope:
            while True:
                while queue:
                    message, size = queue.popleft()
                    self._in_flight = size
                    try:
                        await send(message)
                    except Exception as exc:
                        # The client is gone; ``receive`` reports the disconnect.
                        logger.debug("send failed on %r: %r", self.kws, exc)
                        self.writable = False
                        self._discard_queue()
                        return
                    stats.messages_out += 1
                    self.queued -= self._in_flight
                    self._in_flight = 0
                if self._close is not None or self.done:
                    break
                self._overflowing = False
                await self._wake.wait()
                self._wake = anyio.Event()
        if self._close is not None and not self.done:  # (done: the peer left first)
            await self._send_close(self._close)

    async def _send_close(self, message: Message) -> None:
        kws = self.kws
        assert kws is not None
        with anyio.move_on_after(self.app.close_timeout):
            try:
                await self.send(message)
            except Exception as exc:
                logger.debug("sending the close frame failed on %r: %r", kws, exc)
        driver = self.driver
        driver.hub.receive_disconnect(kws, message["code"], message["reason"])
        driver.drain()
        if self._reader_scope is not None:
            self._reader_scope.cancel()

    def _start_handlers(self) -> None:
        assert self.tg is not None
        self.running_handlers = True
        self._idle = anyio.Event()
        self.tg.start_soon(self._run_handlers)

    async def _run_handlers(self) -> None:
        handlers = self._handlers
        try:
            while handlers:
                await handlers.popleft()
                self.driver.drain()
        finally:
            self.running_handlers = False
            self._idle.set()


#: One driver per hub, shared by every app made for it (one hub, one driver).
_drivers: weakref.WeakValueDictionary[int, _Driver] = weakref.WeakValueDictionary()


# -- helpers -------------------------------------------------------------------------------


def _route_path(scope: Scope) -> str:
    """The path below the mount point (ASGI paths include ``root_path``)."""
    path: str = scope.get("path") or "/"
    root: str = scope.get("root_path") or ""
    if root and path.startswith(root) and (len(path) == len(root) or path[len(root)] == "/"):
        path = path[len(root) :] or "/"
    return path


def _request(scope: Scope, path: str) -> Request:
    # ``path`` is already percent-decoded by the server: do not decode it twice.
    client = scope.get("client")
    headers = Headers(
        (bytes(name).decode("latin-1"), bytes(value).decode("latin-1"))
        for name, value in scope.get("headers") or ()
    )
    offered = scope.get("subprotocols")
    if offered and "sec-websocket-protocol" not in headers:
        # Servers built on wsproto (uvicorn's) keep the offer only in the scope.
        headers = Headers((*headers.raw, ("sec-websocket-protocol", ", ".join(offered))))
    return Request(
        path=path,
        query_string=bytes(scope.get("query_string") or b"").decode("latin-1"),
        headers=headers,
        client=(str(client[0]), int(client[1])) if client else None,
        scheme=scope.get("scheme") or "ws",
    )


async def _reject(scope: Scope, send: ASGISend, reject: Reject) -> None:
    """Refuse before the upgrade: a real HTTP response where the server allows it."""
    try:
        if "websocket.http.response" in (scope.get("extensions") or {}):
            body = reject.reason.encode("utf-8")
            headers = [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(body)).encode("ascii")),
            ]
            headers += [(n.encode("latin-1"), v.encode("latin-1")) for n, v in reject.headers]
            await send(
                {
                    "type": "websocket.http.response.start",
                    "status": reject.status,
                    "headers": headers,
                }
            )
            await send({"type": "websocket.http.response.body", "body": body})
        else:
            # ASGI servers answer a close before the accept with 403.
            await send({"type": "websocket.close", "code": 1008, "reason": ""})
    except Exception as exc:
        logger.debug("rejecting a WebSocket failed: %r", exc)


async def _respond(
    send: ASGISend, status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    head = [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", str(len(body)).encode("ascii")),
        *(headers or []),
    ]
    await send({"type": "http.response.start", "status": status, "headers": head})
    await send({"type": "http.response.body", "body": body})


async def _await(awaitable: Awaitable[None]) -> None:
    await awaitable


def _discard(awaitable: Awaitable[None]) -> None:
    close = getattr(awaitable, "close", None)
    if close is not None:
        close()
