"""What only the ASGI adapter does, checked on real ASGI servers over 127.0.0.1.

The shared scenarios (``test_scenarios.py``) already run on every server; these
add the ``close`` backpressure policy, ``idle_timeout`` driven from the
lifespan, and a Starlette app serving HTTP beside the mounted hub.
"""

from __future__ import annotations

import json
import os
import socket
import urllib.request
from collections.abc import Iterator
from contextlib import AsyncExitStack
from typing import Any

import anyio
import anyio.to_thread
import pytest
from servers import LAUNCHERS, LIMIT, RunningServer, client, launch, recv
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

#: ASGI servers whose ``send`` waits for a slow client, on asyncio and on trio.
POLICY_SERVERS = ["uvicorn-websockets-sansio", "hypercorn-trio"]


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
def idle_server(request: pytest.FixtureRequest) -> Iterator[RunningServer]:
    """``apps:idle_app``: idle clients are closed after 1 s."""
    yield from serve(request.param, "apps:idle_app")


@pytest.fixture(scope="module")
def starlette_server() -> Iterator[RunningServer]:
    yield from serve("starlette-mount", "apps:starlette_app")


async def record_of(observer: ClientConnection, event: str, user: str) -> dict[str, Any]:
    with anyio.fail_after(LIMIT):
        while True:
            message = await observer.recv()
            if isinstance(message, str) and message.startswith("{"):
                record = json.loads(message)
                if record.get("event") == event and record.get("user") == user:
                    assert isinstance(record, dict)
                    return record


async def test_close_policy_closes_only_the_slow_client_with_1013(
    policy_server: RunningServer,
) -> None:
    room, count = f"flood-{os.getpid()}", 120
    payload = os.urandom(64 * 1024 - 4)
    plain: dict[str, Any] = {"compression": None, "max_size": None}
    async with AsyncExitStack() as stack:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        stack.callback(sock.close)  # the last thing to close, whoever owns it by then
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", policy_server.port))
        sock.setblocking(False)
        observer = await stack.enter_async_context(client(policy_server, "/observe"))
        assert await recv(observer) == "observing"
        slow = await stack.enter_async_context(
            client(policy_server, f"/rooms/{room}?id=slow", sock=sock, max_queue=1, **plain)
        )
        fast = await stack.enter_async_context(
            client(policy_server, f"/rooms/{room}?id=fast", **plain)
        )
        sender = await stack.enter_async_context(client(policy_server, f"/rooms/{room}?id=s"))
        for ws in (slow, fast, sender):
            assert await recv(ws) == f"joined {room}"
        with anyio.fail_after(LIMIT * 4):
            for i in range(count):
                # Lockstep with the fast reader: only the slow one falls behind.
                await sender.send(i.to_bytes(4, "big") + payload)
                message = await recv(fast)
                assert isinstance(message, bytes)
                assert message[:4] == i.to_bytes(4, "big")
        error = await record_of(observer, "error", "slow")
        assert error["error"] == "SlowConsumer"
        ended = await record_of(observer, "disconnect", "slow")
        assert ended["code"] == 1013
        # The others carry on.
        await sender.send(b"still here")
        assert await recv(fast) == b"still here"
        slow.transport.abort()


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
