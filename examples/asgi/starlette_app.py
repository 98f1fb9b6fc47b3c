"""The hub inside a Starlette app: its WebSocket route beside ordinary HTTP routes.

    uvicorn --app-dir examples/asgi starlette_app:app --port 8000

``GET /`` is a plain Starlette endpoint; ``ws://127.0.0.1:8000/ws/lobby`` joins
the room ``lobby``, where every message goes to the other members.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route, WebSocketRoute

from ikisocket_adapters.asgi import asgi_app
from ikisocket_core import EVENT_MESSAGE, EventPayload, Hub, Websocket

hub = Hub()


@hub.websocket("/ws/{room}")  # the same path as the WebSocketRoute below
def on_open(kws: Websocket) -> None:
    kws.join(kws.params["room"])
    kws.emit(f"joined {kws.params['room']}")


@hub.on(EVENT_MESSAGE)
def relay(ep: EventPayload) -> None:
    for room in ep.kws.rooms:
        ep.kws.to(room).emit(ep.data, ep.kind)


realtime = asgi_app(hub)


async def homepage(request: Request) -> PlainTextResponse:
    return PlainTextResponse(f"{len(hub)} connected, rooms: {sorted(hub.rooms)}")


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    # Starlette does not pass its lifespan to routes: host the hub's service here
    # (timers, emits from background tasks; on exit every client gets 1001).
    async with realtime.lifespan():
        yield


app = Starlette(
    routes=[
        Route("/", homepage),
        WebSocketRoute("/ws/{room}", realtime),
    ],
    lifespan=lifespan,
)
