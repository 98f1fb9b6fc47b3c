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
from test_socketio_clients import node, run_node

from ikisocket_adapters.redis import decode_relay, encode_relay
from ikisocket_core import ClaimRelay, HandoffRelay

pytestmark = redis_support.pytestmark

__all__ = ["node", "redis_server"]  # the fixtures, imported for pytest

NODE = str(HERE / "sio_handoff_node.py")
assert (HERE.parent / "e2e" / "socketio" / "handoff.mjs").is_file()


def test_claims_and_handoffs_survive_the_wire() -> None:
    relays = [
        ClaimRelay(node="b", request="r", pid="p"),
        ClaimRelay(node="b", request="r", pid="p", namespace="/chat", offset="12"),
        HandoffRelay(node="a", to="b", request="r"),
        HandoffRelay(node="a", to="b", request="r", data=b'{"uuid":"u"}'),
    ]
    for relay in relays:
        assert decode_relay(encode_relay(relay)) == relay


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
    from_a = ["a1", "a0", "a2", "a3", "a4", "a5", "a9"]  # a0: sent by A as it dropped it
    from_b = ["b1", "b2", "b3", "b4", "b9"]
    assert sorted(heard) == sorted(from_a + from_b)  # each once
    assert [t for t in heard if t in from_a] == from_a  # each node's in order
    assert [t for t in heard if t in from_b] == from_b
