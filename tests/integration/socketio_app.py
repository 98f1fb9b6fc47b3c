"""The Socket.IO application the real-client tests run: one hub, plain and Socket.IO clients."""

from __future__ import annotations

from typing import Any

import anyio

from ikisocket_core import BINARY, AckTimeout, ConnectRefused, EventPayload, Hub, Websocket


def make_hub() -> Hub:
    """A hub with Socket.IO at ``/socket.io/`` (namespaces ``/``, ``/admin``, ``/private``)."""
    hub = Hub()
    hub.websocket("/ws", lambda kws: None)
    sio = hub.socketio(namespaces=["/admin"], ping_interval=5, ping_timeout=5)

    @hub.on("echo")
    def echo(ep: EventPayload) -> tuple[Any, ...]:
        return ep.args

    @hub.on("slow")
    async def slow(ep: EventPayload) -> str:
        await anyio.sleep(0.01)  # any backend: the same app runs on asyncio and trio
        return "slow done"

    @hub.on("ask")
    def ask(ep: EventPayload) -> None:
        kws = ep.kws

        def answered(answer: Any) -> None:
            if isinstance(answer, AckTimeout):
                kws.emit_event("answer-was", "timeout")
            else:
                kws.emit_event("answer-was", *answer)

        kws.emit_event("question", ep.args[0], ack=answered, timeout=5)

    @hub.on("join")
    def join(ep: EventPayload) -> str:
        ep.kws.join(ep.args[0])
        return "joined"

    @hub.on("say")
    def say(ep: EventPayload) -> str:
        room, text = ep.args
        ep.kws.to(room).emit(text)
        return "said"

    @hub.on("news")
    def news(ep: EventPayload) -> str:
        room, item = ep.args
        ep.kws.to(room).emit_event("news", item)
        return "sent"

    @hub.on("blob-please")
    def blob(ep: EventPayload) -> None:
        ep.kws.emit_event("blob", b"\x00\xff", {"nested": [b"\x01"]})
        hub.broadcast(b"\x02\x03", BINARY)

    @hub.on("shout")
    def shout(ep: EventPayload) -> None:
        hub.broadcast(ep.args[0])

    @hub.on("kick-me")
    def kick(ep: EventPayload) -> None:
        ep.kws.close()

    @hub.on("whoami", namespace="/admin")
    def whoami(ep: EventPayload) -> tuple[str, bool]:
        return ep.namespace, ep.kws.uuid in hub.connections

    @sio.before_connect(namespace="/private")
    def private(kws: Websocket) -> None:
        if kws.auth.get("token") != "s3cret":
            raise ConnectRefused("bad token", {"hint": "ask an admin"})

    @hub.on("auth", namespace="/private")
    def auth(ep: EventPayload) -> dict[str, Any]:
        return ep.kws.auth

    return hub
