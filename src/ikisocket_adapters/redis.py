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

With a Redis Cluster URL (``redis+cluster://host:port``, any node of the
cluster; ``rediss+cluster://`` with TLS) relays go out with ``SPUBLISH`` on
sharded channels, so the work spreads over the shards: room relays on one of
16 channels picked by the room's name, direct messages on a channel of the
node that has the connection (only that node subscribes to it), and the rest
(broadcasts, hub-wide fires, presence) on the application's channel. Streams
mode works on a Cluster too, on one stream (so one shard carries it).

Every ``heartbeat`` seconds a node publishes its full membership (a presence
snapshot, which is also its heartbeat); the others replace what they knew of
it, and forget a node they have not heard from for ``node_ttl`` seconds (its
connections are gone and their UUIDs free again). The node also hears its own
heartbeat (on a Cluster, also a ping it sends each heartbeat on its own channel
and each room channel, which other nodes ignore): a node that stops hearing
itself on one of them for ``node_ttl`` is deaf (that subscription died
silently) and reconnects. When Redis goes away the backplane reconnects with
backoff (0.1 s doubling to 2 s), keeps what it has to publish in a bounded
queue meanwhile, and announces itself again.

Two delivery modes:

- ``mode="pubsub"`` (the default): at most once, lowest latency. What is
  published while a node is disconnected does not reach it.
- ``mode="streams"``: every relay is ``XADD``ed to the stream
  ``<channel>:stream``, trimmed to about ``backlog`` entries, and each node
  reads from the last entry it applied, so a Redis pause, a network blip or a
  paused node loses nothing and delivers once, in order per publisher (each
  entry carries its publisher's sequence number: a relay published twice, after
  a publish whose answer was lost, is applied once). When relays were lost
  anyway (a node's gap is older than the backlog, or Redis restarted without
  persistence) the node fires a :class:`Resync` through every connection's
  ``error`` listeners instead of losing them quietly. Streams mode is ordered
  (every node reads every relay, its own too, in one order), so Socket.IO
  connection-state recovery works across nodes: a client dropped on one node
  may come back to another (see :doc:`/explanation/socketio-recovery`).
"""

from __future__ import annotations

import logging
import time
import uuid as _uuid
from collections import deque
from collections.abc import Callable
from typing import Any, Literal

import anyio
import coredis
from anyio.abc import TaskStatus
from coredis import PureToken

from ikisocket_core import (
    AbsenceRelay,
    HelloRelay,
    Hub,
    IkisocketError,
    PresenceRelay,
    Relay,
    default_hub,
)

from ._common import running_clock
from ._redis_routes import Client, Routes, connect
from ._redis_wire import (
    Deaf,
    check_url,
    decode_relay,
    encode_relay,
    first_failure,
    parse_relay,
    stream_id,
)

__all__ = ["DEFAULT_URL", "RedisBackplane", "Resync", "decode_relay", "encode_relay"]

logger = logging.getLogger("ikisocket")

#: Where the backplane connects by default.
DEFAULT_URL = "redis://127.0.0.1:6379/0"

_FIRST_DELAY = 0.1
_MAX_DELAY = 2.0
_BATCH = 512
_BEHIND = 1000
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
    "duplicates",
    "resyncs",
)


class Resync(IkisocketError):
    """Relays from another node were lost (Streams mode): what this node shows may be stale.

    Reported through the ``error`` listeners of every connection of the node
    that lost them (``ep.error``); the connections stay open. Resync what they
    show (reload the state from its source), or close them so that clients
    reconnect.

    Args:
        node: The node whose relays were lost.
        missed: How many of its relays were lost.
        cause: Why, for people.

    Attributes:
        node: The node whose relays were lost.
        missed: How many of its relays were lost.
        cause: Why, for people.
    """

    def __init__(self, node: str, missed: int, cause: str) -> None:
        super().__init__(f"lost {missed} relays of node {node}: {cause}")
        self.node = node
        self.missed = missed
        self.cause = cause


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
        url: The Redis URL (``redis://``, ``rediss://`` or ``unix://``), or a
            Redis Cluster's (``redis+cluster://`` or ``rediss+cluster://`` and
            the address of any of its nodes).
        mode: ``"pubsub"`` (at most once, lowest latency) or ``"streams"``
            (no loss while Redis keeps the stream; see the module's docs).
        channel: The pub/sub channel every node of the application uses.
        heartbeat: Seconds between this node's presence snapshots (its
            heartbeat); also how often it checks the others' TTLs.
        node_ttl: Seconds after which the others forget a node they have not
            heard from (and after which a node that does not hear its own
            heartbeat reconnects).
        max_pending: How many relays are kept while Redis is unreachable (and
            in the hub's queue); beyond that the oldest are dropped (counted).
        backlog: Streams mode: about how many entries the stream keeps
            (``XADD ... MAXLEN ~ backlog``); a node away for longer than the
            others need to publish that many gets a :class:`Resync`.
        node_id: This node's id.

    Raises:
        ValueError: A setting is out of range, or the URL is not a Redis URL.

    Attributes:
        hub: The hub it serves.
        node_id: This node's id.
        cluster: Whether the URL names a Redis Cluster.
        connected: Whether it is connected and subscribed right now.
        stats: Counters: ``published``, ``received`` (relays from other
            nodes), ``applied`` (of those, given to the hub), ``dropped``
            (relays lost: queue overflow here or in the hub, or a failed
            publish), ``malformed`` (messages on the channel that were not
            relays), ``connects``, ``reconnects`` (connects after the first),
            ``forgotten`` (nodes whose TTL passed), ``deaf`` (reconnects because
            this node stopped hearing itself), ``duplicates`` (Streams mode:
            relays read twice, applied once), ``resyncs`` (Streams mode:
            :class:`Resync` reports).
    """

    def __init__(
        self,
        hub: Hub | str | None = None,
        url: str | None = None,
        *,
        mode: Literal["pubsub", "streams"] = "pubsub",
        channel: str = "ikisocket",
        heartbeat: float = 2.0,
        node_ttl: float = 6.0,
        max_pending: int = 10_000,
        node_id: str | None = None,
        backlog: int = 10_000,
    ) -> None:
        if isinstance(hub, str):
            if url is not None:
                raise ValueError(
                    "give the URL once: RedisBackplane(hub, url) or RedisBackplane(url)"
                )
            hub, url = None, hub
        if mode not in ("pubsub", "streams"):
            raise ValueError(f"mode is 'pubsub' or 'streams' (not {mode!r})")
        if backlog < 1:
            raise ValueError("backlog must be at least 1")
        if heartbeat <= 0:
            raise ValueError("heartbeat must be positive")
        if node_ttl <= heartbeat:
            raise ValueError("node_ttl must be longer than heartbeat")
        if max_pending < 1:
            raise ValueError("max_pending must be at least 1")
        url = DEFAULT_URL if url is None else url
        self._url, self.cluster = check_url(url)
        self.hub = default_hub if hub is None else hub
        self.url = url
        self.mode = mode
        self.channel = channel
        self.heartbeat = heartbeat
        self.node_ttl = node_ttl
        self.max_pending = max_pending
        self.backlog = backlog
        self.stream = f"{channel}:stream"
        self.node_id = node_id or self.hub.node_id or _uuid.uuid4().hex
        self.hub.federate(
            self.node_id,
            node_ttl=node_ttl,
            presence_interval=heartbeat,
            max_relays=max_pending,
            ordered=mode == "streams",  # one stream, read in order: recovery across nodes
        )
        self._routes = Routes(channel, self.node_id, sharded=self.cluster and mode == "pubsub")
        self.connected = False
        self.stats = dict.fromkeys(_COUNTERS, 0)
        # How old the newest relay received was (seconds), and whether that is too old.
        self._lag = 0.0
        self._lagging = False
        self._behind: int | None = None
        self._peers: dict[str, float] = {}
        self._main = channel.encode()
        self._heard: dict[bytes, float] = {}  # when it last heard itself on each (see _probe)
        #: Read per relay received: the running loop's own clock once run() started (see
        #: running_clock: anyio.current_time looks the backend up per call).
        self._clock: Callable[[], float] = anyio.current_time
        self._hub_dropped = self.hub.dropped_relays
        # Relays to publish with their sequence numbers (the order this node queued them).
        self._pending: deque[tuple[int, Relay]] = deque()
        # The "absent" relays of a pub/sub batch cut short, for the farewell (_keep_absent).
        self._absent: list[tuple[int, Relay]] = []
        self._seq = 0
        # Streams mode: this run's incarnation (sequence numbers restart with a process),
        # the last entry applied, and the last sequence number seen of each publisher.
        self._epoch = _uuid.uuid4().hex[:12]
        self._last_id: bytes | str | None = None
        self._seen: dict[tuple[str, str], int] = {}
        self._wakeup: anyio.Event | None = None
        self._more: anyio.Event | None = None
        self._has_started = False

    def __repr__(self) -> str:
        state = "connected" if self.connected else "disconnected"
        return f"<RedisBackplane node {self.node_id} {state} {self.url}>"

    def node_key(self, node_id: str) -> str:
        """The heartbeat key of a node (kept for nodes of the first release, and for operators).

        Every node still refreshes ``<channel>:node:<id>`` each ``heartbeat``
        with a time to live of ``node_ttl``, and deletes it when it stops: nodes
        of the first release judge liveness by it, so old and new nodes mix
        during a rolling upgrade. New nodes judge liveness by heartbeats on the
        channel (see :meth:`~ikisocket_core.Hub.tick_federation`).

        Args:
            node_id: The node's id.

        Returns:
            The Redis key.
        """
        return f"{self.channel}:node:{node_id}"

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
            ``lag`` (seconds between the publishing and the receiving of the
            newest relay this node received, its own heartbeat included, by the
            wall clocks of the publisher, or of Redis in Streams mode, and of
            this node), ``behind`` (Streams mode: how many entries of the
            stream were still unread at the last heartbeat, counted up to 1,000;
            ``None`` in pub/sub mode), the counters of ``stats``, and ``peers``
            (see :attr:`peers`).
        """
        return {
            "node": self.node_id,
            "connected": self.connected,
            "pending": len(self._pending),
            "lag": self._lag,
            "behind": self._behind,
            **self.stats,
            "peers": self.peers,
        }

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Connect, carry relays both ways, and reconnect whenever Redis goes away.

        Runs until cancelled. ``task_status.started()`` is called after the
        first connection attempt, whether it succeeded or not (the server
        need not wait for Redis). When cancelled it publishes what is still
        queued (e.g. the ``absent`` relays of clients the server just closed),
        and the ``absent`` relays of a publish the stop cut short, bounded by
        one second.

        Args:
            task_status: For ``TaskGroup.start``.
        """
        self._wakeup = anyio.Event()
        self._more = anyio.Event()
        self._clock = running_clock()
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
            pending.append(self._numbered(relay))
        assert self._more is not None
        self._more.set()

    def _numbered(self, relay: Relay) -> tuple[int, Relay]:
        self._seq += 1
        return self._seq, relay

    async def _tick_forever(self) -> None:
        while True:
            now = anyio.current_time()
            for node in self.hub.tick_federation(now):
                logger.info(
                    "redis backplane: node %s is gone (silent for %g s)", node, self.node_ttl
                )
                self.stats["forgotten"] += 1
                self._peers.pop(node, None)
            self._watch_lag()
            await anyio.sleep(self.heartbeat / 2)

    def _watch_lag(self) -> None:
        """Log when relays arrive late (over ``node_ttl``), and when they are on time again."""
        lag, lagging = self._lag, self._lagging
        if not lagging and lag > self.node_ttl:
            self._lagging = True
            logger.warning(
                "redis backplane: node %s receives relays %.1f s after they were published",
                self.node_id,
                lag,
            )
        elif lagging and lag <= self.heartbeat:
            self._lagging = False
            logger.info("redis backplane: node %s is on time again (lag %.3f s)", self.node_id, lag)

    def _malformed(self, exc: Exception) -> None:
        self.stats["malformed"] += 1
        where = self.stream if self.mode == "streams" else self.channel
        logger.warning("redis backplane: ignoring a message on %s: %s", where, exc)

    def _receive_entry(self, fields: Any, sent: int) -> None:
        """A stream entry: drop what was applied already, report a gap, apply the rest."""
        try:
            node, epoch = fields[b"n"].decode(), fields[b"e"].decode()
            seq, message = int(fields[b"s"]), fields[b"r"]
        except (KeyError, ValueError, AttributeError, TypeError) as exc:
            self._malformed(ValueError(f"not a relay entry: {exc!r}"))
            return
        if node != self.node_id:
            last = self._seen.get((node, epoch))
            if last is not None and seq <= last:
                self.stats["duplicates"] += 1  # published again after a lost answer
                return
            self._seen[node, epoch] = seq
            if last is not None and seq > last + 1:
                # Trimmed from the stream before this node read them, dropped by a publisher
                # whose queue overflowed, or lost with a Redis restart: say so, once per gap.
                self._resync(node, seq - last - 1, "a gap in its sequence numbers")
        self._receive(message, sent)

    def _resync(self, node: str, missed: int, cause: str) -> None:
        self.stats["resyncs"] += 1
        logger.warning(
            "redis backplane: node %s lost %d relays of %s: %s", self.node_id, missed, node, cause
        )
        self.hub.receive_relay_loss(Resync(node, missed, cause))

    def _receive(
        self, message: bytes | str, sent: int | None = None, channel: bytes | None = None
    ) -> None:
        try:
            relay, stamp = parse_relay(message)
        except ValueError as exc:
            self._malformed(exc)
            return
        sent = stamp if sent is None else sent
        if sent is not None:
            self._lag = max(0.0, time.time() - sent / 1000)
        now = self._clock()
        if relay.node == self.node_id:
            if isinstance(relay, PresenceRelay) and relay.parts:
                self._heard[self._main] = now  # our own heartbeat came back: we are not deaf
            elif channel in self._heard:
                self._heard[channel] = now  # a channel we ping (on a Cluster) still hears us
            elif self.mode == "streams":
                self.hub.receive_echo(relay)  # its place in the order (see Hub.federate)
            return
        if isinstance(relay, HelloRelay) and channel not in (None, self._main):
            return  # another node's ping of a room channel: no hello (it would be answered)
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
                reason = first_failure(exc)
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

    def _client(self) -> Client:
        return connect(self._url, cluster=self.cluster, timeout=self.node_ttl)

    async def _session(self, task_status: TaskStatus[None]) -> None:
        if self.mode == "streams":
            async with self._client() as client:
                await self._position(client)
                await self._announce(client, task_status)
                async with anyio.create_task_group() as tg:
                    tg.start_soon(self._read_stream, client)
                    tg.start_soon(self._write, client)
                    tg.start_soon(self._probe, client)
            return
        async with self._client() as client, self._subscriber(client) as pubsub:
            await pubsub.subscribe(*self._routes.subscriptions())
            await self._announce(client, task_status)
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._read, pubsub)
                tg.start_soon(self._write, client)
                tg.start_soon(self._probe, client)

    def _subscriber(self, client: Client) -> Any:
        """Pub/sub on one Redis, sharded pub/sub on a Cluster."""
        options: dict[str, Any] = {
            "ignore_subscribe_messages": True,
            "retry_policy": None,  # this loop reconnects, and announces the node again
            "max_idle_seconds": max(1, round(self.heartbeat)),
        }
        if isinstance(client, coredis.RedisCluster):
            return client.sharded_pubsub(**options)
        return client.pubsub(**options)

    async def _announce(self, client: Client, task_status: TaskStatus[None]) -> None:
        # Announce this node: the others answer ``hello`` with their snapshots, and replace
        # what they knew of this one with its own.
        await self._beat(client)
        hello = [HelloRelay(node=self.node_id), *self.hub.presence_relays()]
        if self.mode == "streams":
            # After what waits: a publisher's sequence numbers go out in order.
            self._pending.extend(self._numbered(relay) for relay in hello)
            assert self._more is not None
            self._more.set()
        else:
            await self._publish(client, [self._numbered(relay) for relay in hello], again=False)
        self.connected = True
        self._absent = []  # the snapshot just published says who is here
        now = anyio.current_time()
        self._heard = {c.encode(): now for c in (self.channel, *self._routes.probed())}
        self.stats["connects"] += 1
        if self.stats["connects"] > 1:
            self.stats["reconnects"] += 1
        logger.info("redis backplane: node %s connected to %s", self.node_id, self.url)
        self._started(task_status)

    async def _position(self, client: Client) -> None:
        """Where to read the stream from: the last entry applied, unless the stream is new."""
        newest = await client.xrevrange(self.stream, "+", "-", count=1)
        top = newest[0].identifier if newest else None
        last = self._last_id
        if last is None:  # the first connection: what was published before is history
            self._last_id = top if top is not None else b"0-0"
        elif top is None or stream_id(top) < stream_id(last):
            # Redis lost the stream (a restart without persistence): read the new one whole;
            # publishers' sequence numbers tell whether relays were lost meanwhile.
            self._last_id = b"0-0"

    async def _read_stream(self, client: Client) -> None:
        block = max(1, int(self.heartbeat * 1000))
        while True:
            assert self._last_id is not None
            found = await client.xread({self.stream: self._last_id}, count=_BATCH, block=block)
            for entries in (found or {}).values():
                for entry in entries:
                    self._last_id = entry.identifier
                    self._receive_entry(entry.field_values, stream_id(entry.identifier)[0])

    async def _read(self, pubsub: Any) -> None:
        while True:
            message = await pubsub.get_message(timeout=self.heartbeat)
            if message is not None and message.get("type") == "message":
                self._receive(message["data"], None, message.get("channel"))

    async def _write(self, client: Client) -> None:
        pending = self._pending
        while True:
            assert self._more is not None
            await self._more.wait()
            self._more = anyio.Event()
            while pending:
                batch = [pending.popleft() for _ in range(min(len(pending), _BATCH))]
                try:
                    await self._publish(client, batch)
                except BaseException:
                    if self.mode == "pubsub":  # (streams mode queued the whole batch again)
                        self._keep_absent(batch)
                    raise

    def _keep_absent(self, batch: list[tuple[int, Relay]]) -> None:
        """A pub/sub publish was cut short: keep who left, for the farewell.

        Pub/sub relays go out at most once, so the batch is not sent again on
        this session. But a server stops its backplane right after closing its
        clients, so their ``absent`` relays are often in the batch the stop
        cuts short; lost, they would leave those clients known to the other
        nodes until this node's ``node_ttl`` ran out. An ``absent`` relay is
        idempotent: the farewell sends these again, before what is queued. A
        reconnect forgets them (its snapshot says who is here).
        """
        self._absent = [item for item in batch if isinstance(item[1], AbsenceRelay)]

    async def _publish(
        self, client: Client, batch: list[tuple[int, Relay]], *, again: bool = True
    ) -> None:
        streams = self.mode == "streams"
        routes, owner = self._routes, self.hub.node_of
        # The publish time, for the receivers' lag (the stream's entry ids carry their own).
        stamp = b',"t":%d}' % (time.time() * 1000)
        try:
            async with client.pipeline(transaction=False) as pipe:
                for seq, relay in batch:
                    if streams:
                        entry: dict[str, str | bytes | int] = {
                            "n": self.node_id,
                            "e": self._epoch,
                            "s": seq,
                            "r": encode_relay(relay),
                        }
                        pipe.xadd(
                            self.stream,
                            entry,
                            trim_strategy=PureToken.MAXLEN,
                            threshold=self.backlog,
                            trim_operator=PureToken.APPROXIMATELY,
                        )
                        continue
                    for channel, part in routes.route(relay, owner):
                        message = encode_relay(part)[:-1] + stamp
                        if routes.sharded:
                            pipe.spublish(channel, message)
                        else:
                            pipe.publish(channel, message)
        except BaseException:
            if streams and again:
                # Not lost: published again after the reconnect (readers drop a relay they
                # already applied, in case this batch did reach Redis).
                self._pending.extendleft(reversed(batch))
            else:
                self.stats["dropped"] += len(batch)  # at most once: not sent again
            raise
        self.stats["published"] += len(batch)

    async def _beat(self, client: Client) -> None:
        await client.set(self.node_key(self.node_id), b"1", px=int(self.node_ttl * 1000))

    async def _probe(self, client: Client) -> None:
        """The liveness probe: a node that stops hearing its own heartbeat reconnects."""
        while True:
            await anyio.sleep(self.heartbeat)
            await self._beat(client)
            last = self._last_id
            if last is not None:  # Streams mode: how far behind the stream's newest entry
                start = "(" + (last.decode("ascii") if isinstance(last, bytes) else last)
                self._behind = len(await client.xrange(self.stream, start, "+", count=_BEHIND))
            ping = encode_relay(HelloRelay(node=self.node_id))
            if pings := self._routes.probed():  # on a Cluster: its own and the room channels
                async with client.pipeline(transaction=False) as pipe:
                    for name in pings:
                        pipe.spublish(name, ping)
            channel, heard = min(self._heard.items(), key=lambda item: item[1])
            if anyio.current_time() - heard > self.node_ttl:
                self.stats["deaf"] += 1
                where = self.stream if self.mode == "streams" else channel.decode()
                raise Deaf(f"{self.node_id} did not hear itself on {where} for {self.node_ttl:g} s")

    async def _farewell(self) -> None:
        # On its own connection: the session may have been cut anywhere, or never connected.
        self._collect()
        batch = [*self._absent, *self._pending]
        self._absent = []
        self._pending.clear()
        try:
            async with self._client() as client:
                if batch:
                    await self._publish(client, batch, again=False)
                await client.delete([self.node_key(self.node_id)])
        except Exception as exc:
            logger.warning("redis backplane: could not say goodbye on %s: %s", self.url, exc)
