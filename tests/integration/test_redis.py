"""The Redis backplane against a real ``redis-server``: several nodes, one application.

Each test starts its own ``redis-server`` on a free loopback port. Nodes are
asyncio servers with a :class:`RedisBackplane` each, in this process or in
subprocesses (the crash test, and ``ikisocket demo --redis``); clients are
``websockets`` clients over 127.0.0.1. This module is also the nodes' app:
``python tests/integration/test_redis.py PORT REDIS_URL`` serves ``make_hub()``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import coredis
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from ikisocket_adapters.anyio import serve
from ikisocket_adapters.asgi import asgi_app
from ikisocket_adapters.asyncio import WebSocketServer, start_server
from ikisocket_adapters.redis import RedisBackplane, Resync, decode_relay, encode_relay
from ikisocket_core import (
    BINARY,
    AbsenceRelay,
    BroadcastRelay,
    EmitRelay,
    EventPayload,
    FireRelay,
    HelloRelay,
    Hub,
    PresenceRelay,
    Relay,
    RoomRelay,
    Websocket,
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.anyio,
    # coredis 6.9 creates a connection's anyio memory streams before it connects and closes
    # them only after a successful connect: every failed attempt (Redis down, on purpose
    # here) leaves six of them to the garbage collector, which warns. Harmless; not ours.
    pytest.mark.filterwarnings("ignore:Unclosed <MemoryObject:ResourceWarning"),
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
]

#: No single wait takes longer than this many seconds.
LIMIT = 10.0
HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
#: Short timers so that a crashed node is forgotten quickly.
HEARTBEAT, NODE_TTL = 0.25, 1.0
#: A throwaway Redis: no snapshots, no append-only file.
SAVE_NOTHING = ("--save", "", "--appendonly", "no")


# -- the app every node serves -----------------------------------------------------------


def make_hub() -> Hub:
    """A hub whose clients drive it with JSON commands and get JSON replies."""
    hub = Hub()

    @hub.websocket("/ws/:id")
    def on_open(kws: Websocket) -> None:
        kws.set_attribute("id", kws.params["id"])
        kws.emit(json.dumps({"uuid": kws.uuid}))

    @hub.on("message")
    def on_message(ep: EventPayload) -> None:
        cmd: dict[str, Any] = json.loads(ep.data)
        op, data = cmd["op"], cmd.get("data", "")
        kws = ep.kws
        if op == "broadcast":
            kws.broadcast(data, except_self=bool(cmd.get("except_self")))
        elif op == "emit_to":
            kws.emit_to(cmd["to"], data)
        elif op == "join":
            kws.join(cmd["room"])
            kws.emit(json.dumps({"joined": cmd["room"]}))
        elif op == "room":
            kws.to(cmd["room"]).emit(data)
        elif op == "fire":
            hub.fire(cmd["event"], data)
        elif op == "who":
            kws.emit(json.dumps({"who": sorted(hub.all_connections)}))

    @hub.on("ring")
    def on_ring(ep: EventPayload) -> None:
        ep.kws.emit(f"rang {ep.kws.get_attribute('id')}: {ep.data.decode()}")

    @hub.on("error")
    def on_error(ep: EventPayload) -> None:
        if isinstance(ep.error, Resync):  # Streams mode lost relays: tell the client
            ep.kws.emit(json.dumps({"resync": ep.error.node, "missed": ep.error.missed}))

    return hub


hub = make_hub()


# -- redis-server ------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """A throwaway ``redis-server`` on a loopback port, which a test may kill and restart."""

    def __init__(self, binary: str) -> None:
        self.binary = binary
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", *SAVE_NOTHING],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + LIMIT
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.05)
        raise AssertionError("redis-server did not start")

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(LIMIT)
            self.process = None


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    binary = shutil.which("redis-server")
    if binary is None:
        if os.environ.get("CI") == "true":
            pytest.fail("redis-server is not on PATH (it is required in CI)")
        pytest.skip("redis-server is not on PATH")
    server = RedisServer(binary)
    server.start()
    try:
        yield server
    finally:
        server.kill()


# -- nodes and clients -------------------------------------------------------------------


@dataclass
class Node:
    hub: Hub
    server: WebSocketServer
    backplane: RedisBackplane

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.server.port}"


@asynccontextmanager
async def nodes(url: str, count: int = 2, **options: Any) -> AsyncIterator[list[Node]]:
    """``count`` in-process nodes on their own ports, connected and aware of each other."""
    async with anyio.create_task_group() as tg, AsyncExitStack() as stack:
        running: list[Node] = []
        for _ in range(count):
            node_hub = make_hub()
            backplane = RedisBackplane(
                node_hub, url, heartbeat=HEARTBEAT, node_ttl=NODE_TTL, **options
            )
            await tg.start(backplane.run)
            server = await start_server(node_hub, "127.0.0.1", 0)
            stack.push_async_callback(server.wait_closed)
            stack.callback(server.close)
            running.append(Node(node_hub, server, backplane))
        await until(lambda: all(n.backplane.connected for n in running))
        await until(lambda: all(len(n.hub.remote_nodes) >= count - 1 for n in running))
        yield running
        tg.cancel_scope.cancel()


async def until(condition: Any, limit: float = LIMIT) -> None:
    with anyio.fail_after(limit):
        while not condition():
            await anyio.sleep(0.02)


@asynccontextmanager
async def client(node_url: str, name: str) -> AsyncIterator[tuple[ClientConnection, str]]:
    async with connect(f"{node_url}/ws/{name}", open_timeout=LIMIT, close_timeout=2) as ws:
        hello = json.loads(await recv(ws))
        yield ws, str(hello["uuid"])


async def recv(ws: ClientConnection) -> str | bytes:
    with anyio.fail_after(LIMIT):
        return await ws.recv()


async def send(ws: ClientConnection, **cmd: Any) -> None:
    await ws.send(json.dumps(cmd))


async def nothing_more(*clients: ClientConnection) -> None:
    """Nothing else arrives (checked after a marker sent to all of them arrived)."""
    for ws in clients:
        with anyio.move_on_after(0.2):
            extra = await ws.recv()
            raise AssertionError(f"unexpected message {extra!r}")


# -- the wire format ---------------------------------------------------------------------


def test_a_relay_survives_the_wire() -> None:
    relays: list[Relay] = [
        HelloRelay(node="n"),
        PresenceRelay(node="n", uuids=("a", "b")),
        AbsenceRelay(node="n", uuids=("a",)),
        BroadcastRelay(node="n", data=b"all", exclude="u"),
        RoomRelay(node="n", room="r", data=b"\x00\xff", kind=BINARY, exclude="u"),
        FireRelay(node="n", event="e", data=b"d"),
        FireRelay(node="n", event="e", room="r", exclude="u"),
        EmitRelay(node="n", uuids=("a", "b"), data="é".encode()),
    ]
    for relay in relays:
        assert type(decode_relay(encode_relay(relay))) is type(relay)
        assert decode_relay(encode_relay(relay)) == relay
    # The wire format is the first release's (``op`` tag, defaults left out): mixed nodes agree.
    assert encode_relay(HelloRelay(node="n")) == b'{"op":"hello","node":"n"}'
    assert decode_relay(
        b'{"op":"room","node":"n","data":"AP8=","kind":2,"room":"r","exclude":"u"}'
    ) == RoomRelay(node="n", room="r", data=b"\x00\xff", kind=BINARY, exclude="u")
    for junk in (
        b"[]",
        b"{}",
        b'{"op":"shout","node":"n"}',
        b'{"op":"emit","node":"n","uuids":[1]}',
        b'{"op":"emit","node":"n","uuids":"ab"}',
        b'{"op":"emit","node":"n","kind":3}',
        b'{"op":"emit","node":"n","kind":true}',
        b'{"op":"hello","node":5}',
        b'{"op":"hello"}',
    ):
        with pytest.raises(ValueError, match="relay"):
            decode_relay(junk)
    with pytest.raises(ValueError, match="relay"):
        decode_relay(b'{"op":"broadcast","node":"n","data":"***"}')
    with pytest.raises(ValueError, match="room"):
        decode_relay(b'{"op":"room","node":"n","room":5}')


def test_the_backplane_checks_its_settings() -> None:
    with pytest.raises(ValueError, match="heartbeat"):
        RedisBackplane(Hub(), heartbeat=0)
    with pytest.raises(ValueError, match="node_ttl"):
        RedisBackplane(Hub(), heartbeat=2, node_ttl=1)
    with pytest.raises(ValueError, match="max_pending"):
        RedisBackplane(Hub(), max_pending=0)
    federated = Hub()
    federated.federate("mine")
    assert RedisBackplane(federated).node_id == "mine"
    for url in ("rediss://127.0.0.1:6380/0", "unix:///tmp/redis.sock?db=1"):
        assert RedisBackplane(Hub(), url).url == url
    for wrong in ("x://", "http://127.0.0.1:6379", "redis://127.0.0.1:notaport/0"):
        with pytest.raises(ValueError, match="Redis URL"):
            RedisBackplane(Hub(), wrong)
    with pytest.raises(ValueError, match="URL once"):
        RedisBackplane("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6380/0")
    # ``RedisBackplane(url)`` serves the default hub (checked in a fresh interpreter: it
    # federates that process-wide hub).
    code = (
        "import ikisocket_core as core\n"
        "from ikisocket_adapters.redis import RedisBackplane\n"
        "b = RedisBackplane('redis://127.0.0.1:6390/0', node_id='n1')\n"
        "assert b.hub is core.default_hub and core.default_hub.node_id == 'n1'\n"
        "assert b.url == 'redis://127.0.0.1:6390/0' and b.mode == 'pubsub'\n"
        "print('ok')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=LIMIT, check=False
    )
    assert done.stdout.strip() == "ok", done.stderr


# -- across nodes ------------------------------------------------------------------------


async def test_broadcast_emit_to_rooms_and_fire_cross_nodes(redis_server: RedisServer) -> None:
    async with (
        nodes(redis_server.url) as (a, b),
        client(a.url, "a1") as (a1, a1_uuid),
        client(b.url, "b1") as (b1, b1_uuid),
        client(b.url, "b2") as (b2, _),
    ):
        await until(lambda: {a1_uuid, b1_uuid} <= set(b.hub.all_connections))
        await until(lambda: b1_uuid in a.hub.all_connections)

        await send(a1, op="broadcast", data="to everyone")
        assert [await recv(ws) for ws in (a1, b1, b2)] == ["to everyone"] * 3

        await send(b1, op="broadcast", data="not me", except_self=True)
        assert [await recv(ws) for ws in (a1, b2)] == ["not me"] * 2

        await send(a1, op="emit_to", to=b1_uuid, data="just you")
        assert await recv(b1) == "just you"

        for ws in (a1, b1):
            await send(ws, op="join", room="lobby")
            assert json.loads(await recv(ws)) == {"joined": "lobby"}
        await send(b1, op="room", room="lobby", data="lobby news")
        assert await recv(a1) == "lobby news"

        await send(b2, op="fire", event="ring", data="now")
        got = {await recv(ws) for ws in (a1, b1, b2)}
        assert got == {"rang a1: now", "rang b1: now", "rang b2: now"}

        async with coredis.Redis.from_url(redis_server.url) as raw:  # not a relay: ignored
            await raw.publish(a.backplane.channel, b"junk")
        await until(lambda: a.backplane.stats["malformed"] == b.backplane.stats["malformed"] == 1)

        await send(a1, op="broadcast", data="marker")
        assert [await recv(ws) for ws in (a1, b1, b2)] == ["marker"] * 3
        await nothing_more(a1, b1, b2)
        assert a.backplane.stats["published"] > 0
        assert b.backplane.stats["received"] > 0


async def test_a_client_that_leaves_is_gone_from_the_other_node(redis_server: RedisServer) -> None:
    async with nodes(redis_server.url) as (a, b), client(a.url, "a1") as (a1, _):
        async with client(b.url, "b1") as (_, b1_uuid):
            await until(lambda: b1_uuid in a.hub.all_connections)
        await until(lambda: b1_uuid not in a.hub.all_connections)
        await send(a1, op="who")
        assert b1_uuid not in json.loads(await recv(a1))["who"]


async def test_nodes_reconnect_after_redis_restarts(redis_server: RedisServer) -> None:
    async with (
        nodes(redis_server.url) as (a, b),
        client(a.url, "a1") as (a1, _),
        client(b.url, "b1") as (b1, b1_uuid),
    ):
        await until(lambda: b1_uuid in a.hub.all_connections)
        redis_server.kill()
        await until(lambda: not a.backplane.connected and not b.backplane.connected)
        await send(a1, op="broadcast", data="while redis is down")
        assert await recv(a1) == "while redis is down"  # local delivery carries on
        redis_server.start()
        await until(lambda: a.backplane.connected and b.backplane.connected)
        assert a.backplane.stats["connects"] >= 2
        # Redis restarted empty; both nodes announced themselves again.
        await until(lambda: b1_uuid in a.hub.all_connections)
        await until(lambda: a.backplane.stats["published"] > 0)
        with anyio.fail_after(LIMIT):
            while True:  # the relay queued while Redis was down may or may not come first
                await send(a1, op="broadcast", data="after the restart")
                assert await recv(a1) == "after the restart"
                with anyio.move_on_after(0.5):
                    while (message := await b1.recv()) != "after the restart":
                        assert message == "while redis is down"
                    break
        await send(b1, op="emit_to", to=next(iter(a.hub.connections)), data="back")
        assert await recv(a1) == "back"


async def test_relays_wait_for_redis_and_the_oldest_are_dropped(
    redis_server: RedisServer,
) -> None:
    redis_server.kill()
    node_hub = make_hub()
    backplane = RedisBackplane(
        node_hub, redis_server.url, heartbeat=HEARTBEAT, node_ttl=NODE_TTL, max_pending=2
    )
    async with anyio.create_task_group() as tg:
        await tg.start(backplane.run)  # started although Redis is down
        assert not backplane.connected
        for n in range(3):
            node_hub.broadcast(f"queued {n}")
        await until(lambda: backplane.stats["dropped"] == 1)
        redis_server.start()
        async with (
            coredis.Redis.from_url(redis_server.url) as raw,
            raw.pubsub() as pubsub,
        ):
            await pubsub.subscribe(backplane.channel)
            await until(lambda: backplane.stats["published"] >= 4)  # hello, snapshot, 2 relays
            seen: list[bytes] = []
            with anyio.fail_after(LIMIT):
                while len(seen) < 4:
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1)
                    if message is not None:
                        assert isinstance(message["data"], bytes)
                        seen.append(message["data"])
        tg.cancel_scope.cancel()
    relays = [decode_relay(m) for m in seen]
    assert [r.op for r in relays] == ["hello", "present", "broadcast", "broadcast"]
    node = backplane.node_id
    assert relays[2:] == [
        BroadcastRelay(node=node, data=b"queued 1"),
        BroadcastRelay(node=node, data=b"queued 2"),
    ]


# -- nodes in other processes ------------------------------------------------------------


@contextmanager
def process(args: list[str], pattern: str = "listening on") -> Iterator[subprocess.Popen[str]]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(HERE)])}
    proc = subprocess.Popen(
        args, cwd=HERE, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + LIMIT
        for line in proc.stdout:
            if pattern in line:
                break
            assert time.monotonic() < deadline, "the node did not start"
        else:
            raise AssertionError(f"the node exited with {proc.wait()}")
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(LIMIT)
            except subprocess.TimeoutExpired:  # pragma: no cover
                proc.kill()
                proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


async def test_a_crashed_node_is_forgotten_after_its_ttl(redis_server: RedisServer) -> None:
    port = free_port()
    with process([sys.executable, str(Path(__file__)), str(port), redis_server.url]) as proc:
        async with (
            nodes(redis_server.url, count=1) as (a,),
            client(f"ws://127.0.0.1:{port}", "b1") as (_, b1_uuid),
        ):
            await until(lambda: b1_uuid in a.hub.all_connections)
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(LIMIT)
            await until(lambda: b1_uuid not in a.hub.all_connections)
            assert a.hub.remote_nodes == ()
            assert a.backplane.stats["forgotten"] == 1


async def test_a_node_stopped_with_sigterm_announces_its_clients_gone(
    redis_server: RedisServer,
) -> None:
    port = free_port()
    cli = [sys.executable, "-m", "ikisocket_adapters", "run", "test_redis:hub"]
    with process([*cli, "--port", str(port), "--redis", redis_server.url]) as proc:
        async with (
            coredis.Redis.from_url(redis_server.url) as raw,
            raw.pubsub() as pubsub,
        ):
            await pubsub.subscribe("ikisocket")
            async with client(f"ws://127.0.0.1:{port}", "b1") as (ws, b1_uuid):
                proc.send_signal(signal.SIGTERM)
                with pytest.raises(ConnectionClosed) as closed:
                    await recv(ws)
                assert closed.value.rcvd is not None
                assert closed.value.rcvd.code == 1001
            with anyio.fail_after(LIMIT):
                while True:
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1)
                    if message is not None:
                        assert isinstance(message["data"], bytes)
                        relay = decode_relay(message["data"])
                        if relay == AbsenceRelay(node=relay.node, uuids=(b1_uuid,)):
                            break
            await anyio.to_thread.run_sync(proc.wait, LIMIT)
            assert proc.returncode == 0
            assert await raw.exists([f"ikisocket:node:{relay.node}"]) == 0  # deleted on the way out


def test_a_malformed_redis_url_is_one_line() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "ikisocket_adapters", "run", "test_redis:hub", "--redis", "x://"],
        cwd=HERE,
        capture_output=True,
        text=True,
        timeout=LIMIT,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("ikisocket: error: --redis x://: ")
    assert len(result.stderr.strip().splitlines()) == 1


async def test_two_demos_share_one_chat(redis_server: RedisServer) -> None:
    ports = [free_port(), free_port()]
    cli = [sys.executable, "-m", "ikisocket_adapters", "demo", "--redis", redis_server.url]
    cli += ["--redis-mode", "streams"]  # the same on every node (pubsub: the SIGTERM test)
    with (
        process([*cli, "--port", str(ports[0]), "--uvloop"]),
        process([*cli, "--port", str(ports[1]), "--adapter", "trio"]),
    ):
        async with (
            connect(f"ws://127.0.0.1:{ports[0]}/ws/alice", open_timeout=LIMIT) as alice,
            connect(f"ws://127.0.0.1:{ports[1]}/ws/bob", open_timeout=LIMIT) as bob,
        ):
            for ws in (alice, bob):  # greeting and presence
                assert json.loads(await recv(ws))["event"] == "system"
                assert json.loads(await recv(ws))["event"] == "presence"
            # Alice's greeting may reach Bob through Redis before his own socket was open.
            with anyio.fail_after(LIMIT):
                while True:
                    message = {"from": "", "to": "", "event": "message", "data": "hi bob"}
                    await alice.send(json.dumps(message))
                    with anyio.move_on_after(0.5):
                        while True:
                            got = json.loads(await bob.recv())
                            if got["event"] == "message":
                                break
                        break
            assert (got["from"], got["data"]) == ("alice", "hi bob")


# -- a node in a subprocess --------------------------------------------------------------


async def _serve_node(port: int, url: str, mode: Any = "pubsub") -> None:
    node_hub = make_hub()
    async with anyio.create_task_group() as tg:
        backplane = RedisBackplane(node_hub, url, mode=mode, heartbeat=HEARTBEAT, node_ttl=NODE_TTL)
        await tg.start(backplane.run)
        await until(lambda: backplane.connected)
        async with await start_server(node_hub, "127.0.0.1", port):
            print(f"node: listening on {port} (asyncio)", flush=True)
            await anyio.sleep_forever()


async def _serve_anyio_node(port: int, url: str) -> None:
    """The same node on the anyio adapter, for the backend it runs on (trio too)."""
    node_hub = make_hub()
    async with anyio.create_task_group() as tg:
        backplane = RedisBackplane(node_hub, url, heartbeat=HEARTBEAT, node_ttl=NODE_TTL)
        await tg.start(backplane.run)
        await until(lambda: backplane.connected)
        await tg.start(
            lambda task_status: serve(node_hub, "127.0.0.1", port, task_status=task_status)
        )
        import sniffio  # noqa: PLC0415 (trio depends on it)

        print(f"node: listening on {port} ({sniffio.current_async_library()})", flush=True)


def _asgi_node(url: str) -> Any:
    """The same node as an ASGI app: its lifespan runs the backplane beside the hub's service.

    Any ASGI server serves it (``hypercorn --worker-class trio`` too); the tests
    start it as ``test_redis:asgi_node`` with ``IKISOCKET_TEST_REDIS`` set to the URL.
    """
    node_hub = make_hub()
    inner = asgi_app(node_hub)
    backplane = RedisBackplane(node_hub, url, heartbeat=HEARTBEAT, node_ttl=NODE_TTL)

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "lifespan":
            await inner(scope, receive, send)
            return
        assert (await receive())["type"] == "lifespan.startup"
        async with anyio.create_task_group() as tg:
            await tg.start(backplane.run)
            async with inner.lifespan():
                await send({"type": "lifespan.startup.complete"})
                assert (await receive())["type"] == "lifespan.shutdown"
            # The hub's clients are closed: now the backplane (their "absent" goes out).
            tg.cancel_scope.cancel()
        await send({"type": "lifespan.shutdown.complete"})

    return app


asgi_node = _asgi_node(os.environ.get("IKISOCKET_TEST_REDIS", "redis://127.0.0.1:1/0"))


if __name__ == "__main__":
    # ``PORT URL [asyncio|trio|anyio-asyncio [MODE]]``: the asyncio adapter, or the anyio one.
    which = sys.argv[3] if len(sys.argv) > 3 else "asyncio"
    if which == "asyncio":
        mode = sys.argv[4] if len(sys.argv) > 4 else "pubsub"
        anyio.run(_serve_node, int(sys.argv[1]), sys.argv[2], mode)
    else:
        backend = "trio" if which == "trio" else "asyncio"
        anyio.run(_serve_anyio_node, int(sys.argv[1]), sys.argv[2], backend=backend)
