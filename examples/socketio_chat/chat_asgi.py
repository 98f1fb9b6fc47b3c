"""The Socket.IO chat as an ASGI app: ``uvicorn chat_asgi:app --port 3000`` from this folder."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from chat_server import PAGE, hub

from ikisocket_adapters.asgi import asgi_app

Message = MutableMapping[str, Any]  # the ASGI spec's types


async def page(
    scope: Message,
    receive: Callable[[], Awaitable[Message]],
    send: Callable[[Message], Awaitable[None]],
) -> None:
    """Serve the chat page at ``/``; other HTTP paths get 404."""
    if scope["type"] == "lifespan":  # the hub's app hands its lifespan on: just agree
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    if scope["type"] != "http":  # a WebSocket on a path the hub does not serve
        await send({"type": "websocket.close", "code": 1008})
        return
    found = scope["path"] in ("/", "/index.html")
    body = PAGE.read_bytes() if found else b"not found"
    kind = b"text/html; charset=utf-8" if found else b"text/plain"
    await send(
        {
            "type": "http.response.start",
            "status": 200 if found else 404,
            "headers": [(b"content-type", kind), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


app = asgi_app(hub, fallback=page)  # Socket.IO at /socket.io/, the page for the rest
