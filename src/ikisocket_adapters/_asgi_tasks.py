"""Where an ASGI connection's work runs: its context, and its own tasks (:class:`_Tasks`).

Split from :mod:`ikisocket_adapters._asgi_conn`, whose :class:`_Conn` writes from
other tasks in the context made here and starts its rare tasks in a :class:`_Group`.
"""

from __future__ import annotations

import asyncio
import contextvars
import sys
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

import anyio

from ._common import logger

__all__: list[str] = []  # (the ASGI modules' own)

_async_library: contextvars.ContextVar[str | None] | None
try:
    from sniffio import current_async_library_cvar as _async_library
except ImportError:  # (anyio then takes a running asyncio loop for asyncio, callbacks too)
    _async_library = None


def asyncio_context() -> contextvars.Context:
    """A copy of the current context in which anyio finds asyncio, even in no task.

    Sends that another task or a loop callback runs for a connection (see
    :func:`flush`) may start its sender task or read the time through anyio.
    With sniffio installed, anyio asks it which library runs; outside a task
    sniffio answers only from its context variable, which servers that do not
    run on anyio (uvicorn, daphne) leave unset. It is set to asyncio here:
    these contexts only ever run on asyncio.
    """
    context = contextvars.copy_context()
    if _async_library is not None:
        context.run(_async_library.set, "asyncio")
    return context


def _asyncio_task() -> bool:
    """Whether this runs in an asyncio task (not trio, whose sends are bound to their task)."""
    if "asyncio" not in sys.modules:
        return False
    try:
        return asyncio.current_task() is not None
    except RuntimeError:
        return False


class _Group(Protocol):
    """What a connection starts its own tasks in: anyio's task group, or :class:`_Tasks`."""

    def start_soon(
        self, func: Callable[..., Coroutine[Any, Any, Any]], *args: Any, name: object = None
    ) -> object:
        """Start ``func(*args)`` as a task of the connection (what it returns is unused)."""


class _Tasks:
    """A connection's own tasks on asyncio: anyio's task group, lighter.

    A connection's tasks are rare (a sender that had to wait, its ``async def``
    listeners, the driver's service while it stays there), while a task group
    per connection costs every connection, most of which start none: anyio's
    makes a cancel scope and a task state, enters and leaves the scope, at its
    end without children waits a turn of the loop (about 8 µs on uvloop), and
    leaves half a dozen objects for every garbage collection to visit while
    the connection lasts. This starts each task in a cancel scope of its own,
    made only then, and at the end of the block waits for them, after
    cancelling their scopes if the block ended in an exception (a server
    cancelling the ASGI call): cancelled as anyio's task group would cancel
    them, so a task's shielded cleanup still runs. One that fails is logged,
    not raised (each handles its own errors; the connection is over by then).
    """

    __slots__ = ("_tasks",)

    def __init__(self) -> None:
        #: Each running task and its cancel scope.
        self._tasks: dict[asyncio.Task[Any], anyio.CancelScope] | None = None

    def start_soon(
        self, func: Callable[..., Coroutine[Any, Any, Any]], *args: Any, name: object = None
    ) -> None:
        """Start ``func(*args)`` as a task, in the current context (a copy of it)."""
        scope = anyio.CancelScope()
        task = asyncio.get_running_loop().create_task(_in_scope(scope, func(*args)))
        tasks = self._tasks
        if tasks is None:
            tasks = self._tasks = {}
        tasks[task] = scope
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        if self._tasks is not None:
            self._tasks.pop(task, None)
        if not task.cancelled() and (failure := task.exception()) is not None:
            logger.error("a task of an ASGI connection failed: %r", task, exc_info=failure)

    async def __aenter__(self) -> _Tasks:
        return self

    async def __aexit__(self, kind: object, exc: BaseException | None, tb: object) -> None:
        tasks = self._tasks
        if not tasks:
            return
        if exc is not None:
            for scope in tasks.values():
                scope.cancel()
        cancelled: BaseException | None = None
        with anyio.CancelScope() as waiting:
            while tasks:
                try:
                    await asyncio.wait(tuple(tasks))
                except asyncio.CancelledError as stop:  # cancelled from outside: they end first
                    waiting.shield = True
                    cancelled = stop
                    for scope in tasks.values():
                        scope.cancel()
        if cancelled is not None and exc is None:
            raise cancelled


async def _in_scope(scope: anyio.CancelScope, coroutine: Coroutine[Any, Any, Any]) -> None:
    with scope:
        await coroutine
