"""Wrap an existing ASGI application: the hub takes its routes, the rest goes to the app.

    uvicorn --app-dir examples/asgi wrap_app:app --port 8000

``ws://127.0.0.1:8000/ws/alice`` is the hub's; every other request, and the
lifespan, reach the wrapped application (here a small Starlette app).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse

from ikisocket_adapters.asgi import asgi_app
from ikisocket_core import Hub, Websocket

hub = Hub()
state = {"started": False}


@hub.websocket("/ws/:id")
def on_open(kws: Websocket) -> None:
    kws.emit(f"Hello user: {kws.params['id']} with UUID: {kws.uuid}")


async def status(request: Request) -> JSONResponse:
    return JSONResponse({"started": state["started"], "connections": len(hub)})


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    state["started"] = True  # the wrapper relays the server's lifespan to this app
    yield
    state["started"] = False


existing = Starlette(lifespan=lifespan)
existing.add_route("/status", status)

app = asgi_app(hub, fallback=existing)
