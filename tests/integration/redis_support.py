"""What the Redis backplane's tests share: the app, ``redis-server``, nodes and clients.

Each test starts its own ``redis-server`` on a free loopback port (or a local
Redis Cluster, see :class:`RedisCluster`). Nodes are asyncio servers with a
:class:`RedisBackplane` each, in the test's process or in subprocesses; clients
are ``websockets`` clients over 127.0.0.1. This module is also the nodes' app:
``python tests/integration/redis_support.py PORT REDIS_URL [KIND [MODE]]``
serves ``make_hub()``, and ``redis_support:hub`` / ``redis_support:asgi_node``
are what ``ikisocket run`` and the ASGI servers load.

The test modules take the fixtures with ``from redis_support import redis_server``
and mark themselves with ``pytestmark = redis_support.pytestmark``.
"""

from __future__ import annotations

import gc
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AsyncExitStack, ExitStack, asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest
from websockets.asyncio.client import ClientConnection, connect

from ikisocket_adapters.anyio import serve
from ikisocket_adapters.asgi import asgi_app
from ikisocket_adapters.asyncio import WebSocketServer, start_server
from ikisocket_adapters.redis import RedisBackplane, Resync
from ikisocket_core import (
    EventPayload,
    Hub,
    UnknownConnection,
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
#: This module as a script: a node process.
NODE = str(Path(__file__).resolve())
ROOT = HERE.parents[1]
#: Short timers so that a crashed node is forgotten quickly.
HEARTBEAT, NODE_TTL = 0.25, 1.0
#: The node kinds started as processes: the anyio adapter on trio, the asyncio adapter.
KINDS = ("trio", "asyncio")
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


def wait_for_redis(port: int) -> None:
    """Wait until a ``redis-server`` answers ``PING`` on a loopback port."""
    deadline = time.monotonic() + LIMIT
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"redis-server did not start on port {port}")


def redis_binary(name: str) -> str:
    """The path of ``redis-server`` or ``redis-cli``: a test without it fails in CI, else skips."""
    binary = shutil.which(name)
    if binary is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{name} is not on PATH (it is required in CI)")
        pytest.skip(f"{name} is not on PATH")
    return binary


class RedisServer:
    """A throwaway ``redis-server`` on a loopback port, which a test may kill and restart.

    With ``directory``, it keeps its data there in an append-only file, so that
    a restart on the same port (:meth:`stop`, then :meth:`start`) finds it again.
    """

    def __init__(self, binary: str, directory: Path | None = None) -> None:
        self.binary = binary
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None
        self.directory = directory

    def start(self) -> None:
        keep: tuple[str, ...] = SAVE_NOTHING
        if self.directory is not None:
            keep = ("--dir", str(self.directory), "--save", "", "--appendonly", "yes")
        self.process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", *keep],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_redis(self.port)

    def stop(self) -> None:
        """Stop it as an operator would (SIGTERM: it writes what it keeps, then exits)."""
        if self.process is not None:
            self.process.terminate()
            self.process.wait(LIMIT)
            self.process = None

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(LIMIT)
            self.process = None


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer(redis_binary("redis-server"))
    server.start()
    try:
        yield server
    finally:
        server.kill()


def cluster_port() -> int:
    """A free loopback port whose cluster bus port (10,000 above it) is free too."""
    while True:
        port = free_port()
        if port < 55_000:
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port + 10_000))
                except OSError:
                    continue
            return port


