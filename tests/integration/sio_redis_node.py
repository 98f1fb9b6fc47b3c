"""A Socket.IO node with the Redis backplane, run as a process by ``test_redis_socketio``.

``python sio_redis_node.py PORT REDIS_URL [asyncio|trio]``: serves Socket.IO at
``/socket.io/`` with a ``RedisBackplane`` (``redis_support``'s anyio node), and
prints ``listening on PORT``.
Clients drive it with events: ``join`` (a room), ``room`` (a named event to a
room), ``all`` (a named event to everyone), ``dm`` (a named event to UUIDs),
``who`` (the connections this node knows of, on every node).
"""

from __future__ import annotations

import sys
from typing import Any

import anyio
from redis_support import _serve_anyio_node

from ikisocket_core import EventPayload, Hub


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

    @hub.on("who")
    def who(ep: EventPayload) -> list[str]:
        return sorted(hub.all_connections)

    return hub


if __name__ == "__main__":
    kind: Any = sys.argv[3] if len(sys.argv) > 3 else "asyncio"
    anyio.run(_serve_anyio_node, int(sys.argv[1]), sys.argv[2], make_hub, backend=kind)
