"""The Redis backplane: one application served by several processes.

Each process federates its hub (see :meth:`ikisocket_core.Hub.federate`) and
runs a :class:`RedisBackplane` beside its server. The backplane publishes the
hub's relays (broadcasts, room emits, room and hub-wide fires, emits to
connections on other nodes, and which connections opened or ended) on one Redis pub/sub
channel and applies the other nodes' relays to its hub::

    backplane = RedisBackplane(hub, "redis://127.0.0.1:6379/0")
    async with anyio.create_task_group() as tg:
        await tg.start(backplane.run)
        ...  # serve the hub with the asyncio or anyio adapter

Every node keeps a key ``<channel>:node:<id>`` alive in Redis (it expires
``node_ttl`` seconds after the node stops refreshing it); a node whose key
expired is forgotten by the others. When Redis goes away the backplane
reconnects with backoff (0.1 s doubling to 2 s), keeps what it has to
publish in a bounded queue meanwhile, and announces itself again.

Delivery is at most once: what is published while a node is disconnected
does not reach it. ``redis.asyncio`` needs asyncio, so the backplane runs on
asyncio (plain, or anyio on asyncio), not on trio.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import logging
import uuid as _uuid
from collections import deque
from typing import Any

import anyio
from anyio.abc import TaskStatus
from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.asyncio.connection import parse_url
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from ikisocket_core import (
    HelloRelay,
    Hub,
    LocalProtocolError,
    MessageKind,
    PresenceRelay,
    Relay,
)

__all__ = ["DEFAULT_URL", "RedisBackplane", "decode_relay", "encode_relay"]

logger = logging.getLogger("ikisocket")

#: Where the backplane connects by default.
DEFAULT_URL = "redis://127.0.0.1:6379/0"

_FIRST_DELAY = 0.1
_MAX_DELAY = 2.0
_BATCH = 512


def encode_relay(relay: Relay) -> bytes:
    """Serialise a relay as compact JSON: its ``op`` tag and fields (the data as base64).

    Fields at their default are left out, so each message carries only what
    its kind of relay says.

    Args:
        relay: The relay.

    Returns:
        The message to publish.
    """
    doc: dict[str, Any] = {"op": relay.op}
    for field in dataclasses.fields(relay):
        value = getattr(relay, field.name)
        if value is None or value == field.default:
            continue
        if isinstance(value, bytes):
            value = base64.b64encode(value).decode("ascii")
        elif isinstance(value, MessageKind):
            value = int(value)
        elif isinstance(value, tuple):
            value = list(value)
        doc[field.name] = value
    return json.dumps(doc, separators=(",", ":")).encode("utf-8")


def _field(name: str, value: Any) -> Any:
    """One field of a decoded relay, checked and converted back from JSON."""
    if name == "data":
        return base64.b64decode(value, validate=True)
    if name == "kind":
        if value.__class__ is not int:
            raise ValueError("kind is 1 or 2")
        return MessageKind(value)
    if name == "uuids":
        if not isinstance(value, list) or not all(isinstance(u, str) for u in value):
            raise ValueError("uuids is a list of strings")
        return tuple(value)
    if name in ("part", "parts"):
        if value.__class__ is not int:
            raise ValueError(f"{name} is an int")
        return value
    if not isinstance(value, str):  # node, room, event, exclude
        raise ValueError(f"{name} is a string")
    return value


def decode_relay(message: bytes | str) -> Relay:
    """Parse a message made by :func:`encode_relay`.

    Args:
        message: The published message.

    Returns:
        The relay, of the class its ``op`` tag names.

    Raises:
        ValueError: It is not a relay.
    """
    try:
        doc = json.loads(message)
        cls = Relay.for_op(doc["op"])
        fields = {
            field.name: _field(field.name, doc[field.name])
            for field in dataclasses.fields(cls)
            if field.name in doc
        }
        return cls(**fields)
    except (KeyError, TypeError, AttributeError, ValueError, LocalProtocolError) as exc:
        raise ValueError(f"not a relay: {exc}") from None


class RedisBackplane:
    """Carries a hub's relays to the other nodes through Redis pub/sub, and theirs to it.

    Creating it federates the hub (with ``node_id``, or the id the hub
    already has, or a random one). Run it with :meth:`run` beside the server,
    on asyncio.

    Args:
        hub: The application's hub.
        url: The Redis URL (``redis://``, ``rediss://`` or ``unix://``).
        channel: The pub/sub channel every node of the application uses;
            heartbeat keys are ``<channel>:node:<id>``.
        heartbeat: Seconds between refreshes of this node's key (and checks
            of the other nodes' keys).
        node_ttl: Seconds after which a node that stopped refreshing its key
            is forgotten by the others.
        max_pending: How many relays are kept while Redis is unreachable;
            beyond that the oldest are dropped (counted in ``stats``).
        node_id: This node's id.

    Raises:
        ValueError: A setting is out of range, or the URL is not a Redis URL.

    Attributes:
        node_id: This node's id.
        connected: Whether it is connected and subscribed right now.
        stats: Counters: ``published``, ``received``, ``dropped`` (relays
            lost), ``malformed`` (messages on the channel that were not
            relays), ``connects``, ``forgotten`` (nodes whose key expired).
    """

    def __init__(
        self,
        hub: Hub,
        url: str = DEFAULT_URL,
        *,
        channel: str = "ikisocket",
        heartbeat: float = 2.0,
        node_ttl: float = 6.0,
        max_pending: int = 10_000,
        node_id: str | None = None,
    ) -> None:
        if heartbeat <= 0:
            raise ValueError("heartbeat must be positive")
        if node_ttl <= heartbeat:
            raise ValueError("node_ttl must be longer than heartbeat")
        if max_pending < 1:
            raise ValueError("max_pending must be at least 1")
        parse_url(url)  # a malformed URL is a ValueError now, not in the reconnect loop
        self.hub = hub
        self.url = url
        self.channel = channel
        self.heartbeat = heartbeat
        self.node_ttl = node_ttl
        self.max_pending = max_pending
        self.node_id = node_id or hub.node_id or _uuid.uuid4().hex
        hub.federate(self.node_id)
        self.connected = False
        self.stats = dict.fromkeys(
            ("published", "received", "dropped", "malformed", "connects", "forgotten"), 0
        )
        self._pending: deque[Relay] = deque()
        self._wakeup: anyio.Event | None = None
        self._more: anyio.Event | None = None
        self._failure: BaseException | None = None
        self._has_started = False

    def __repr__(self) -> str:
        state = "connected" if self.connected else "disconnected"
        return f"<RedisBackplane node {self.node_id} {state} {self.url}>"

    def node_key(self, node_id: str) -> str:
        """The heartbeat key of a node.

        Args:
            node_id: The node's id.

        Returns:
            The Redis key.
        """
        return f"{self.channel}:node:{node_id}"

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Connect, carry relays both ways, and reconnect whenever Redis goes away.

        Runs until cancelled. ``task_status.started()`` is called after the
        first connection attempt, whether it succeeded or not (the server
        need not wait for Redis). When cancelled it publishes what is still
        queued (e.g. the ``absent`` relays of clients the server just closed)
        and deletes its heartbeat key, bounded by one second.

        Args:
            task_status: For ``TaskGroup.start``.
        """
        self._wakeup = anyio.Event()
        self._more = anyio.Event()
        self.hub.set_relay_wakeup(self._relay_queued)
        self._collect()
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._collect_forever)
                await self._connect_forever(task_status)
        except anyio.get_cancelled_exc_class():
            with anyio.CancelScope(shield=True), anyio.move_on_after(1.0):
                await self._farewell()
            raise
        finally:
            self.hub.set_relay_wakeup(None)
            self.connected = False

    # -- internals -----------------------------------------------------------------------

    def _relay_queued(self) -> None:
        if self._wakeup is not None:
            self._wakeup.set()

    async def _collect_forever(self) -> None:
        while True:
            assert self._wakeup is not None
            await self._wakeup.wait()
            self._wakeup = anyio.Event()
            self._collect()

    def _collect(self) -> None:
        relays = self.hub.drain_relays()
        if not relays:
            return
        pending = self._pending
        for relay in relays:
            if len(pending) >= self.max_pending:
                pending.popleft()
                self.stats["dropped"] += 1
            pending.append(relay)
        assert self._more is not None
        self._more.set()

    async def _connect_forever(self, task_status: TaskStatus[None]) -> None:
        delay = _FIRST_DELAY
        while True:
            client = self._client()
            try:
                await self._session(client, task_status)
            except Exception as exc:
                if self.connected:
                    logger.warning("redis backplane lost %s: %s", self.url, exc)
                elif delay == _FIRST_DELAY:  # once per outage, not at every attempt
                    logger.warning("redis backplane cannot reach %s: %s", self.url, exc)
                else:
                    logger.debug("redis backplane cannot reach %s: %s", self.url, exc)
            finally:
                was_connected = self.connected
                self.connected = False
                with anyio.CancelScope(shield=True), anyio.move_on_after(1.0):
                    await client.aclose()
            if was_connected:
                delay = _FIRST_DELAY
            self._started(task_status)
            await anyio.sleep(delay)
            delay = min(delay * 2, _MAX_DELAY)

    def _started(self, task_status: TaskStatus[None]) -> None:
        if not self._has_started:
            self._has_started = True
            task_status.started()

    async def _session(self, client: Redis, task_status: TaskStatus[None]) -> None:
        pubsub = client.pubsub()
        try:
            await self._beat(client)
            await pubsub.subscribe(self.channel)
            # What this hub knows of the others may be stale (it missed what they published
            # while it was away): forget it, and announce this node; the others answer
            # ``hello`` with their connections.
            for node in self.hub.remote_nodes:
                self.hub.forget_node(node)
            hello = HelloRelay(node=self.node_id)
            present = PresenceRelay(node=self.node_id, uuids=self.hub.connections)
            await client.publish(self.channel, encode_relay(hello))
            await client.publish(self.channel, encode_relay(present))
            self.connected = True
            self.stats["connects"] += 1
            logger.info("redis backplane: node %s connected to %s", self.node_id, self.url)
            self._started(task_status)
            self._failure = None
            async with anyio.create_task_group() as tg:
                scope = tg.cancel_scope
                tg.start_soon(self._guard, self._read, pubsub, scope)
                tg.start_soon(self._guard, self._write, client, scope)
                tg.start_soon(self._guard, self._heartbeat, client, scope)
            if self._failure is not None:
                raise self._failure
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(1.0):
                await pubsub.aclose()  # type: ignore[no-untyped-call]

    async def _guard(self, fn: Any, arg: Any, scope: anyio.CancelScope) -> None:
        try:
            await fn(arg)
        except Exception as exc:
            if self._failure is None:
                self._failure = exc
            scope.cancel()

    async def _read(self, pubsub: PubSub) -> None:
        while True:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
            if message is None or message.get("type") != "message":
                continue
            try:
                relay = decode_relay(message["data"])
            except ValueError as exc:
                self.stats["malformed"] += 1
                logger.warning("redis backplane: ignoring a message on %s: %s", self.channel, exc)
                continue
            if relay.node == self.node_id:
                continue
            self.stats["received"] += 1
            self.hub.receive_relay(relay)

    async def _write(self, client: Redis) -> None:
        while True:
            assert self._more is not None
            await self._more.wait()
            self._more = anyio.Event()
            await self._publish_pending(client)

    async def _publish_pending(self, client: Redis) -> None:
        pending = self._pending
        while pending:
            batch = [pending.popleft() for _ in range(min(len(pending), _BATCH))]
            try:
                async with client.pipeline(transaction=False) as pipe:
                    for relay in batch:
                        pipe.publish(self.channel, encode_relay(relay))
                    await pipe.execute()
            except BaseException:
                self.stats["dropped"] += len(batch)  # at most once: not sent again
                raise
            self.stats["published"] += len(batch)

    async def _beat(self, client: Redis) -> None:
        await client.set(self.node_key(self.node_id), b"1", px=int(self.node_ttl * 1000))

    async def _heartbeat(self, client: Redis) -> None:
        while True:
            await anyio.sleep(self.heartbeat)
            await self._beat(client)
            nodes = self.hub.remote_nodes
            if not nodes:
                continue
            alive = await client.mget([self.node_key(n) for n in nodes])
            for node, value in zip(nodes, alive, strict=True):
                if value is None:
                    logger.info("redis backplane: node %s is gone", node)
                    self.stats["forgotten"] += 1
                    self.hub.forget_node(node)

    async def _farewell(self) -> None:
        # On its own connection: the session may have been cut anywhere, or never connected.
        self._collect()
        client = self._client()
        try:
            await self._publish_pending(client)
            await client.delete(self.node_key(self.node_id))
        except Exception as exc:
            logger.warning("redis backplane: could not say goodbye on %s: %s", self.url, exc)
        finally:
            await client.aclose()

    def _client(self) -> Redis:
        return Redis.from_url(
            self.url,
            retry=Retry(NoBackoff(), 0),
            socket_connect_timeout=2.0,
            socket_timeout=self.node_ttl,
        )
