"""One accepted ASGI WebSocket (:class:`_Conn`): its sender, reader and listener runner.

Split from :mod:`ikisocket_adapters.asgi`, which keeps the app and the per-hub driver.
"""

from __future__ import annotations

import contextvars
import inspect
import time
import types
from collections import deque
from collections.abc import Awaitable, Generator
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any

import anyio

from ikisocket_core import ConnectionState, MessageKind
from ikisocket_core.protocol import ServerConnection

from ._asgi_scope import ASGISend, Message, Receive, Scope, _route_path
from ._asgi_tasks import _asyncio_task, _Group, _Tasks, asyncio_context
from ._common import discard, logger, running_clock

if TYPE_CHECKING:
    from .asgi import ASGIApp, _Driver

__all__: list[str] = []  # (flush, serve_asgi and _Conn are the ASGI module's)

_TEXT = MessageKind.TEXT
_BINARY = MessageKind.BINARY
_CLOSED = ConnectionState.CLOSED


#: What a connection's writer yields once a batch is written (no ``send`` yields it).
_WRITTEN: Any = object()


@types.coroutine
def _writer(send: ASGISend) -> Generator[Any, list[Message], None]:
    """Write each batch of messages it is sent through ``send``; yield :data:`_WRITTEN` after each.

    :func:`flush` drives one of these per connection instead of each
    ``send(message)`` coroutine itself: a coroutine that completes ends its
    ``coro.send(None)`` in a ``StopIteration`` made and caught in Python, which
    costs two to three times what resuming this generator does; here the
    completed send comes back as a plain value, as it does to ``await``. A send
    that waits yields what it waits on instead, and :class:`_Resume` finishes it
    and the rest of the batch (one resumption per batch, not per message).
    """
    messages = yield _WRITTEN
    while True:
        for message in messages:
            yield from send(message)  # type: ignore[misc]  # a coroutine (checked at accept)
        messages = yield _WRITTEN


class _Resume:
    """Finish in the awaiting task an ASGI ``send`` that another task started.

    :func:`flush` runs a receiver's ``send`` from the task that produced
    the output, up to its first suspension (uvicorn's waits for a paused
    transport, hypercorn's for its lock or the drain); this hands the rest of
    it to the receiver's own sender task, so that the producer never waits on
    one slow reader. It relays what the send yields and what the event loop
    answers, as ``await`` would, until the connection's :func:`_writer` says
    the message is written. Every step runs in the connection's own
    :class:`contextvars.Context`, where the first one ran, so a wrapper that
    sets a context variable around the send resets it where it was set.
    """

    __slots__ = ("_context", "_step", "_yielded")

    def __init__(
        self, context: contextvars.Context, step: Generator[Any, Any, Any], yielded: Any
    ) -> None:
        self._context = context
        self._step = step
        self._yielded = yielded

    def __await__(self) -> Generator[Any, Any, None]:
        run = self._context.run
        step = self._step
        yielded = self._yielded
        while True:
            try:
                answer = yield yielded
            except GeneratorExit:
                run(step.close)
                raise
            except BaseException as exc:  # cancellation included: the send sees it
                yielded = run(step.throw, exc)
            else:
                yielded = run(step.send, answer)
            if yielded is _WRITTEN:
                return


class _Gone:
    """What an ended connection's ``transport`` becomes (see :meth:`_Conn._end`).

    The engine's connection and its hub handle refer to each other, and a
    listener may keep the handle after the end: were the ended :class:`_Conn`
    still its transport, the handle would keep it alive, and with it the ASGI
    server's own objects for the connection (its protocol, transport and
    parser, through ``send``), and their only way out would be a cyclic
    garbage collection. This stands in for it: nothing is written for a
    connection that ended, and what would be is dropped.
    """

    __slots__ = ()

    _parked = False
    done = True

    def _wake_sender(self) -> None:
        """There is no sender any more (:func:`flush`)."""

    def close_transport(self) -> None:
        """The connection is closed already (``CloseTransport``)."""


_GONE = _Gone()