class LocalCluster:
    """A Redis Cluster of ``size`` primaries (no replicas) on loopback ports, in a directory."""

    def __init__(self, server: str, cli: str, directory: Path, size: int = 3) -> None:
        self.server, self.cli, self.directory = server, cli, directory
        self.ports = [cluster_port() for _ in range(size)]
        self.url = f"redis+cluster://127.0.0.1:{self.ports[0]}"
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(self) -> None:
        for port in self.ports:
            args = [self.server, "--port", str(port), "--bind", "127.0.0.1", *SAVE_NOTHING]
            args += ["--dir", str(self.directory), "--cluster-enabled", "yes"]
            args += ["--cluster-config-file", f"nodes-{port}.conf"]
            args += ["--logfile", f"redis-{port}.log"]
            self.processes.append(
                subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            )
        for port in self.ports:
            try:
                wait_for_redis(port)
            except AssertionError:
                log = (self.directory / f"redis-{port}.log").read_text(errors="replace")
                raise AssertionError(f"redis-server did not start on {port}:\n{log}") from None
        addresses = [f"127.0.0.1:{port}" for port in self.ports]
        create = ["--cluster", "create", *addresses, "--cluster-replicas", "0", "--cluster-yes"]
        subprocess.run(
            [self.cli, *create],
            capture_output=True,
            timeout=3 * LIMIT,
            check=True,
        )
        deadline = time.monotonic() + LIMIT
        for port in self.ports:  # every node agrees that every slot is served
            while b"cluster_state:ok" not in self.redis_cli(port, "cluster", "info"):
                assert time.monotonic() < deadline, "the cluster did not come up"
                time.sleep(0.1)

    def redis_cli(self, port: int, *command: str) -> bytes:
        """Run one command on one node of the cluster; its raw answer."""
        done = subprocess.run(
            [self.cli, "-p", str(port), *command], capture_output=True, timeout=LIMIT, check=True
        )
        return done.stdout

    def stop(self) -> None:
        for proc in self.processes:
            proc.kill()
        for proc in self.processes:
            proc.wait(LIMIT)
        self.processes.clear()


@pytest.fixture
def redis_cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    cluster = LocalCluster(redis_binary("redis-server"), redis_binary("redis-cli"), tmp_path)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
        # coredis' cluster clients leave anyio memory streams to the garbage collector (see
        # ``pytestmark``): collect them now, inside this test's warning filters.
        gc.collect()


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


# -- nodes in other processes, and what their clients see


@contextmanager
def node_processes(url: str, kinds: tuple[str, ...] = KINDS) -> Iterator[dict[str, str]]:
    """One node process per kind; yields each kind's ``ws://`` URL."""
    with ExitStack() as stack:
        urls: dict[str, str] = {}
        for kind in kinds:
            port = free_port()
            args = [sys.executable, NODE, str(port), url, kind]
            stack.enter_context(process(args, f"listening on {port} ({kind})"))
            urls[kind] = f"ws://127.0.0.1:{port}"
        yield urls


async def who(ws: ClientConnection) -> set[str]:
    await send(ws, op="who")
    return set(json.loads(await recv(ws))["who"])


async def everyone_sees(clients: dict[str, tuple[ClientConnection, str]]) -> None:
    """Wait until every client's node lists every client (presence crossed every way)."""
    expected = {uuid for _, uuid in clients.values()}
    with anyio.fail_after(LIMIT):
        for ws, _ in clients.values():
            while await who(ws) != expected:
                await anyio.sleep(0.05)


