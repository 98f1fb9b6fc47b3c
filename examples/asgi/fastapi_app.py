"""The hub mounted in a FastAPI app; an HTTP endpoint pushes to the WebSocket clients.

    uvicorn --app-dir examples/asgi fastapi_app:app --port 8000

``ws://127.0.0.1:8000/realtime/chat/alice`` connects as ``alice`` (the hub's
routes are relative to the mount point); ``POST /announce`` with a text body
broadcasts it to everyone connected; ``GET /health`` says how many there are.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request

from ikisocket_adapters.asgi import asgi_app
from ikisocket_core import EVENT_MESSAGE, EventPayload, Hub, Websocket

hub = Hub(idle_timeout=600)


@hub.websocket("/chat/{name}")
def on_open(kws: Websocket) -> None:
    kws.set_attribute("name", kws.params["name"])
    kws.broadcast(f"{kws.params['name']} joined")


@hub.on(EVENT_MESSAGE)
def say(ep: EventPayload) -> None:
    ep.kws.broadcast(f"{ep.kws.get_attribute('name')}: {ep.text}", except_self=False)


realtime = asgi_app(hub)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    async with realtime.lifespan():
        yield


app = FastAPI(lifespan=lifespan)
app.mount("/realtime", realtime)


@app.get("/health")
async def health() -> dict[str, int]:
    return {"connections": len(hub)}


@app.post("/announce")
async def announce(request: Request) -> dict[str, int]:
    text = (await request.body()).decode()
    # An ``async def`` endpoint runs on the event loop, like the hub: call it directly.
    # (A plain ``def`` endpoint runs in a worker thread: use anyio.from_thread.run_sync.)
    hub.broadcast(f"announcement: {text}")
    return {"delivered_to": len(hub)}
