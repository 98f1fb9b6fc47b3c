"""A Socket.IO node with the Redis backplane, run as a process by ``test_redis_socketio``.

``python sio_redis_node.py PORT REDIS_URL [asyncio|trio]``: serves Socket.IO at
``/socket.io/`` with a ``RedisBackplane`` (``redis_support``'s anyio node), and
prints ``listening on PORT``; ``uvicorn sio_redis_node:asgi_node`` serves the same
node as an ASGI app, with ``IKISOCKET_TEST_REDIS`` set to the URL.
Clients drive it with events: ``join`` (a room), ``room`` (a named event to a
room), ``all`` (a named event to everyone), ``dm`` (a named event to UUIDs),
``who`` (the connections this node knows of, on every node), ``ask`` (an ack
asked of one UUID, on any node: the answer is this event's ack), ``ask_room``
(acks asked of a room's members on every node) and ``late`` (how many answers
came too late).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

import anyio
from redis_support import _asgi_node, _serve_anyio_node

from ikisocket_core import AckTimeout, EventPayload, Hub


def shown(answer: Any) -> Any:
    """An ack's outcome as JSON: the answer's arguments, or the error's name."""
    if isinstance(answer, AckTimeout):
        return "timeout"
    if isinstance(answer, Exception):
        return type(answer).__name__
    if isinstance(answer, tuple):
        return list(answer)
    return {uuid: shown(one) for uuid, one in answer.items()}


async def asked(start: Callable[[Callable[[Any], None]], None]) -> Any:
    """Start asking with a callback, and wait (in the listener) for what it gets."""
    done = anyio.Event()
    box: list[Any] = []

    def answered(answer: Any) -> None:
        box.append(answer)
        done.set()

    start(answered)
    await done.wait()
    return shown(box[0])


def make_hub() -> Hub:
    """The node's hub: Socket.IO mounted, its commands as event listeners."""
    hub = Hub()
    hub.socketio()

    @hub.on("join")
    def join(ep: EventPayload) -> str:
        ep.kws.join(ep.args[0])
        return ep.kws.uuid

    @hub.on("room")
    def room(ep: EventPayload) -> None:
        name, text = ep.args
        hub.to(name).emit_event("said", text, {"room": name})

    @hub.on("all")
    def everyone(ep: EventPayload) -> None:
        hub.emit_event("news", ep.args[0], b"\x00\xff")

    @hub.on("dm")
    def direct(ep: EventPayload) -> None:
        to, text = ep.args
        hub.emit_event("dm", text, to=to)

    @hub.on("ask")
    async def ask(ep: EventPayload) -> Any:
        uuid, timeout = ep.args
        return await asked(
            lambda cb: hub.emit_with_ack(uuid, "question", "ready?", callback=cb, timeout=timeout)
        )

    @hub.on("ask_room")
    async def ask_room(ep: EventPayload) -> Any:
        room, timeout = ep.args
        return await asked(
            lambda cb: hub.emit_with_acks(
                "question", "ready?", callback=cb, timeout=timeout, to=room
            )
        )

    @hub.on("late")
    def late(ep: EventPayload) -> int:
        return hub.late_acks

    @hub.on("who")
    def who(ep: EventPayload) -> list[str]:
        return sorted(hub.all_connections)

    return hub


def __getattr__(name: str) -> Any:
    """``asgi_node``: made when an ASGI server asks for it, not when the script runs."""
    if name == "asgi_node":
        return _asgi_node(os.environ["IKISOCKET_TEST_REDIS"], make_hub)
    raise AttributeError(name)


if __name__ == "__main__":
    kind: Any = sys.argv[3] if len(sys.argv) > 3 else "asyncio"
    anyio.run(_serve_anyio_node, int(sys.argv[1]), sys.argv[2], make_hub, backend=kind)