async def one_application(clients: dict[str, tuple[ClientConnection, str]]) -> None:
    """What one client does reaches the others exactly once, whatever node each is on.

    ``clients`` maps a client's name (``"trio"``, ``"asyncio"`` and ``"anyio"``
    are required) to its socket and UUID, each on a node of that kind.
    """
    await everyone_sees(clients)
    sockets = {kind: ws for kind, (ws, _) in clients.items()}

    # Broadcasts: each client's reaches every client exactly once.
    for kind, ws in sockets.items():
        await send(ws, op="broadcast", data=f"from {kind}")
    expected = sorted(f"from {kind}" for kind in sockets)
    for ws in sockets.values():
        assert sorted([await recv(ws) for _ in sockets]) == expected

    # Direct messages cross nodes, every way.
    for sender, ws in sockets.items():
        for target, (_, uuid) in clients.items():
            if target != sender:
                await send(ws, op="emit_to", to=uuid, data=f"{sender} to {target}")
    for target, ws in sockets.items():
        got = sorted([await recv(ws) for _ in range(len(sockets) - 1)])
        assert got == sorted(f"{s} to {target}" for s in sockets if s != target)

    # Rooms: the trio and the asyncio client join; the anyio one speaks to the room.
    for kind in ("trio", "asyncio"):
        await send(sockets[kind], op="join", room="lobby")
        assert json.loads(await recv(sockets[kind])) == {"joined": "lobby"}
    await send(sockets["anyio"], op="room", room="lobby", data="lobby news")
    assert await recv(sockets["trio"]) == "lobby news"
    assert await recv(sockets["asyncio"]) == "lobby news"

    # A hub-wide fire runs the listener once per connection, on every node.
    await send(sockets["trio"], op="fire", event="ring", data="now")
    for kind, ws in sockets.items():
        assert await recv(ws) == f"rang {kind}: now"

    await send(sockets["asyncio"], op="broadcast", data="marker")
    for ws in sockets.values():
        assert await recv(ws) == "marker"
    await nothing_more(*sockets.values())  # nothing twice


@asynccontextmanager
async def every_kind_of_node(url: str) -> AsyncIterator[dict[str, tuple[ClientConnection, str]]]:
    """A trio, an asyncio (processes) and an anyio node (here), and a client on each."""
    with node_processes(url) as urls:
        async with nodes(url, count=1) as (local,), AsyncExitStack() as stack:
            urls["anyio"] = local.url
            yield {
                kind: await stack.enter_async_context(client(node_url, kind))
                for kind, node_url in urls.items()
            }


async def a_sigkilled_trio_node_is_forgotten(url: str) -> None:
    """A trio node killed with SIGKILL is forgotten by the others within its TTL."""
    port = free_port()
    args = [sys.executable, NODE, str(port), url, "trio"]
    with process(args, f"listening on {port} (trio)") as proc:
        async with (
            nodes(url, count=1) as (a,),
            client(a.url, "a1") as (a1, a1_uuid),
            client(f"ws://127.0.0.1:{port}", "t1") as (_, t1_uuid),
        ):
            await until(lambda: t1_uuid in a.hub.all_connections)
            assert await who(a1) == {a1_uuid, t1_uuid}
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(LIMIT)
            # Forgotten after NODE_TTL without a heartbeat (checked every HEARTBEAT / 2).
            await until(lambda: t1_uuid not in a.hub.all_connections, NODE_TTL + HEARTBEAT + 2)
            assert a.hub.remote_nodes == ()
            assert a.backplane.stats["forgotten"] == 1
            assert await who(a1) == {a1_uuid}
            with pytest.raises(UnknownConnection):
                a.hub.emit_to(t1_uuid, "anyone?")


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


async def _serve_anyio_node(port: int, url: str, app: Callable[[], Hub] = make_hub) -> None:
    """The same node (or ``app()``'s hub) on the anyio adapter, for the backend it runs on."""
    node_hub = app()
    async with anyio.create_task_group() as tg:
        backplane = RedisBackplane(node_hub, url, heartbeat=HEARTBEAT, node_ttl=NODE_TTL)
        await tg.start(backplane.run)
        await until(lambda: backplane.connected)
        await tg.start(
            lambda task_status: serve(node_hub, "127.0.0.1", port, task_status=task_status)
        )
        import sniffio  # noqa: PLC0415 (trio depends on it)

        print(f"node: listening on {port} ({sniffio.current_async_library()})", flush=True)


def _asgi_node(url: str, make: Callable[[], Hub] = make_hub) -> Any:
    """The same node (or ``make()``'s hub) as an ASGI app: its lifespan runs the backplane.

    Any ASGI server serves it (``hypercorn --worker-class trio`` too); the tests
    start it as ``redis_support:asgi_node`` with ``IKISOCKET_TEST_REDIS`` set to the URL.
    """
    node_hub = make()
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
