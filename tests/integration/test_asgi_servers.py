"""What only the ASGI adapter does, checked on real ASGI servers over 127.0.0.1.

The shared scenarios (``test_scenarios.py``) already run on every server; these
add the engine's limits as a real client sees them behind an ASGI server (1009,
the ``close`` backpressure policy's 1013, the ``drop`` policy) with the engine's
counters (``GET /stats``), ``idle_timeout`` driven from the lifespan, and a
Starlette app serving HTTP beside the mounted hub.
"""

from __future__ import annotations

import json
import os
import socket
import urllib.request
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import anyio
import anyio.to_thread
import pytest
from servers import LAUNCHERS, LIMIT, RunningServer, client, launch, recv
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, InvalidStatus

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

#: ASGI servers whose ``send`` waits for a slow client, on asyncio and on trio. On the
#: asyncio ones a broadcasting task starts each receiver's send and hands one that has to
#: wait to that receiver's own task: both of uvicorn's protocols and hypercorn's.
POLICY_SERVERS = [
    "uvicorn-websockets-sansio",
    "uvicorn-wsproto",
    "hypercorn-asyncio",
    "hypercorn-trio",
]


def serve(name: str, app: str) -> Iterator[RunningServer]:
    launcher = LAUNCHERS[name]
    if launcher.missing():
        pytest.skip(f"{launcher.name} needs {', '.join(launcher.missing())}")
    with launch(launcher, app=app) as running:
        yield running


@pytest.fixture(scope="module", params=POLICY_SERVERS)
def policy_server(request: pytest.FixtureRequest) -> Iterator[RunningServer]:
    """``apps:close_policy_app``: slow clients are closed with 1013."""
    yield from serve(request.param, "apps:close_policy_app")


@pytest.fixture(scope="module", params=POLICY_SERVERS)
def drop_server(request: pytest.FixtureRequest) -> Iterator[RunningServer]:
    """``apps:drop_policy_app``: slow clients miss messages; 1 MiB message limit."""
    yield from serve(request.param, "apps:drop_policy_app")


@pytest.fixture(scope="module", params=POLICY_SERVERS)
def idle_server(request: pytest.FixtureRequest) -> Iterator[RunningServer]:
    """``apps:idle_app``: idle clients are closed after 1 s."""
    yield from serve(request.param, "apps:idle_app")


@pytest.fixture(scope="module")
def limited_server() -> Iterator[RunningServer]:
    """``apps:limited_app``: two connections at most."""
    yield from serve("uvicorn-websockets-sansio", "apps:limited_app")


@pytest.fixture(scope="module")
def starlette_server() -> Iterator[RunningServer]:
    yield from serve("starlette-mount", "apps:starlette_app")


async def stats_of(server: RunningServer) -> dict[str, int]:
    """The engine's counters, from the app's ``GET /stats``."""
    url = f"{server.http_url}/stats"

    def get() -> dict[str, int]:
        with urllib.request.urlopen(url, timeout=LIMIT) as response:
            stats = json.loads(response.read())
        assert isinstance(stats, dict)
        return stats

    return await anyio.to_thread.run_sync(get)


