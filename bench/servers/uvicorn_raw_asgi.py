"""A hand-written ASGI WebSocket app on uvicorn: the floor for ``ikisocket/uvicorn``.

It does the least an ASGI app can: accept ``/ws``, then echo each text message to its
sender, or send it to every other connection, awaiting uvicorn's ``send`` for each.
It runs on the same uvicorn, with the same options (``_uvicorn.py``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from _common import PATH, parse_args
from _uvicorn import serve

Message = dict[str, Any]
Send = Callable[[Message], Awaitable[None]]
Receive = Callable[[], Awaitable[Message]]

CLIENTS: set[Send] = set()


async def lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def relay(text: str, sender: Send) -> None:
    """Send ``text`` to every connection but ``sender``; forget those that are gone."""
    out = {"type": "websocket.send", "text": text}
    for peer in tuple(CLIENTS):
        if peer is not sender:
            try:
                await peer(out)
            except Exception:  # closed under us: uvicorn raises
                CLIENTS.discard(peer)


def make_app(mode: str) -> Callable[[Message, Receive, Send], Awaitable[None]]:
    async def app(scope: Message, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await lifespan(receive, send)
            return
        if scope["type"] != "websocket" or scope["path"] != PATH:
            if scope["type"] == "http":
                await send({"type": "http.response.start", "status": 404, "headers": []})
                await send({"type": "http.response.body", "body": b""})
            else:
                await send({"type": "websocket.close", "code": 1008})
            return
        await receive()  # websocket.connect
        await send({"type": "websocket.accept"})
        if mode == "broadcast":
            CLIENTS.add(send)
        try:
            while True:
                message = await receive()
                if message["type"] != "websocket.receive":
                    return  # websocket.disconnect
                text = message.get("text")
                if text is None:
                    continue
                if mode == "echo":
                    await send({"type": "websocket.send", "text": text})
                else:
                    await relay(text, send)
        finally:
            CLIENTS.discard(send)

    return app


if __name__ == "__main__":
    args = parse_args()
    serve(make_app(args.mode), args.loop)
