"""The smallest ASGI deployment: a hub served by any ASGI server.

Run it with any of (from the repository root):

    uvicorn --app-dir examples/asgi echo_asgi:app --port 8000
    hypercorn --worker-class trio --bind 127.0.0.1:8000 examples/asgi/echo_asgi:app
    granian --interface asgi --port 8000 --working-dir examples/asgi echo_asgi:app
    daphne -p 8000 echo_asgi:app          # with examples/asgi on PYTHONPATH

then connect to ws://127.0.0.1:8000/echo: every message comes back, text as
text and binary as binary.
"""

from __future__ import annotations

from ikisocket_adapters.asgi import asgi_app
from ikisocket_core import EVENT_MESSAGE, EventPayload, Hub, Websocket

hub = Hub(idle_timeout=300)  # runs on the lifespan's background task


@hub.websocket("/echo")
def on_open(kws: Websocket) -> None:
    kws.emit("welcome")


@hub.on(EVENT_MESSAGE)
def echo(ep: EventPayload) -> None:
    ep.kws.emit(ep.data, ep.kind)


app = asgi_app(hub)
