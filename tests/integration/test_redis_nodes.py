"""One application on nodes of every kind: a trio node, an asyncio node, an anyio node.

The nodes are separate processes (``python redis_support.py PORT URL KIND``: the
anyio adapter on trio, the asyncio adapter) plus one node in the test's own
event loop, all on one real ``redis-server`` over loopback; clients are
``websockets`` clients. What one client does must reach the others exactly
once, whatever node each is on.
"""

from __future__ import annotations

import logging
import signal
import sys
import time

import anyio
import coredis
import pytest
import redis_support
from redis_support import (
    HEARTBEAT,
    LIMIT,
    RedisServer,
    a_sigkilled_trio_node_is_forgotten,
    client,
    every_kind_of_node,
    free_port,
    node_processes,
    nodes,
    one_application,
    process,
    recv,
    send,
    until,
    who,
)

pytestmark = redis_support.pytestmark
redis_server = redis_support.redis_server  # the fixture


async def test_trio_asyncio_and_anyio_nodes_are_one_application(
    redis_server: RedisServer,
) -> None:
    async with every_kind_of_node(redis_server.url) as clients:
        await one_application(clients)


async def test_a_sigkilled_trio_node_is_forgotten_within_its_ttl(
    redis_server: RedisServer,
) -> None:
    await a_sigkilled_trio_node_is_forgotten(redis_server.url)


async def test_delivery_resumes_after_redis_restarts(redis_server: RedisServer) -> None:
    with node_processes(redis_server.url, ("trio",)) as urls:
        async with (
            nodes(redis_server.url, count=1) as (a,),
            client(a.url, "a1") as (a1, _),
            client(urls["trio"], "t1") as (t1, t1_uuid),
        ):
            await until(lambda: t1_uuid in a.hub.all_connections)
            redis_server.kill()
            await until(lambda: not a.backplane.connected)
            redis_server.start()
            await until(lambda: a.backplane.connected)
            assert a.backplane.stats["reconnects"] >= 1
            # The trio node reconnects too; a broadcast gets through once both have.
            with anyio.fail_after(LIMIT):
                while True:
                    await send(a1, op="broadcast", data="after the restart")
                    assert await recv(a1) == "after the restart"
                    with anyio.move_on_after(0.5):
                        assert await t1.recv() == "after the restart"
                        break
            await send(t1, op="broadcast", data="and back")
            assert await recv(a1) == "and back"
            assert await recv(t1) == "and back"


async def test_a_paused_redis_never_blocks_a_listener(redis_server: RedisServer) -> None:
    async with (
        nodes(redis_server.url) as (a, b),
        client(a.url, "a1") as (a1, _),
        client(b.url, "b1") as (b1, b1_uuid),
    ):
        await until(lambda: b1_uuid in a.hub.all_connections)
        assert redis_server.process is not None
        redis_server.process.send_signal(signal.SIGSTOP)  # connected, but never answers
        try:
            for n in range(50):
                await send(a1, op="broadcast", data=f"paused {n}")
            # Every listener ran and delivered locally although nothing reaches Redis.
            assert [await recv(a1) for _ in range(50)] == [f"paused {n}" for n in range(50)]
        finally:
            redis_server.process.send_signal(signal.SIGCONT)
        with anyio.fail_after(LIMIT):
            while True:  # what was published during the pause may or may not arrive
                await send(a1, op="broadcast", data="after the pause")
                assert await recv(a1) == "after the pause"
                with anyio.move_on_after(0.5):
                    while (message := await b1.recv()) != "after the pause":
                        assert isinstance(message, str)
                        assert message.startswith("paused ")
                    break


async def test_health_shows_the_lag_and_the_log_says_when_relays_arrive_late(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="ikisocket")
    async with nodes(redis_server.url) as (a, b), client(a.url, "a1") as (a1, _):
        health = a.backplane.health()
        assert 0.0 <= health["lag"] < LIMIT  # its own heartbeat, at least, came back
        assert health["behind"] is None  # pub/sub mode: no stream to be behind in
        # A relay published 30 s before it reaches this node (a node stalled that long, or a
        # Redis that held it): it is delivered, and the lag says how late it was.
        late = b'{"op":"broadcast","node":"stalled","data":"bGF0ZQ==","t":%d}' % (
            (time.time() - 30) * 1000
        )
        async with coredis.Redis.from_url(redis_server.url) as raw:
            await raw.publish(a.backplane.channel, late)
        assert await recv(a1) == "late"
        assert 29 < a.backplane.health()["lag"] < 30 + LIMIT
        await until(lambda: "receives relays" in caplog.text)
        # The next heartbeats arrive on time: so does the log.
        await until(lambda: a.backplane.health()["lag"] < HEARTBEAT)
        await until(lambda: "is on time again" in caplog.text)
        assert b.backplane.health()["lag"] < 30  # b heard only the others' relays


async def test_health_counts_and_a_deaf_node_heals_itself(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with nodes(redis_server.url) as (a, b), client(b.url, "b1") as (_, b1_uuid):
        await until(lambda: b1_uuid in a.hub.all_connections)
        health = a.backplane.health()
        assert health["node"] == a.backplane.node_id
        assert health["connected"] is True
        assert set(health["peers"]) == {b.backplane.node_id}
        assert 0 <= health["peers"][b.backplane.node_id] < LIMIT
        assert health["published"] > 0
        assert health["applied"] == health["received"] > 0
        assert health["reconnects"] == health["deaf"] == 0
        # The first release's heartbeat key is kept alive (old nodes judge liveness by it).
        async with coredis.Redis.from_url(redis_server.url) as raw:
            keys = [a.backplane.node_key(n.backplane.node_id) for n in (a, b)]
            assert keys[0] == f"ikisocket:node:{a.backplane.node_id}"
            assert await raw.exists(keys) == 2
        # The subscription goes silently deaf (the classic failure): nothing it gets is
        # applied, not even this node's own heartbeat. The probe notices and reconnects.
        monkeypatch.setattr(a.backplane, "_receive", lambda *message: None)
        await until(lambda: a.backplane.stats["deaf"] >= 1)
        await until(lambda: a.backplane.stats["reconnects"] >= 1 and a.backplane.connected)
        monkeypatch.undo()
        await until(lambda: b1_uuid in a.hub.all_connections)


@pytest.mark.parametrize(
    "server",
    [
        ["-m", "hypercorn", "--worker-class", "trio", "--bind"],
        ["-m", "uvicorn", "--host", "127.0.0.1", "--port"],
    ],
    ids=["hypercorn-trio", "uvicorn"],
)
async def test_an_asgi_node_joins_the_application(
    redis_server: RedisServer, server: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    port = free_port()
    where = f"127.0.0.1:{port}" if "--bind" in server else str(port)
    args = [sys.executable, *server[:-1], "redis_support:asgi_node", server[-1], where]
    monkeypatch.setenv("IKISOCKET_TEST_REDIS", redis_server.url)
    with process(args, "unning on"):  # "Running on" (hypercorn), "Uvicorn running on"
        async with (
            nodes(redis_server.url, count=1) as (a,),
            client(a.url, "a1") as (a1, a1_uuid),
            client(f"ws://127.0.0.1:{port}", "s1") as (s1, s1_uuid),
        ):
            await until(lambda: s1_uuid in a.hub.all_connections)
            assert await who(s1) == {a1_uuid, s1_uuid}
            await send(s1, op="broadcast", data="from asgi")
            assert await recv(a1) == await recv(s1) == "from asgi"
            await send(a1, op="emit_to", to=s1_uuid, data="to asgi")
            assert await recv(s1) == "to asgi"
