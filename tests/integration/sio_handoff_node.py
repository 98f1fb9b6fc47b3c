"""A Socket.IO node with recovery and the Redis backplane in Streams mode, run as a process.

``python sio_handoff_node.py PORT REDIS_URL NODE_ID``: serves Socket.IO at
``/socket.io/`` (recovery on) with a ``RedisBackplane(mode="streams")`` and
prints ``listening on PORT``. ``test_redis_socketio_recovery`` runs two: a
client dropped on one comes back to the other. Clients drive it with events:
``remember`` (join a room, keep an attribute), ``tick-please`` (a named event
to the room), ``drop-me`` (the server drops the caller's transport) and
``state`` (what this node knows of the caller, and its own id).
"""

from __future__ import annotations

import sys
from typing import Any

import anyio
from redis_support import HEARTBEAT, NODE_TTL, until

from ikisocket_adapters.anyio import serve
from ikisocket_adapters.redis import RedisBackplane
from ikisocket_core import EventPayload, Hub, Recovery


def make_hub(node_id: str) -> Hub:
    """The node's hub: Socket.IO with recovery, its commands as event listeners."""
    hub = Hub()
    sio = hub.socketio(recovery=Recovery(max_disconnection_duration=30, claim_timeout=5))

    @hub.on("remember")
    def remember(ep: EventPayload) -> str:
        room, user = ep.args
        ep.kws.join(room)
        ep.kws.set_attribute("user", user)
        return "kept"

    @hub.on("tick-please")
    def tick(ep: EventPayload) -> str:
        hub.to("lobby").emit_event("tick", ep.args[0])
        return node_id

    @hub.on("drop-me")
    def drop(ep: EventPayload) -> None:
        sio.close_transport(ep.kws)
        hub.to("lobby").emit_event("tick", "a0")  # missed: kept for the client

    @hub.on("state")
    def state(ep: EventPayload) -> dict[str, Any]:
        kws = ep.kws
        return {
            "node": node_id,
            "recovered": kws.recovered,
            "rooms": sorted(kws.rooms),
            "user": kws.get_attribute("user"),
        }

    return hub


async def main(port: int, url: str, node_id: str) -> None:
    hub = make_hub(node_id)
    async with anyio.create_task_group() as tg:
        backplane = RedisBackplane(
            hub, url, mode="streams", heartbeat=HEARTBEAT, node_ttl=NODE_TTL, node_id=node_id
        )
        await tg.start(backplane.run)
        await until(lambda: backplane.connected)
        await tg.start(lambda task_status: serve(hub, "127.0.0.1", port, task_status=task_status))
        print(f"node {node_id}: listening on {port}", flush=True)


if __name__ == "__main__":
    anyio.run(main, int(sys.argv[1]), sys.argv[2], sys.argv[3])
