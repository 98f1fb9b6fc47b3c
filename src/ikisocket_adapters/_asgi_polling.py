"""Socket.IO's HTTP long-polling behind ASGI: the ``http`` scope on the mount's path.

Each request is read here (its body at most the mount's ``max_payload``: past
it, reading stops and the engine answers 413) and handed to the engine's
message entry for polling (:meth:`Server.serve_poll`). A GET with nothing to
send yet waits on an :class:`anyio.Event` until the engine answers it (packets
were queued, a ping, the session's end) or the client leaves, which ends the
session as on the socket adapters. The session's timers run on the adapter's
background service: behind an ASGI server run the lifespan (uvicorn and
hypercorn do by default) or enter ``ASGIApp.lifespan()``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import anyio

from ._asgi_scope import ASGISend, Receive, Scope, _request

if TYPE_CHECKING:
    from ikisocket_core.protocol import Server

    from .asgi import _Driver

__all__: list[str] = []


class _Waiter:
    """One polling request waiting for the engine's answer."""

    __slots__ = ("answer_", "done", "node", "transport")

    def __init__(self, node: Server) -> None:
        self.node = node
        self.answer_: Any = None
        self.done = anyio.Event()
        self.transport: Any = None

    def answer(self, answer: Any) -> None:
        self.answer_ = answer
        self.done.set()

    def held(self, transport: Any) -> None:
        self.transport = transport


async def _body(receive: Receive, limit: int) -> bytes | None:
    """The request body, or ``None`` past ``limit`` (the rest is not read)."""
    body = bytearray()
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return bytes(body)  # the client left: whatever came
        body += message.get("body", b"")
        if len(body) > limit:
            return None
        if not message.get("more_body", False):
            return bytes(body)


async def serve_polling(
    driver: _Driver, scope: Scope, path: str, receive: Receive, send: ASGISend
) -> None:
    """Serve one HTTP request of the long-polling transport.

    Args:
        driver: The hub's engine driver.
        scope: The ``http`` scope.
        path: Its path below the mount point (the Socket.IO path).
        receive: The ASGI receive callable.
        send: The ASGI send callable.
    """
    server = driver.install()
    sio = driver.hub._sio
    assert sio is not None
    body = await _body(receive, sio.max_payload)
    now = driver.stamp()
    waiter = _Waiter(server)
    method = str(scope.get("method", "GET"))
    waits = server.serve_poll(_request(scope, path), method, body, waiter, now=now)
    driver.drain()
    driver.rearm()  # the service may have an earlier deadline now (the session's ping)
    if waits and waiter.answer_ is None:
        async with anyio.create_task_group() as tg:

            async def watch() -> None:
                while (await receive())["type"] != "http.disconnect":
                    pass
                transport = waiter.transport
                if transport is not None:
                    transport.gone(waiter)  # the client left: its session ends
                    driver.drain()
                waiter.done.set()

            tg.start_soon(watch)
            await waiter.done.wait()
            tg.cancel_scope.cancel()
    answer = waiter.answer_
    if answer is None:
        return  # the client left before its answer
    headers = [(b"content-length", str(len(answer.body)).encode("ascii"))]
    headers += [(k.encode("latin-1"), v.encode("latin-1")) for k, v in answer.headers]
    await send({"type": "http.response.start", "status": answer.status, "headers": headers})
    await send({"type": "http.response.body", "body": answer.body})
