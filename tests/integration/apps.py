"""The scenario application every server and adapter is tested with.

It is the seed's chat example (``/ws/:id``) plus a few probes the scenarios
need. Servers import it by name, with this directory on ``PYTHONPATH``:

* ``apps:hub``: the hub itself, for ikisocket's own adapters and the CLI;
* ``apps:asgi_app``: the hub as an ASGI app (uvicorn, hypercorn, daphne);
* ``apps:starlette_app``: the hub mounted at ``/rt`` in a Starlette app that
  also serves ``GET /health``;
* ``apps:close_policy_app``, ``apps:drop_policy_app``: separate hubs whose slow
  clients are closed (``backpressure="close"``) or miss messages (``"drop"``),
  with ``GET /stats`` answering the engine's counters as JSON;
* ``apps:idle_app``: a separate hub whose idle clients time out after 1 s;
* ``apps:limited_app``: a separate hub that takes two connections at most
  (``max_connections=2``), with ``GET /stats``.

Routes (each connection's ``user_id`` attribute names it for observers):

==========================  ===========================================================
``/ws/:id``                 the seed's chat: welcome, newcomer broadcast, JSON messages
                            ``{"from", "to", "event", "data"}`` sent on to ``to``'s uuid
``/echo?id=``               echoes each message with its kind (text or binary)
``/rooms/:room?id=``        joins the room; each message goes to the other members
``/sleepy/:gate?id=``       an ``async def`` listener sleeps until the gate opens
``/gate/:gate?id=``         a message opens the gate
``/closing/:id``            says ``bye`` and closes from the server with 4001
``/private?id=``            needs header ``x-token: secret`` (401 without, 403 if wrong)
``/info/:name``             sends back what the request carried, as JSON
``/observe``                receives a JSON record of every connect/disconnect/close/
                            error/custom event of the other connections
==========================  ===========================================================
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio

from ikisocket_adapters.asgi import ASGIApp
from ikisocket_adapters.asgi import asgi_app as make_asgi_app
from ikisocket_core import (
    EVENT_CLOSE,
    EVENT_CONNECT,
    EVENT_DISCONNECT,
    EVENT_ERROR,
    EVENT_MESSAGE,
    ConnectionClosed,
    EventPayload,
    Hub,
    Reject,
    Request,
    UnknownConnection,
    Websocket,
)

__all__ = [
    "asgi_app",
    "close_policy_app",
    "drop_policy_app",
    "hub",
    "idle_app",
    "limited_app",
    "make_hub",
    "with_stats",
]

#: The custom event the chat's messages can fire.
CUSTOM_EVENT = "CUSTOM_EVENT"
#: How long an async listener waits for its gate before giving up.
GATE_TIMEOUT = 30.0


def make_hub(**options: Any) -> Hub:
    """Build the scenario hub.

    Args:
        **options: :class:`Hub` options.

    Returns:
        A new hub with every scenario route.
    """
    hub = Hub(subprotocols=("chat.v1",), **options)
    #: The seed's map: user id -> connection uuid.
    clients: dict[str, str] = {}
    gates: dict[str, anyio.Event] = {}

    def gate(name: str) -> anyio.Event:
        if name not in gates:
            gates[name] = anyio.Event()
        return gates[name]

    def observe(ep: EventPayload, **record: Any) -> None:
        if ep.socket_attributes.get("route") == "observe":
            return
        record = {"event": ep.name, "user": ep.socket_attributes.get("user_id"), **record}
        hub.to("observers").emit(json.dumps(record))

    def identify(kws: Websocket, route: str, user_id: str | None = None) -> None:
        kws.set_attribute("route", route)
        kws.set_attribute("user_id", user_id or kws.query.get("id", "anonymous"))

    # -- the seed's chat -----------------------------------------------------------------

    @hub.websocket("/ws/:id")
    def chat(kws: Websocket) -> None:
        user_id = kws.params["id"]
        clients[user_id] = kws.uuid
        identify(kws, "chat", user_id)
        kws.broadcast(f"New user connected: {user_id} and UUID: {kws.uuid}", except_self=True)
        kws.emit(f"Hello user: {user_id} with UUID: {kws.uuid}")

    @hub.on(EVENT_MESSAGE)
    def on_chat_message(ep: EventPayload) -> None:
        if ep.kws.get_attribute("route") != "chat":
            return
        try:
            message = ep.json()
        except ValueError:
            return
        if not isinstance(message, dict):
            return
        if message.get("event"):
            ep.kws.fire(str(message["event"]), str(message.get("data", "")))
        recipient = str(message.get("to", ""))
        try:
            ep.kws.emit_to(clients.get(recipient, ""), ep.data)
        except UnknownConnection:
            ep.kws.emit(f"No such user: {recipient}")

    @hub.on(CUSTOM_EVENT)
    def on_custom(ep: EventPayload) -> None:
        user_id = ep.socket_attributes.get("user_id")
        ep.kws.emit(f"Custom event - User: {user_id} - Data: {ep.text}")
        observe(ep, data=ep.text)

    def forget(ep: EventPayload) -> None:
        user_id = str(ep.socket_attributes.get("user_id"))
        if ep.socket_attributes.get("route") == "chat" and clients.get(user_id) == ep.socket_uuid:
            del clients[user_id]
        code = ep.error.code if isinstance(ep.error, ConnectionClosed) else None
        observe(ep, code=code)

    hub.on(EVENT_DISCONNECT, forget)
    hub.on(EVENT_CLOSE, forget)
    hub.on(EVENT_CONNECT, observe)
    hub.on(EVENT_ERROR, lambda ep: observe(ep, error=type(ep.error).__name__))

    # -- probes ----------------------------------------------------------------------------

    @hub.websocket("/echo")
    def echo(kws: Websocket) -> None:
        identify(kws, "echo")
        kws.on(EVENT_MESSAGE, lambda ep: ep.kws.emit(ep.data, ep.kind))

    @hub.websocket("/rooms/:room")
    def rooms(kws: Websocket) -> None:
        identify(kws, "rooms")
        room = kws.params["room"]
        kws.join(room)
        kws.on(EVENT_MESSAGE, lambda ep: ep.kws.to(room).emit(ep.data, ep.kind))
        kws.emit(f"joined {room}")

    sent = [0]  # messages sent on /order routes, numbered in the order the hub sent them

    @hub.websocket("/order/:room")
    def order(kws: Websocket) -> None:
        identify(kws, "order")
        room = kws.params["room"]
        kws.join(room)

        def numbered(ep: EventPayload) -> None:
            sent[0] += 1
            if ep.data == b"shout":
                hub.to(room).emit(f"{sent[0]} shout".encode())
            else:
                ep.kws.emit(f"{sent[0]} echo".encode())

        kws.on(EVENT_MESSAGE, numbered)

    @hub.websocket("/sleepy/:gate")
    def sleepy(kws: Websocket) -> None:
        identify(kws, "sleepy")
        name = kws.params["gate"]

        async def wait_for_gate(ep: EventPayload) -> None:
            with anyio.fail_after(GATE_TIMEOUT):
                await gate(name).wait()
            ep.kws.emit(f"woke: {ep.text}")

        kws.on(EVENT_MESSAGE, wait_for_gate)

    @hub.websocket("/gate/:gate")
    def opener(kws: Websocket) -> None:
        identify(kws, "gate")
        name = kws.params["gate"]

        def open_gate(ep: EventPayload) -> None:
            gate(name).set()
            ep.kws.emit(f"opened {name}")

        kws.on(EVENT_MESSAGE, open_gate)

    @hub.websocket("/closing/:id")
    def closing(kws: Websocket) -> None:
        identify(kws, "closing", kws.params["id"])
        kws.emit("bye")
        kws.close(4001, "server says bye")

    @hub.websocket("/private")
    def private(kws: Websocket) -> None:
        identify(kws, "private")
        kws.emit("welcome to the private room")

    @hub.before_upgrade
    def check_token(request: Request) -> bool | Reject:
        if request.path != "/private":
            return True
        token = request.headers.get("x-token")
        if token is None:
            return Reject(status=401, reason="token required")
        return token == "secret"

    @hub.websocket("/info/:name")
    def info(kws: Websocket) -> None:
        identify(kws, "info")
        kws.emit(
            json.dumps(
                {
                    "path": kws.request.path,
                    "params": kws.params,
                    "query": kws.query,
                    "cookies": kws.cookies,
                    "custom": kws.headers.get("x-custom"),
                    "subprotocol": kws.subprotocol,
                }
            )
        )

    @hub.websocket("/observe")
    def observer(kws: Websocket) -> None:
        identify(kws, "observe")
        kws.join("observers")
        kws.emit("observing")

    return hub


#: The hub, for ikisocket's own adapters (``ikisocket run apps:hub``).
hub = make_hub()
#: The hub as an ASGI app.
asgi_app = make_asgi_app(hub)


def _starlette_app() -> Any:
    # Imported here so that serving ``hub`` does not need Starlette installed.
    from starlette.applications import Starlette  # noqa: PLC0415
    from starlette.requests import Request as HTTPRequest  # noqa: PLC0415
    from starlette.responses import PlainTextResponse  # noqa: PLC0415
    from starlette.routing import Mount, Route  # noqa: PLC0415

    realtime = make_asgi_app(make_hub())

    async def health(request: HTTPRequest) -> PlainTextResponse:
        return PlainTextResponse(f"ok, {len(realtime.hub)} connected")

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with realtime.lifespan():
            yield

    return Starlette(
        routes=[Route("/health", health), Mount("/rt", app=realtime)], lifespan=lifespan
    )


def with_stats(hub: Hub, **options: Any) -> ASGIApp:
    """``hub`` as an ASGI app that also answers ``GET /stats`` with its engine's counters.

    Args:
        hub: The hub.
        **options: :func:`~ikisocket_adapters.asgi.asgi_app` options.

    Returns:
        The app.
    """

    async def stats(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        body = json.dumps(dataclasses.asdict(app.stats)).encode()
        headers = [(b"content-type", b"application/json")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    app = make_asgi_app(hub, fallback=stats, **options)
    return app


#: A hub whose slow clients are closed with 1013 (``GET /stats``: its counters).
close_policy_app = with_stats(make_hub(), backpressure="close", max_queue=256 * 1024)
#: A hub whose slow clients miss messages (``GET /stats``: its counters).
drop_policy_app = with_stats(make_hub(), backpressure="drop", max_queue=256 * 1024)
#: A hub whose idle clients are closed after 1 s.
idle_app = make_asgi_app(make_hub(idle_timeout=1.0))
#: A hub that takes two connections at most (``GET /stats``: its counters).
limited_app = with_stats(make_hub(), max_connections=2)

_lazy = {"starlette_app": _starlette_app}
_built: dict[str, Any] = {}


def __getattr__(name: str) -> Any:
    # Built on first use: a server process only builds the app it serves.
    if name not in _lazy:
        raise AttributeError(name)
    if name not in _built:
        _built[name] = _lazy[name]()
    return _built[name]