class _Conn:
    """One accepted ASGI WebSocket: its reader, its sender and its handler runner.

    On asyncio servers whose ``send`` is a coroutine, the sender task runs only
    while a send has to wait, one failed, or the close is to be sent: meanwhile
    the tasks that produce output write it themselves (:func:`flush`).
    Elsewhere (trio, granian's awaitables) it runs from the accept to the close.
    """

    __slots__ = (
        "_direct",
        "_failure",
        "_handlers",
        "_idle",
        "_parked",
        "_pending",
        "_readable",
        "_reader_scope",
        "_run_in",
        "_send_scope",
        "_sender_on",
        "_write",
        "_writer",
        "closing",
        "conn",
        "done",
        "driver",
        "running_handlers",
        "send",
        "tg",
        "wakeup",
    )

    def __init__(self, driver: _Driver, conn: ServerConnection, send: ASGISend) -> None:
        self.driver = driver
        self.conn = conn
        self.send = send
        self.tg: _Group | None = None
        #: The engine handed over the transport to close (``CloseTransport``).
        self.closing = False
        #: The ASGI call is ending; late async listeners run on the service.
        self.done = False
        self.running_handlers = False
        # Made when first needed: an idle connection holds no event (about 760 bytes each on
        # asyncio) and no deque of its own.
        self._handlers: deque[Awaitable[None]] | None = None
        #: Set for output waiting, or the close; only while the sender waits for it.
        self.wakeup: anyio.Event | None = None
        #: Set when conn.can_read may have turned true; only while the reader waits for it.
        self._readable: anyio.Event | None = None
        #: Set when the handler runner finished; made when it starts.
        self._idle: anyio.Event | None = None
        #: The sender's scope, cancelled to abandon what was taken (a write stuck on a client
        #: that stopped reading). Made as a sender starts (or a close sets its deadline first)
        #: and dropped as it ends: a connection whose sender never ran has none to cancel
        #: (anyio's cancel formats the calling task's repr, dear to pay at every close).
        self._send_scope: anyio.CancelScope | None = None
        self._reader_scope = anyio.CancelScope()
        #: Where other tasks run ``send`` (asyncio servers whose send is a coroutine), if they may.
        self._direct: contextvars.Context | None = None
        #: What they run it through (see _writer); None once it ended or was closed.
        self._writer: Generator[Any, list[Message], None] | None = None
        #: ``self._direct.run`` and ``self._writer.send``, bound once (used only while parked).
        self._run_in: Any = None
        self._write: Any = None
        #: The sender waits for output with nothing in flight: others may write for it.
        self._parked = False
        #: A batch whose writing another task started and that must wait (its writer and
        #: what that yielded); the writer still holds the batch's later messages.
        self._pending: tuple[Generator[Any, list[Message], None], Any] | None = None
        self._failure: Exception | None = None
        #: A sender task is running. Where others may write (``_direct``), one is started
        #: only when a send has to wait, failed, or the close is to be sent, and it ends
        #: once nothing is in flight: an idle connection has no sender task.
        self._sender_on = False

    # -- called while draining (synchronous): see flush() below -------------------------

    def _wake_reader(self) -> None:
        readable = self._readable
        if readable is not None:
            readable.set()

    def _wake_sender(self) -> None:
        wakeup = self.wakeup
        if wakeup is not None:
            wakeup.set()

    def _need_sender(self) -> None:
        """Have a sender task finish what others could not write: wake it, or start one."""
        if self._sender_on:
            self._wake_sender()
            return
        if self.done or self.tg is None or self._direct is None:
            return  # (without _direct, a sender runs from the accept to the close)
        self._sender_on = True
        self._send_scope = anyio.CancelScope()
        # Started in the connection's own context (a copy of it, as the task that
        # accepted would have given it), not in the context of whichever task
        # produced the output: its sends see the ASGI call's context variables.
        self._direct.run(self.tg.start_soon, self._sender)

    def _hand_over(self, yielded: Any = None, failure: Exception | None = None) -> None:
        """A write started outside the sender did not finish: the sender task takes over.

        Either the send ``yielded`` what it waits on (the sender finishes it,
        and the rest of its batch), or it raised ``failure`` (which ended the
        writer; the sender reports it, as a failed send of its own).
        """
        if failure is not None:
            self._writer = None
            self._failure = failure
        else:
            writer = self._writer
            assert writer is not None
            self._pending = (writer, yielded)
        self._parked = False
        self._need_sender()

    def close_transport(self) -> None:
        self.closing = True
        self._parked = False
        if self.conn.close_code is None:
            self._wake_sender()
            if self._send_scope is not None:
                self._send_scope.cancel()  # the peer ended it: nothing more to write
        else:
            self._need_sender()  # it writes what is left, then the close
            # What was taken, then the close, within close_timeout; past it the backlog goes.
            # (A sender about to start at the accept enters the scope with its deadline set.)
            scope = self._send_scope
            if scope is None:
                scope = self._send_scope = anyio.CancelScope()
            deadline = anyio.current_time() + self.driver.config.close_timeout
            scope.deadline = min(scope.deadline, deadline)

    def add_handler(self, awaitable: Awaitable[None]) -> None:
        if self._handlers is None:
            self._handlers = deque()
        self._handlers.append(awaitable)
        if not self.running_handlers and self.tg is not None:
            self._start_handlers()

    # -- tasks ---------------------------------------------------------------------------

    def _leave(self) -> None:
        """The reading and the terminal listeners are over: no more tasks for this connection.

        The sender is cancelled (a running one abandons what it holds as it
        ends), and the service moves off this connection's task group.
        """
        # From here on the task group takes no new tasks (trio closes it).
        self.done = True
        self._parked = False
        if self._send_scope is not None:
            self._send_scope.cancel()
        if not self._sender_on:
            self._abandon()  # (a sender running does it as it ends)
        self.driver.release(self)

    def _end(self) -> None:
        """The ASGI call ends: the engine hears of it if it has not (a server shutting down).

        The connection's transport becomes :data:`_GONE` (see :class:`_Gone`).
        """
        conn = self.conn
        driver = self.driver
        self.done = True
        self._parked = False
        if conn.state is not _CLOSED:
            # Cancelled from outside (server shutdown): still end it in the engine.
            driver.install().connection_lost(conn)
            driver.drain()
        if self._handlers is not None:
            for awaitable in self._handlers:
                discard(awaitable)
            self._handlers.clear()
        driver.detach(self)
        conn.transport = _GONE

    async def _accept(self) -> bool:
        """Send the accept and start the sender; whether the connection was accepted."""
        conn = self.conn
        driver = self.driver
        if self._handlers:
            self._start_handlers()
        try:
            accept: Message = {"type": "websocket.accept"}
            subprotocol = conn.kws.subprotocol if conn.kws is not None else None
            if subprotocol is not None:
                accept["subprotocol"] = subprotocol
            accepting = self.send(accept)
            # A coroutine can be run up to where it waits, then handed on (see flush);
            # other awaitables (granian's) may start their work when made, so they are
            # made and awaited by the sender only.
            if _asyncio_task() and inspect.iscoroutine(accepting):
                self._direct = asyncio_context()  # this call's, as its sends see it
                self._writer = writer = _writer(self.send)
                next(writer)
                self._run_in = self._direct.run
                self._write = writer.send
            await accepting
        except Exception as exc:
            driver.install().connection_lost(conn, exc)
            driver.drain()
            return False
        assert self.tg is not None
        if self._direct is not None:
            if not (self.closing or self._sender_on):  # (a close came during the accept)
                self._parked = True  # others write; a sender starts when a send has to wait
                # Output drained before this (the route callback's, while no one could
                # write it) is written now: no Flush names this connection again for it.
                flush((conn,))
        else:
            self._sender_on = True
            if self._send_scope is None:  # (else a close during the accept made it)
                self._send_scope = anyio.CancelScope()
            self.tg.start_soon(self._sender)
        driver.drain()
        return True

    async def _sender(self) -> None:
        conn = self.conn
        send = self.send
        idle = False  # it ends because nothing is in flight (where others may write)
        scope = self._send_scope
        assert scope is not None  # (made before it was started)
        try:
            with scope:
                try:
                    while True:
                        pending = self._pending
                        if pending is not None:  # a send flush() started had to wait
                            self._pending = None
                            assert self._direct is not None
                            try:
                                await _Resume(self._direct, *pending)  # the rest of its batch
                            except BaseException:
                                self._writer = None  # (the send's exception ended it)
                                raise
                            continue
                        if self._failure is not None:
                            failure, self._failure = self._failure, None
                            raise failure
                        # Taken only once the previous batch is written: meanwhile the
                        # engine's buffer fills and its max_queue policy decides.
                        messages = conn.take()
                        if messages:
                            self._wake_reader()
                            for message in messages:
                                await send(message)
                        elif self.closing or self.done:
                            break
                        elif self._direct is not None:
                            # Nothing in flight: the tasks that produce output write it again.
                            self._parked = self._writer is not None
                            idle = True
                            return
                        else:
                            await self._park()
                except Exception as exc:
                    logger.debug("send failed on %r: %r", conn, exc)
                    self.driver.install().connection_lost(conn, exc)
                    self.driver.drain()
                    return
                finally:
                    if not idle:
                        self._abandon()
            code = conn.close_code
            if self.closing and code is not None and not self.done:  # (done: the peer left)
                await self._send_close(code, conn.close_reason)
        finally:
            self._sender_on = False
            self._send_scope = None

    async def _park(self) -> None:
        """Wait for output or the close: where no other task writes (no ``_direct``)."""
        # Every reason to wake was looked at before this, with no await since.
        self.wakeup = wakeup = anyio.Event()
        try:
            await wakeup.wait()
        finally:
            self.wakeup = None

    def _abandon(self) -> None:
        """Drop a started send the sender will not finish (it was cancelled or failed)."""
        self._pending = None
        writer, self._writer = self._writer, None
        if writer is not None and self._direct is not None:
            self._direct.run(writer.close)  # and a send it was in the middle of

    async def _send_close(self, code: int, reason: str) -> None:
        conn = self.conn
        with anyio.move_on_after(self.driver.config.close_timeout):
            try:
                await self.send({"type": "websocket.close", "code": code, "reason": reason})
            except Exception as exc:
                logger.debug("sending the close failed on %r: %r", conn, exc)
        # The ASGI server runs the closing handshake: for the engine it is over.
        conn.receive_close(code, reason)
        self.driver.drain()
        self._reader_scope.cancel()

    def _start_handlers(self) -> None:
        assert self.tg is not None
        self.running_handlers = True
        self._idle = anyio.Event()
        self.tg.start_soon(self._run_handlers)

    async def _run_handlers(self) -> None:
        handlers, idle = self._handlers, self._idle
        assert handlers is not None  # (made before it started)
        assert idle is not None
        driver = self.driver
        try:
            while handlers:
                await driver.run_one(self.conn, handlers.popleft())
                self._wake_reader()
                driver._done(self.conn)
        finally:
            self.running_handlers = False
            idle.set()