def slow_socket(server: RunningServer) -> socket.socket:
    """A connected socket with a tiny receive buffer, for a client that stops reading."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", server.port))
    sock.setblocking(False)
    return sock


async def record_of(observer: ClientConnection, event: str, user: str) -> dict[str, Any]:
    with anyio.fail_after(LIMIT):
        while True:
            message = await observer.recv()
            if isinstance(message, str) and message.startswith("{"):
                record = json.loads(message)
                if record.get("event") == event and record.get("user") == user:
                    assert isinstance(record, dict)
                    return record


async def flood(sender: ClientConnection, fast: ClientConnection, count: int) -> None:
    """``count`` 64 KiB messages through the room, in lockstep with the fast reader."""
    payload = os.urandom(64 * 1024 - 4)
    with anyio.fail_after(LIMIT * 4):
        for i in range(count):
            await sender.send(i.to_bytes(4, "big") + payload)
            message = await recv(fast)
            assert isinstance(message, bytes)
            assert message[:4] == i.to_bytes(4, "big")


async def read_to_end(ws: ClientConnection) -> tuple[int, ConnectionClosed]:
    """Read until the connection closes: how many messages came, and how it closed."""
    got = 0
    while True:
        try:
            await recv(ws)
        except ConnectionClosed as closed:
            return got, closed
        got += 1


@asynccontextmanager
async def slow_room(
    server: RunningServer, room: str
) -> AsyncIterator[tuple[ClientConnection, ClientConnection, ClientConnection, ClientConnection]]:
    """An observer, then a client that stops reading, a fast one and a sender in ``room``."""
    plain: dict[str, Any] = {"compression": None, "max_size": None}
    async with AsyncExitStack() as stack:
        sock = slow_socket(server)
        stack.callback(sock.close)  # the last thing to close, whoever owns it by then
        observer = await stack.enter_async_context(client(server, "/observe"))
        assert await recv(observer) == "observing"
        slow = await stack.enter_async_context(
            client(server, f"/rooms/{room}?id=slow", sock=sock, max_queue=1, **plain)
        )
        fast = await stack.enter_async_context(client(server, f"/rooms/{room}?id=fast", **plain))
        sender = await stack.enter_async_context(client(server, f"/rooms/{room}?id=s"))
        for ws in (slow, fast, sender):
            assert await recv(ws) == f"joined {room}"
        yield observer, slow, fast, sender


async def test_close_policy_closes_only_the_slow_client_with_1013(
    policy_server: RunningServer,
) -> None:
    count = 120
    before = await stats_of(policy_server)
    async with slow_room(policy_server, f"flood-{os.getpid()}") as (observer, slow, fast, sender):
        await flood(sender, fast, count)
        error = await record_of(observer, "error", "slow")
        assert error["error"] == "SlowConsumer"
        ended = await record_of(observer, "disconnect", "slow")
        assert ended["code"] == 1013
        # The others carry on.
        await sender.send(b"still here")
        assert await recv(fast) == b"still here"
        # Reading again, the slow client gets what was already written, then the 1013.
        got, closed = await read_to_end(slow)
        assert closed.rcvd is not None
        assert closed.rcvd.code == 1013
        assert got < count
    after = await stats_of(policy_server)
    assert after["overflow_closes"] - before["overflow_closes"] == 1
    assert after["dropped_messages"] == before["dropped_messages"]


async def test_drop_policy_drops_for_the_slow_client_only_and_keeps_it_open(
    drop_server: RunningServer,
) -> None:
    count = 120
    before = await stats_of(drop_server)
    async with slow_room(drop_server, f"drop-{os.getpid()}") as (observer, slow, fast, sender):
        await flood(sender, fast, count)
        error = await record_of(observer, "error", "slow")
        assert error["error"] == "SlowConsumer"
        # The slow client reads again; a marker that arrives proves it is still open.
        seen: list[int] = []
        arrived = anyio.Event()

        async def read_until_marker() -> None:
            while True:
                message = await recv(slow)
                assert isinstance(message, bytes)
                if message.startswith(b"marker"):
                    arrived.set()
                    return
                seen.append(int.from_bytes(message[:4], "big"))

        markers = 0
        async with anyio.create_task_group() as tg:
            tg.start_soon(read_until_marker)
            with anyio.fail_after(LIMIT):
                while not arrived.is_set():
                    # Dropped too while the backlog is over max_queue: send another.
                    await sender.send(b"marker")
                    assert await recv(fast) == b"marker"
                    markers += 1
                    with anyio.move_on_after(0.2):
                        await arrived.wait()
        after = await stats_of(drop_server)
        dropped = after["dropped_messages"] - before["dropped_messages"]
        assert 0 < len(seen) < count
        assert seen == sorted(seen)  # what was kept arrives in order
        # Every message sent to the slow client arrived or was counted as dropped
        # (markers sent after the one that arrived may still be on their way).
        assert dropped >= count - len(seen)
        assert dropped <= count - len(seen) + markers - 1
        assert after["overflow_closes"] == before["overflow_closes"]
        await sender.send(b"still open")
        assert await recv(fast) == b"still open"


async def test_a_message_over_max_message_size_closes_with_1009(
    drop_server: RunningServer,
) -> None:
    before = await stats_of(drop_server)
    async with client(drop_server, "/echo?id=big", max_size=None) as ws:
        await ws.send(b"x" * (1024 * 1024))
        assert await recv(ws) == b"x" * (1024 * 1024)  # exactly the limit passes
        await ws.send(b"x" * (1024 * 1024 + 1))
        with pytest.raises(ConnectionClosed) as closed:
            await recv(ws)
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 1009
    after = await stats_of(drop_server)
    assert after["protocol_errors"] - before["protocol_errors"] == 1
    assert after["messages_in"] - before["messages_in"] == 1


async def test_idle_clients_are_closed_by_the_lifespan_timer(idle_server: RunningServer) -> None:
    async with client(idle_server, "/echo?id=idle") as ws:
        await ws.send("one message, then silence")
        assert await recv(ws) == "one message, then silence"
        with pytest.raises(ConnectionClosed) as closed:
            await recv(ws)
    assert closed.value.rcvd is not None
    assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (1001, "idle timeout")


def get_text(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=LIMIT) as response:
        return response.status, response.read().decode()


async def test_starlette_http_routes_work_beside_the_mounted_hub(
    starlette_server: RunningServer,
) -> None:
    health = f"{starlette_server.http_url}/health"
    async with client(starlette_server, "/echo?id=beside-http") as ws:
        assert await anyio.to_thread.run_sync(get_text, health) == (200, "ok, 1 connected")
        await ws.send("both at once")
        assert await recv(ws) == "both at once"


async def test_past_max_connections_the_upgrade_gets_a_real_503_with_retry_after(
    limited_server: RunningServer,
) -> None:
    async with (
        client(limited_server, "/echo?id=one") as one,
        client(limited_server, "/echo?id=two") as two,
    ):
        with pytest.raises(InvalidStatus) as refused:
            async with client(limited_server, "/echo?id=three"):
                pass
        response = refused.value.response
        assert response.status_code == 503
        assert response.headers["Retry-After"] == "5"
        assert response.body == b"the server is at its connection limit"
        for ws in (one, two):
            await ws.send("still served")
            assert await recv(ws) == "still served"
        stats = await stats_of(limited_server)
        assert stats["over_max_connections"] == 1
        assert stats["upgrades"] == 2
    # Both left: their places are free again.
    with anyio.fail_after(LIMIT):
        while True:
            try:
                async with client(limited_server, "/echo?id=again") as again:
                    await again.send("a free place")
                    assert await recv(again) == "a free place"
                    break
            except InvalidStatus:  # the server may not have seen both ends yet
                await anyio.sleep(0.05)
