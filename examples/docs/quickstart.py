"""A first ikisocket application: everyone in one room, every message to everyone.

Run it with ``python examples/docs/quickstart.py`` or, from this directory,
``ikisocket run quickstart:hub``; then connect to ``ws://127.0.0.1:8000/ws/alice``.
"""

from __future__ import annotations

import asyncio

from ikisocket_adapters.asyncio import serve
from ikisocket_core import EVENT_DISCONNECT, EVENT_MESSAGE, EventPayload, Hub, Websocket

hub = Hub()


@hub.websocket("/ws/:name")
def on_open(kws: Websocket) -> None:
    # The connection is already registered: it can emit and be emitted to.
    name = kws.params["name"]
    kws.set_attribute("name", name)
    kws.emit(f"welcome, {name}")
    kws.broadcast(f"{name} joined", except_self=True)


@hub.on(EVENT_MESSAGE)
def on_message(ep: EventPayload) -> None:
    name = ep.socket_attributes["name"]
    ep.kws.broadcast(f"{name}: {ep.text}", except_self=False)


@hub.on(EVENT_DISCONNECT)
def on_disconnect(ep: EventPayload) -> None:
    # The connection has left routing, so this broadcast does not reach it.
    hub.broadcast(f"{ep.socket_attributes['name']} left")


if __name__ == "__main__":
    asyncio.run(serve(hub, "127.0.0.1", 8000))