async def serve_asgi(  # noqa: PLR0915 (the reading loop is this frame's own body)
    app: ASGIApp, scope: Scope, receive: Receive, send: ASGISend
) -> None:
    """Serve one ASGI connection or the lifespan: ``ASGIApp.__call__``.

    A WebSocket's reading loop is this coroutine's own body, not a helper's:
    every message resumes the ASGI call through each coroutine frame between
    it and ``receive()`` (about 900 instructions per frame and message), so
    the call itself reads. What surrounds the loop is this frame's too: the
    connection's task group (its sender and listener runner), the reader's
    cancel scope, the wait for terminal listeners, then :meth:`_Conn._leave`
    and :meth:`_Conn._end`. (An ``asynccontextmanager`` around the loop cost
    an async generator, its manager and the loop's weak reference to it per
    connection, each one more object for every garbage collection to visit.)

    Args:
        app: The application.
        scope: The ASGI scope.
        receive: The ASGI receive callable.
        send: The ASGI send callable.
    """
    if scope["type"] != "websocket":
        await app._serve_other(scope, receive, send)
        return
    path = _route_path(scope)
    if app.fallback is not None and not app._routes(path):
        await app.fallback(scope, receive, send)
        return
    owner = await app._open(scope, path, receive, send)
    if owner is None:
        return
    conn = owner.conn
    driver = owner.driver
    stamping = driver.hub.idle_timeout is not None  # (fixed when the hub is made)
    # This task's loop's clock (anyio.current_time looks it up per call). Read only for
    # idle_timeout: else a module function, not a bound method held per connection.
    clock = running_clock() if stamping else time.monotonic
    engine = driver.install()  # (made before any connection)
    holds = driver.holds
    group: AbstractAsyncContextManager[_Group] = (
        _Tasks() if _asyncio_task() else anyio.create_task_group()
    )
    try:
        async with group as tg:
            owner.tg = tg
            driver.attach(owner)
            try:
                accepted = await owner._accept()
                # Set at the accept, used only while parked (see flush): where others write.
                run_in, write = owner._run_in, owner._write
                # Read in the reader's cancel scope (cancelled once the close is sent).
                with owner._reader_scope:
                    while accepted:
                        # can_read is true when both are 0, as after nearly every
                        # message: look at them before calling the property.
                        while (conn.blocked or conn.buffered) and not conn.can_read:
                            # Async listeners run, or a big message waits: read once
                            # it is taken.
                            owner._readable = readable = anyio.Event()
                            try:
                                await readable.wait()
                            finally:
                                owner._readable = None
                        message = await receive()
                        if message["type"] == "websocket.receive":
                            if stamping:  # driver.stamp(), inlined: for idle_timeout
                                engine.tick(clock())
                            text = message.get("text")
                            if text is None and (binary := message.get("bytes")) is not None:
                                data, kind = binary, _BINARY
                            else:  # text, or neither (not ASGI): an empty text message
                                # Kept beside its bytes: a reply of the same bytes is
                                # not decoded again. (UTF-8: the fast path of no name.)
                                driver.text = text = text or ""
                                data = driver.text_of = text.encode()
                                kind = _TEXT
                            # Parked (asyncio servers): nobody writes for this connection
                            # now. When the input's only output is this connection's own
                            # (an echo, a reply), it is taken and written at once: each
                            # ASGI send is a write of its own, so holding it would save
                            # none. Anything else (a broadcast, a message to another
                            # connection) waits in the engine for the end of the loop's
                            # turn, when one drain writes the turn's output together (the
                            # asyncio adapter's held replies), unless the last turn held
                            # only one input's: then the next LONE_REPLIES such inputs
                            # are drained at once. (take: positional.)
                            out = conn.receive_message(data, kind, owner._parked)
                            if out is None:
                                if holds.lone:
                                    holds.lone -= 1
                                elif owner._parked and holds.hold(engine, conn):
                                    continue  # (drained at the end of the turn)
                                driver.drain()
                                continue
                            # flush((conn,)) for what was just taken, inlined (once per
                            # echo): written here up to a send that has to wait, which
                            # the sender finishes; so the reader never waits on its
                            # client reading (max_queue still decides).
                            try:
                                yielded = run_in(write, out)
                            except Exception as exc:
                                owner._hand_over(failure=exc)
                            else:
                                if yielded is not _WRITTEN:
                                    owner._hand_over(yielded)
                            # A reply may have asked for an ack, with a timeout (drain()
                            # looks at this itself).
                            if engine.deadlines_armed != driver.seen:
                                driver.rearm()
                        elif message["type"] == "websocket.disconnect":
                            reason = message.get("reason") or ""
                            conn.receive_close(message.get("code", 1005), reason)
                            driver.drain()
                            break
                # Terminal listeners may still be running; the connection ends after them.
                while owner.running_handlers:
                    assert owner._idle is not None  # (made as the runner started)
                    await owner._idle.wait()
            finally:
                owner._leave()
    finally:
        owner._end()


def flush(connections: tuple[ServerConnection, ...]) -> None:
    """Output waits on each of ``connections``: write it from this task if its sender is idle.

    Else wake the connection's sender. Each batch is written here until it
    is done or a ``send`` has to wait (a paused transport, a lock); one that
    waits, with the rest of its batch, goes to the sender task, which
    finishes it before taking more. So a broadcast wakes no task per receiver
    while the receivers keep up, the messages of a connection keep their
    order, and a slow reader holds up only itself. One function for a whole
    ``Flush`` (not a method per connection): it runs once per delivery.
    """
    written = _WRITTEN
    for conn in connections:
        owner: _Conn = conn.transport
        if not owner._parked:  # (never while closing or done: both unpark it)
            owner._wake_sender()
            continue
        messages = conn.take()  # (empty if the sender took them: nothing is written then)
        readable = owner._readable
        if readable is not None:  # the reader waited for the output to drain
            readable.set()
        try:
            # Bound at accept: while parked, the writer has not ended (see _writer).
            run_in = owner._run_in  # (read, then called: see ServerConnection.deliver_own)
            yielded = run_in(owner._write, messages)
        except Exception as exc:
            owner._hand_over(failure=exc)
        else:
            if yielded is not written:
                owner._hand_over(yielded)
