"""Socket.IO recovery across nodes: Redis Streams mode, two node processes, socket.io-client.

The client connects to node A, joins a room, keeps an attribute; node A drops
its transport while the client's reconnections point at node B. Control
clients on both nodes send ticks to the room meanwhile. The client must come
back on node B with ``socket.recovered`` true, the same id, room and
attribute, and every tick once, each node's in order.
"""

from __future__ import annotations

import sys

import redis_support
from redis_support import HERE, RedisServer, free_port, process, redis_server
from test_socketio_clients import NODE_DIR, node, run_node

pytestmark = redis_support.pytestmark

__all__ = ["node", "redis_server"]  # the fixtures, imported for pytest

NODE = str(HERE / "sio_handoff_node.py")
assert (NODE_DIR / "handoff.mjs").is_file()


def test_a_client_dropped_on_one_node_recovers_on_the_other(
    redis_server: RedisServer, node: str
) -> None:
    ports = free_port(), free_port()
    with (
        process([sys.executable, NODE, str(ports[0]), redis_server.url, "a"]),
        process([sys.executable, NODE, str(ports[1]), redis_server.url, "b"]),
    ):
        seen = run_node(node, ports[0], script="handoff.mjs", mode=f"http://127.0.0.1:{ports[1]}")
    heard = seen.pop("heard")
    assert seen == {
        "join": "kept",
        "disconnect": "transport close",
        "recovered": True,
        "sameId": True,
        "state": {"node": "b", "recovered": True, "rooms": ["lobby"], "user": "ann"},
    }
    assert sorted(heard) == sorted(
        ["a1", "a0", "a2", "a3", "a4", "a5", "a9"] + ["b1", "b2", "b3", "b4", "b9"]
    )
    assert [t for t in heard if t.startswith("a")] == ["a1", "a0", "a2", "a3", "a4", "a5", "a9"]
    assert [t for t in heard if t.startswith("b")] == ["b1", "b2", "b3", "b4", "b9"]
