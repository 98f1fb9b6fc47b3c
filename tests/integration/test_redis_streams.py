"""Streams mode on a real ``redis-server``: no loss across a Redis pause, and an explicit resync.

Relays go through one Redis stream that every node reads from the last entry it
applied; a node whose gap is older than the stream's backlog is told so through
its connections' ``error`` listeners (:class:`~ikisocket_adapters.redis.Resync`).
"""

from __future__ import annotations

import json
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import anyio
import anyio.to_thread
import pytest
import redis_support
from redis_support import (
    LIMIT,
    NODE,
    RedisServer,
    client,
    free_port,
    nodes,
    nothing_more,
    process,
    recv,
    redis_binary,
    send,
    until,
)
from websockets.asyncio.client import ClientConnection

from ikisocket_adapters.redis import RedisBackplane, Resync
from ikisocket_core import Hub

pytestmark = redis_support.pytestmark
redis_server = redis_support.redis_server  # the fixture

#: Messages broadcast before, during and after the pause (each third).
COUNT = 3000
#: Messages broadcast before, during and after the restart (each third).
RESTART_COUNT = 10_000


def test_streams_mode_checks_its_settings() -> None:
    with pytest.raises(ValueError, match="mode"):
        RedisBackplane(Hub(), mode="kafka")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="backlog"):
        RedisBackplane(Hub(), mode="streams", backlog=0)
    backplane = RedisBackplane(Hub(), mode="streams", channel="app")
    assert (backplane.mode, backplane.stream, backplane.backlog) == (
        "streams",
        "app:stream",
        10_000,
    )
    error = Resync("node-b", 3, "older than the stream's backlog")
    assert (error.node, error.missed) == ("node-b", 3)
    assert str(error) == "lost 3 relays of node node-b: older than the stream's backlog"


async def test_a_redis_pause_loses_nothing_and_delivers_once_in_order(
    redis_server: RedisServer,
) -> None:
    async with (
        nodes(redis_server.url, mode="streams") as (a, b),
        client(a.url, "a1") as (a1, _),
        client(b.url, "b1") as (b1, _),
    ):
        sent = [f"m{n}" for n in range(COUNT)]
        got: list[str | bytes] = []

        async def receive_all() -> None:
            while len(got) < COUNT:
                got.append(await recv(b1))

        async with anyio.create_task_group() as tg:
            tg.start_soon(receive_all)
            third = COUNT // 3
            for data in sent[:third]:
                await send(a1, op="broadcast", data=data)
            assert redis_server.process is not None
            redis_server.process.send_signal(signal.SIGSTOP)
            try:
                for data in sent[third : 2 * third]:
                    await send(a1, op="broadcast", data=data)
                await anyio.sleep(2.0)  # Redis stays stopped for 2 s
            finally:
                redis_server.process.send_signal(signal.SIGCONT)
            for data in sent[2 * third :]:
                await send(a1, op="broadcast", data=data)
            # Local delivery never waited for Redis.
            assert [await recv(a1) for _ in sent] == sent
        assert got == sent  # every message, once, in order
        await nothing_more(b1)
        assert b.backplane.stats["resyncs"] == 0
        assert a.backplane.stats["dropped"] == 0


@pytest.fixture
def persistent_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A ``redis-server`` with an append-only file in a temporary directory."""
    server = RedisServer(redis_binary("redis-server"), tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.kill()


async def test_a_redis_restart_during_10000_broadcasts_loses_nothing(
    persistent_redis: RedisServer,
) -> None:
    """Redis is stopped (SIGTERM) for 2 s and restarted on the same port and data directory.

    A real restart, not a pause: the stream survives it in Redis' append-only
    file, and the nodes reconnect, publish what waited, and read on from the
    last entry each applied.
    """
    redis = persistent_redis
    async with (
        # Everything may wait for the restart: the publisher's queue holds it all.
        nodes(
            redis.url, mode="streams", backlog=2 * RESTART_COUNT, max_pending=2 * RESTART_COUNT
        ) as (a, b),
        client(a.url, "a1") as (a1, _),
        client(a.url, "a2") as (a2, _),
        client(b.url, "b1") as (b1, _),
        client(b.url, "b2") as (b2, _),
    ):
        sent = [f"m{n}" for n in range(RESTART_COUNT)]
        got: dict[str, list[str | bytes]] = {"a1": [], "a2": [], "b1": [], "b2": []}

        async def receive_all(name: str, ws: ClientConnection) -> None:
            with anyio.fail_after(6 * LIMIT):
                while len(got[name]) < RESTART_COUNT:
                    got[name].append(await ws.recv())

        async with anyio.create_task_group() as tg:
            for name, ws in (("a1", a1), ("a2", a2), ("b1", b1), ("b2", b2)):
                tg.start_soon(receive_all, name, ws)
            third = RESTART_COUNT // 3
            for data in sent[:third]:
                await send(a1, op="broadcast", data=data)
            await anyio.to_thread.run_sync(redis.stop)
            stopped = anyio.current_time()
            for data in sent[third : 2 * third]:
                await send(a1, op="broadcast", data=data)
            await until(lambda: not a.backplane.connected and not b.backplane.connected)
            await anyio.sleep(max(0.0, 2.0 - (anyio.current_time() - stopped)))
            await anyio.to_thread.run_sync(redis.start)  # same port, same data directory
            for data in sent[2 * third :]:
                await send(a1, op="broadcast", data=data)
        for name, messages in got.items():
            assert messages == sent, name  # every message, once, in order
        await nothing_more(a1, a2, b1, b2)
        assert a.backplane.stats["reconnects"] >= 1
        assert b.backplane.stats["reconnects"] >= 1
        assert b.backplane.stats["resyncs"] == 0
        assert a.backplane.stats["dropped"] == 0
        await until(lambda: b.backplane.health()["behind"] == 0)


async def test_a_node_away_longer_than_the_backlog_gets_a_resync(
    redis_server: RedisServer,
) -> None:
    port = free_port()
    args = [sys.executable, NODE, str(port), redis_server.url, "asyncio", "streams"]
    with process(args, f"listening on {port}") as proc:
        async with (
            nodes(redis_server.url, count=1, mode="streams", backlog=10) as (a,),
            client(a.url, "a1") as (a1, _),
            client(f"ws://127.0.0.1:{port}", "p1") as (p1, p1_uuid),
        ):
            await until(lambda: p1_uuid in a.hub.all_connections)
            await send(a1, op="broadcast", data="before")
            assert await recv(p1) == "before"
            proc.send_signal(signal.SIGSTOP)  # the node is paused...
            try:
                for n in range(500):  # ... while far more than the backlog is published
                    await send(a1, op="broadcast", data=f"away {n}")
                assert [await recv(a1) for _ in range(501)][-1] == "away 499"
            finally:
                proc.send_signal(signal.SIGCONT)
            with anyio.fail_after(LIMIT):
                while True:
                    message = await recv(p1)
                    if isinstance(message, str) and message.startswith("{"):
                        break
                    assert isinstance(message, str)
                    assert message.startswith("away ")
            report = json.loads(message)
            assert report["resync"] == a.backplane.node_id
            assert report["missed"] > 0
            # Delivery carries on after the report.
            await send(a1, op="broadcast", data="after")
            with anyio.fail_after(LIMIT):
                while (message := await recv(p1)) != "after":
                    assert isinstance(message, str)
                    # Each gap is reported (the entries kept may have gaps of their own).
                    assert message.startswith(("away ", '{"resync"'))
