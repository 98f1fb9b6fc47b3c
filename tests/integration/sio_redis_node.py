"""A Socket.IO node with the Redis backplane, run as a process by ``test_redis_socketio``.

``python sio_redis_node.py PORT REDIS_URL [asyncio|trio]``: serves Socket.IO at
``/socket.io/`` with a :class:`RedisBackplane`, and prints ``listening on PORT``.
Clients drive it with events: ``join`` (a room), ``room`` (a named event to a
room), ``all`` (a named event to everyone), ``dm`` (a named event to UUIDs),
``who`` (the connections this node knows of, on every node).
"""

from __future__ import annotations

import sys
from typing import Any

import anyio
from redis_support import HEARTBEAT, NODE_TTL, until

from ikisocket_adapters.anyio import serve
from ikisocket_adapters.redis import RedisBackplane
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


async def main(port: int, url: str) -> None:
    hub = make_hub()
    async with anyio.create_task_group() as tg:
        backplane = RedisBackplane(hub, url, heartbeat=HEARTBEAT, node_ttl=NODE_TTL)
        await tg.start(backplane.run)
        await until(lambda: backplane.connected)
        await tg.start(lambda task_status: serve(hub, "127.0.0.1", port, task_status=task_status))
        print(f"node: listening on {port}", flush=True)


if __name__ == "__main__":
    kind: Any = sys.argv[3] if len(sys.argv) > 3 else "asyncio"
    anyio.run(main, int(sys.argv[1]), sys.argv[2], backend=kind)
