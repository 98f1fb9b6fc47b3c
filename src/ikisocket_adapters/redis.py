"""The Redis backplane: one application served by several processes, on every adapter.

Each process federates its hub (see :meth:`ikisocket_core.Hub.federate`) and
runs a :class:`RedisBackplane` beside its server. The backplane publishes the
hub's relays (broadcasts, room emits, room and hub-wide fires, emits to
connections on other nodes, and which connections opened or ended) on one Redis
pub/sub channel and applies the other nodes' relays to its hub::

    backplane = RedisBackplane(hub, "redis://127.0.0.1:6379/0")
    async with anyio.create_task_group() as tg:
        await tg.start(backplane.run)
        ...  # serve the hub with any adapter

It is written on anyio with the coredis client, so the same code runs on
asyncio (also with uvloop), on trio, and under any ASGI server.

Every ``heartbeat`` seconds a node publishes its full membership (a presence
snapshot, which is also its heartbeat); the others replace what they knew of
it, and forget a node they have not heard from for ``node_ttl`` seconds (its
connections are gone and their UUIDs free again). The node also hears its own
heartbeat: a node that stops hearing itself is deaf (its subscription died
silently) and reconnects. When Redis goes away the backplane reconnects with
backoff (0.1 s doubling to 2 s), keeps what it has to publish in a bounded
queue meanwhile, and announces itself again.

Delivery is at most once: what is published while a node is disconnected
does not reach it.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import logging
import sys
import uuid as _uuid
from collections import deque
from typing import Any, Literal
from urllib.parse import urlsplit

import anyio
import coredis
from anyio.abc import TaskStatus
from coredis.retry import NoRetryPolicy

from ikisocket_core import (
    HelloRelay,
    Hub,
    LocalProtocolError,
    MessageKind,
    PresenceRelay,
    Relay,
    default_hub,
)

if sys.version_info < (3, 11):  # pragma: no cover (the backport anyio depends on)
    from exceptiongroup import BaseExceptionGroup

__all__ = ["DEFAULT_URL", "RedisBackplane", "decode_relay", "encode_relay"]

logger = logging.getLogger("ikisocket")

#: Where the backplane connects by default.
DEFAULT_URL = "redis://127.0.0.1:6379/0"

_FIRST_DELAY = 0.1
_MAX_DELAY = 2.0
_BATCH = 512
_SCHEMES = ("redis", "rediss", "unix")
_COUNTERS = (
    "published",
    "received",
    "applied",
    "dropped",
    "malformed",
    "connects",
    "reconnects",
    "forgotten",
    "deaf",
)


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


def _check_url(url: str) -> None:
    """Refuse a URL that is not a Redis URL (now, not in the reconnect loop)."""
    scheme = urlsplit(url).scheme
    if scheme not in _SCHEMES:
        raise ValueError(f"a Redis URL starts with redis://, rediss:// or unix:// (not {url!r})")
    try:
        coredis.ConnectionPool.from_url(url)
    except Exception as exc:  # coredis raises what its URL parsing raises
        raise ValueError(f"not a usable Redis URL: {exc}") from None


class _Deaf(Exception):
    """This node stopped hearing its own heartbeat: its subscription is dead."""


class RedisBackplane:
    """Carries a hub's relays to the other nodes through Redis pub/sub, and theirs to it.

    Creating it federates the hub (with ``node_id``, or the id the hub
    already has, or a random one), with ``node_ttl``, ``heartbeat`` (as the
    presence interval) and ``max_pending`` (as ``max_relays``). Run it with
    :meth:`run` beside the server, on any anyio backend: asyncio (plain or
    uvloop, e.g. the asyncio adapter or an ASGI server) or trio.

    ``RedisBackplane(url)`` (the URL first, no hub) serves the default hub
    of the module-level functions (``ikisocket_core.on`` ...).

    Args:
        hub: The application's hub, or the Redis URL (then the default hub is served).
        url: The Redis URL (``redis://``, ``rediss://`` or ``unix://``).
        mode: ``"pubsub"``: at most once, lowest latency (the only mode so far).
        channel: The pub/sub channel every node of the application uses.
        heartbeat: Seconds between this node's presence snapshots (its
            heartbeat); also how often it checks the others' TTLs.
        node_ttl: Seconds after which the others forget a node they have not
            heard from (and after which a node that does not hear its own
            heartbeat reconnects).
        max_pending: How many relays are kept while Redis is unreachable (and
            in the hub's queue); beyond that the oldest are dropped (counted).
        node_id: This node's id.

    Raises:
        ValueError: A setting is out of range, or the URL is not a Redis URL.

    Attributes:
        hub: The hub it serves.
        node_id: This node's id.
        connected: Whether it is connected and subscribed right now.
        stats: Counters: ``published``, ``received`` (relays from other
            nodes), ``applied`` (of those, given to the hub), ``dropped``
            (relays lost: queue overflow here or in the hub, or a failed
            publish), ``malformed`` (messages on the channel that were not
            relays), ``connects``, ``reconnects`` (connects after the first),
            ``forgotten`` (nodes whose TTL passed), ``deaf`` (reconnects because
            this node stopped hearing itself).
    """

    def __init__(
        self,
        hub: Hub | str | None = None,
        url: str | None = None,
        *,
        mode: Literal["pubsub"] = "pubsub",
        channel: str = "ikisocket",
        heartbeat: float = 2.0,
        node_ttl: float = 6.0,
        max_pending: int = 10_000,
        node_id: str | None = None,
    ) -> None:
        if isinstance(hub, str):
            if url is not None:
                raise ValueError(
                    "give the URL once: RedisBackplane(hub, url) or RedisBackplane(url)"
                )
            hub, url = None, hub
        if mode != "pubsub":
            raise ValueError(f"mode is 'pubsub' (not {mode!r})")
        if heartbeat <= 0:
            raise ValueError("heartbeat must be positive")
        if node_ttl <= heartbeat:
            raise ValueError("node_ttl must be longer than heartbeat")
        if max_pending < 1:
            raise ValueError("max_pending must be at least 1")
        url = DEFAULT_URL if url is None else url
        _check_url(url)
        self.hub = default_hub if hub is None else hub
        self.url = url
        self.mode = mode
        self.channel = channel
        self.heartbeat = heartbeat
        self.node_ttl = node_ttl
        self.max_pending = max_pending
        self.node_id = node_id or self.hub.node_id or _uuid.uuid4().hex
        self.hub.federate(
            self.node_id, node_ttl=node_ttl, presence_interval=heartbeat, max_relays=max_pending
        )
        self.connected = False
        self.stats = dict.fromkeys(_COUNTERS, 0)
        self._peers: dict[str, float] = {}
        self._heard_self: float | None = None
        self._hub_dropped = self.hub.dropped_relays
        self._pending: deque[Relay] = deque()
        self._wakeup: anyio.Event | None = None
        self._more: anyio.Event | None = None
        self._has_started = False

    def __repr__(self) -> str:
        state = "connected" if self.connected else "disconnected"
        return f"<RedisBackplane node {self.node_id} {state} {self.url}>"

    @property
    def peers(self) -> dict[str, float]:
        """Each other node this one heard from, and how many seconds ago (its last relay)."""
        now = anyio.current_time()
        return {node: now - heard for node, heard in self._peers.items()}

    def health(self) -> dict[str, Any]:
        """One snapshot of this node's health, for a liveness probe or a metrics endpoint.

        Must be called from inside the event loop that runs the backplane.

        Returns:
            ``node``, ``connected``, ``pending`` (relays waiting to be published),
            the counters of ``stats``, and ``peers`` (see :attr:`peers`).
        """
        return {
            "node": self.node_id,
            "connected": self.connected,
            "pending": len(self._pending),
            **self.stats,
            "peers": self.peers,
        }

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Connect, carry relays both ways, and reconnect whenever Redis goes away.

        Runs until cancelled. ``task_status.started()`` is called after the
        first connection attempt, whether it succeeded or not (the server
        need not wait for Redis). When cancelled it publishes what is still
        queued (e.g. the ``absent`` relays of clients the server just closed),
        bounded by one second.

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
                tg.start_soon(self._tick_forever)
                await self._connect_forever(task_status)
        except anyio.get_cancelled_exc_class():
            with anyio.CancelScope(shield=True), anyio.move_on_after(1.0):
                await self._farewell()
            raise
        finally:
            self.hub.set_relay_wakeup(None)
            self.connected = False

    # -- the hub's side ------------------------------------------------------------------

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
        hub = self.hub
        relays = hub.drain_relays()
        dropped = hub.dropped_relays
        self.stats["dropped"] += dropped - self._hub_dropped
        self._hub_dropped = dropped
        if not self.connected:
            # A snapshot made while Redis is away would be stale when it goes out; the
            # (re)connect publishes a fresh one.
            relays = [r for r in relays if not (isinstance(r, PresenceRelay) and r.parts)]
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

    async def _tick_forever(self) -> None:
        while True:
            now = anyio.current_time()
            for node in self.hub.tick_federation(now):
                logger.info(
                    "redis backplane: node %s is gone (silent for %g s)", node, self.node_ttl
                )
                self.stats["forgotten"] += 1
                self._peers.pop(node, None)
            await anyio.sleep(self.heartbeat / 2)

    def _receive(self, message: bytes | str) -> None:
        try:
            relay = decode_relay(message)
        except ValueError as exc:
            self.stats["malformed"] += 1
            logger.warning("redis backplane: ignoring a message on %s: %s", self.channel, exc)
            return
        now = anyio.current_time()
        if relay.node == self.node_id:
            if isinstance(relay, PresenceRelay) and relay.parts:
                self._heard_self = now  # our own heartbeat came back: we are not deaf
            return
        self.stats["received"] += 1
        self._peers[relay.node] = now
        self.hub.receive_relay(relay, now=now)
        self.stats["applied"] += 1

    # -- Redis' side ---------------------------------------------------------------------

    async def _connect_forever(self, task_status: TaskStatus[None]) -> None:
        delay = _FIRST_DELAY
        while True:
            try:
                await self._session(task_status)
            except Exception as exc:
                reason = _reason(exc)
                if self.connected:
                    logger.warning("redis backplane lost %s: %s", self.url, reason)
                elif delay == _FIRST_DELAY:  # once per outage, not at every attempt
                    logger.warning("redis backplane cannot reach %s: %s", self.url, reason)
                else:
                    logger.debug("redis backplane cannot reach %s: %s", self.url, reason)
            was_connected = self.connected
            self.connected = False
            if was_connected:
                delay = _FIRST_DELAY
            self._started(task_status)
            await anyio.sleep(delay)
            delay = min(delay * 2, _MAX_DELAY)

    def _started(self, task_status: TaskStatus[None]) -> None:
        if not self._has_started:
            self._has_started = True
            task_status.started()

    def _client(self) -> coredis.Redis[bytes]:
        return coredis.Redis.from_url(
            self.url,
            connect_timeout=2.0,
            stream_timeout=self.node_ttl,
            retry_policy=NoRetryPolicy(),
        )

    async def _session(self, task_status: TaskStatus[None]) -> None:
        async with (
            self._client() as client,
            client.pubsub(
                ignore_subscribe_messages=True,
                retry_policy=None,  # this loop reconnects, and announces the node again
                max_idle_seconds=max(1, round(self.heartbeat)),
            ) as pubsub,
        ):
            await pubsub.subscribe(self.channel)
            # Announce this node: the others answer ``hello`` with their snapshots, and
            # replace what they knew of this one with its own.
            hello = [HelloRelay(node=self.node_id), *self.hub.presence_relays()]
            await self._publish(client, hello)
            self.connected = True
            self._heard_self = anyio.current_time()
            self.stats["connects"] += 1
            if self.stats["connects"] > 1:
                self.stats["reconnects"] += 1
            logger.info("redis backplane: node %s connected to %s", self.node_id, self.url)
            self._started(task_status)
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._read, pubsub)
                tg.start_soon(self._write, client)
                tg.start_soon(self._probe)

    async def _read(self, pubsub: Any) -> None:
        while True:
            message = await pubsub.get_message(timeout=self.heartbeat)
            if message is not None and message.get("type") == "message":
                self._receive(message["data"])

    async def _write(self, client: coredis.Redis[bytes]) -> None:
        pending = self._pending
        while True:
            assert self._more is not None
            await self._more.wait()
            self._more = anyio.Event()
            while pending:
                batch = [pending.popleft() for _ in range(min(len(pending), _BATCH))]
                await self._publish(client, batch)

    async def _publish(self, client: coredis.Redis[bytes], relays: list[Relay]) -> None:
        try:
            async with client.pipeline(transaction=False) as pipe:
                for relay in relays:
                    pipe.publish(self.channel, encode_relay(relay))
        except BaseException:
            self.stats["dropped"] += len(relays)  # at most once: not sent again
            raise
        self.stats["published"] += len(relays)

    async def _probe(self) -> None:
        """The liveness probe: a node that stops hearing its own heartbeat reconnects."""
        while True:
            await anyio.sleep(self.heartbeat)
            heard = self._heard_self
            if heard is not None and anyio.current_time() - heard > self.node_ttl:
                self.stats["deaf"] += 1
                raise _Deaf(f"node {self.node_id} did not hear itself for {self.node_ttl:g} s")

    async def _farewell(self) -> None:
        # On its own connection: the session may have been cut anywhere, or never connected.
        self._collect()
        relays = list(self._pending)
        self._pending.clear()
        if not relays:
            return
        try:
            async with self._client() as client:
                await self._publish(client, relays)
        except Exception as exc:
            logger.warning("redis backplane: could not say goodbye on %s: %s", self.url, exc)


def _reason(exc: BaseException) -> str:
    """The first leaf of an exception group (anyio task groups wrap what failed)."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return f"{type(exc).__name__}: {exc}"
