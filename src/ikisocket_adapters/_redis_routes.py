"""The Redis backplane's clients and channels: one Redis, or a Cluster with sharded channels.

On a single Redis (``redis://``, ``rediss://``, ``unix://``) every relay goes
out with ``PUBLISH`` on the application's one channel. On a Redis Cluster
(``redis+cluster://``, ``rediss+cluster://``) relays go out with ``SPUBLISH``
on sharded channels, which Redis places on the shard that owns the channel's
hash slot, so the work spreads over the shards:

- ``<channel>``: what every node needs (hello, presence, absence, broadcasts,
  hub-wide fires), and anything whose destination is unknown;
- ``<channel>:to:<node>``: direct messages to the connections of one node,
  and the acks asked of them and their answers (only that node subscribes to it);
- ``<channel>:room:<n>`` for ``n`` below :data:`ROOM_SHARDS`: room emits and
  room fires, spread by a hash of the room's name.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote, urlsplit

import coredis
from coredis.retry import NoRetryPolicy

from ikisocket_core import (
    AckAnswerRelay,
    AckRequestRelay,
    AckTargetsRelay,
    EmitRelay,
    FireRelay,
    Relay,
    RoomRelay,
)

__all__: list[str] = []

#: How many sharded channels carry room relays on a Cluster.
ROOM_SHARDS = 16
#: The schemes of a Redis Cluster URL, and the plain scheme each stands for.
CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}


#: The client of one Redis, or of a Redis Cluster.
Client = coredis.Redis[bytes] | coredis.RedisCluster[bytes]


def connect(url: str, *, cluster: bool, timeout: float) -> Client:
    """A client for a plain Redis URL (see :func:`split_url`), which the caller enters.

    It does not retry (the backplane reconnects by itself), and waits at most
    ``timeout`` seconds for an answer.
    """
    options: dict[str, Any] = {
        "connect_timeout": 2.0,
        "stream_timeout": timeout,
        "retry_policy": NoRetryPolicy(),
    }
    if cluster:
        # Not ``RedisCluster.from_url``: coredis 6.9 warns there (it passes a ``Node``).
        where = urlsplit(url)
        return coredis.RedisCluster(
            host=where.hostname,
            port=where.port or 6379,
            username=unquote(where.username) if where.username else None,
            password=unquote(where.password) if where.password else None,
            ssl=where.scheme == "rediss",
            **options,
        )
    return coredis.Redis.from_url(url, **options)


def split_url(url: str) -> tuple[str, bool]:
    """The URL coredis understands, and whether it names a Redis Cluster."""
    scheme = urlsplit(url).scheme
    plain = CLUSTER_SCHEMES.get(scheme)
    if plain is None:
        return url, False
    return plain + url[len(scheme) :], True


class Routes:
    """The channels of one node: what it subscribes to, and where each relay goes."""

    def __init__(self, channel: str, node_id: str, *, sharded: bool) -> None:
        self.channel = channel
        self.sharded = sharded
        self.inbox = self.node_channel(node_id)

    def node_channel(self, node_id: str) -> str:
        """The sharded channel of direct messages to one node's connections."""
        return f"{self.channel}:to:{node_id}"

    def room_channel(self, room: str) -> str:
        """The sharded channel of a room's relays."""
        return f"{self.channel}:room:{zlib.crc32(room.encode()) % ROOM_SHARDS}"

    def subscriptions(self) -> list[str]:
        """The channels this node listens to."""
        return [self.channel, *self.probed()] if self.sharded else [self.channel]

    def probed(self) -> list[str]:
        """The sharded channels a node pings each heartbeat to know it still hears them.

        Its own channel and the room channels (maybe on other shards' connections);
        ``[]`` when not sharded (its heartbeat on the main channel is enough).
        """
        if not self.sharded:
            return []
        return [self.inbox, *(f"{self.channel}:room:{n}" for n in range(ROOM_SHARDS))]

    def route(self, relay: Relay, owner: Callable[[str], str | None]) -> list[tuple[str, Relay]]:
        """Where to publish a relay: one or more (channel, relay) pairs.

        ``owner`` names the node that has a connection (``None`` if unknown);
        an emit to connections of several nodes is split into one relay per
        node, and what is meant for an unknown node goes on the main channel.
        """
        if not self.sharded:
            return [(self.channel, relay)]
        if isinstance(relay, (AckRequestRelay, AckTargetsRelay, AckAnswerRelay)):
            # Addressed to one node (a request to a room or everyone: to every node).
            to = relay.to
            return [(self.channel if to is None else self.node_channel(to), relay)]
        room = relay.room if isinstance(relay, (RoomRelay, FireRelay)) else None
        if room is not None:
            return [(self.room_channel(room), relay)]
        if not isinstance(relay, EmitRelay):
            return [(self.channel, relay)]
        by_node: dict[str | None, list[str]] = {}
        for uuid in relay.uuids:
            by_node.setdefault(owner(uuid), []).append(uuid)
        if len(by_node) == 1:
            node = next(iter(by_node))
            return [(self.channel if node is None else self.node_channel(node), relay)]
        return [
            (
                self.channel if node is None else self.node_channel(node),
                EmitRelay(node=relay.node, uuids=tuple(uuids), data=relay.data, kind=relay.kind),
            )
            for node, uuids in by_node.items()
        ]
