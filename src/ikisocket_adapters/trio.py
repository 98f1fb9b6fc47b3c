"""Serve a hub on trio.

This is the anyio adapter's driver (:mod:`ikisocket_adapters.anyio`) run by
trio, with trio-typed entry points: one nursery per server, one task that reads every
plain TCP socket (on Linux; so a message costs no wake-up of a task of its
own), one task per plain TCP connection, asleep until it ends (a TLS one has
a reader and a sender task, as has every connection where ``select.epoll`` is
missing), a sender task only
while the kernel refuses a connection's output, a helper task per
connection only while its ``async def`` listeners run, and a timer task that
sleeps until the engine's next deadline. (Measured against the trio-native driver this replaced, it
costs nothing: the extra layer is anyio's thin wrapper around trio's own
sockets.)

::

    import trio
    from ikisocket_adapters.trio import serve

    trio.run(serve, hub, "127.0.0.1", 3000)

``serve`` runs until cancelled and then shuts down gracefully (every client is
closed with 1001). With ``await nursery.start(serve, hub, host, 0)`` it
reports the running :class:`WebSocketServer` (its ``port``, ``close()``);
``async with open_server(hub, host, 0) as server:`` does the same for a block.
From synchronous code (a test, another thread), an anyio portal runs it::

    with anyio.from_thread.start_blocking_portal("trio") as portal:
        finished, server = portal.start_task(serve, hub, "127.0.0.1", 0)
        ...  # clients connect to server.port
        portal.call(server.aclose)
"""

from __future__ import annotations

import ssl
from contextlib import AbstractAsyncContextManager
from typing import Any, cast

import trio
from anyio.abc import TaskStatus

from ikisocket_core import Hub

from . import anyio as _driver
from ._common import BACKLOG
from .anyio import WebSocketServer

__all__ = ["WebSocketServer", "open_server", "serve"]


async def serve(
    hub: Hub,
    host: str | None = "127.0.0.1",
    port: int = 8000,
    *,
    ssl_context: ssl.SSLContext | None = None,
    backlog: int = BACKLOG,
    reuse_port: bool = False,
    task_status: trio.TaskStatus[WebSocketServer] = trio.TASK_STATUS_IGNORED,
    **limits: Any,
) -> None:
    """Serve ``hub`` until cancelled or closed, then shut down gracefully.

    :func:`ikisocket_adapters.anyio.serve`, with its arguments; ``task_status``
    is trio's (``nursery.start``).
    """
    await _driver.serve(
        hub,
        host,
        port,
        ssl_context=ssl_context,
        backlog=backlog,
        reuse_port=reuse_port,
        # trio's TaskStatus has started(value) only: all that serve calls.
        task_status=cast(TaskStatus[WebSocketServer], task_status),
        **limits,
    )


def open_server(
    hub: Hub,
    host: str | None = "127.0.0.1",
    port: int = 8000,
    *,
    ssl_context: ssl.SSLContext | None = None,
    backlog: int = BACKLOG,
    reuse_port: bool = False,
    **limits: Any,
) -> AbstractAsyncContextManager[WebSocketServer]:
    """Serve ``hub`` for the duration of an ``async with`` block.

    :func:`ikisocket_adapters.anyio.open_server`, with its arguments: leaving
    the block shuts the server down gracefully (as :func:`serve`).

    Returns:
        The context manager; it yields the running server.
    """
    return _driver.open_server(
        hub, host, port, ssl_context=ssl_context, backlog=backlog, reuse_port=reuse_port, **limits
    )
