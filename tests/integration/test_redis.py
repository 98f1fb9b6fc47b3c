"""The Redis backplane against a real ``redis-server``: several nodes, one application.

Each test starts its own ``redis-server`` on a free loopback port. Nodes are
asyncio servers with a :class:`RedisBackplane` each, in this process or in
subprocesses (the crash test, and ``ikisocket demo --redis``); clients are
``websockets`` clients over 127.0.0.1 (see ``redis_support``).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from typing import Any

import anyio
import anyio.to_thread
import coredis
import pytest
import redis_support
from redis_support import (
    HEARTBEAT,
    HERE,
    LIMIT,
    NODE,
    NODE_TTL,
    RedisServer,
    client,
    free_port,
    make_hub,
    nodes,
    nothing_more,
    process,
    recv,
    send,
    until,
)
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from ikisocket_adapters.redis import RedisBackplane, decode_relay, encode_relay
from ikisocket_core import (
    BINARY,
    AbsenceRelay,
    AckAnswerRelay,
    AckRequestRelay,
    AckTargetsRelay,
    BroadcastRelay,
    EmitRelay,
    FireRelay,
    HelloRelay,
    Hub,
    PresenceRelay,
    Relay,
    RoomRelay,
)
from ikisocket_core.testing import TestClient

pytestmark = redis_support.pytestmark
redis_server = redis_support.redis_server  # the fixture


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


def test_ack_relays_survive_the_wire_and_are_checked() -> None:
    relays: list[Relay] = [
        AckRequestRelay(node="n", request=0, event="q", timeout=5.0, uuids=("u",), to="m"),
        AckRequestRelay(
            node="n",
            request=2**53 - 1,
            event="q",
            timeout=0.25,
            data=b'[{"_placeholder":true,"num":0}]',
            attachments=(b"\x00",),
            namespace="/chat",
            room="r",
            exclude="u",
        ),
        AckTargetsRelay(node="m", to="n", request=3, uuids=("u", "v")),
        AckTargetsRelay(node="m", to="n", request=3, uuids=("w",), final=False),
        AckAnswerRelay(node="m", to="n", request=3, uuid="u", data=b'["yes"]'),
        AckAnswerRelay(
            node="m", to="n", request=3, uuid="v", error="closed", code=1001, reason="x"
        ),
    ]
    for relay in relays:
        assert decode_relay(encode_relay(relay)) == relay
    assert decode_relay(
        b'{"op":"ack_request","node":"n","request":1,"event":"q","timeout":5}'
    ) == AckRequestRelay(node="n", request=1, event="q", timeout=5.0)
    for junk in (
        b'{"op":"ack_request","node":"n","request":"1","event":"q","timeout":5}',
        b'{"op":"ack_request","node":"n","request":-1,"event":"q","timeout":5}',
        b'{"op":"ack_request","node":"n","request":1,"event":"q","timeout":"5"}',
        b'{"op":"ack_request","node":"n","request":1,"event":"q","timeout":1e9}',
        b'{"op":"ack_request","node":"n","request":1,"event":"q"}',
        b'{"op":"ack_targets","node":"m","to":5,"request":1}',
        b'{"op":"ack_targets","node":"m","to":"n","request":1,"final":0}',
        b'{"op":"ack_answer","node":"m","to":"n","request":1,"uuid":"u","error":"boom"}',
        b'{"op":"ack_answer","node":"m","to":"n","request":1,"uuid":"u","code":true}',
    ):
        with pytest.raises(ValueError, match="relay"):
            decode_relay(junk)


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


async def test_a_client_gone_as_the_backplane_stops_is_announced_gone(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A server stops its backplane right after closing its clients, so their "absent" relays
    # are often being published when the stop comes. Here the publish of a client's "absent"
    # is held up until then: cut short, it goes out again with the farewell, while a message
    # relay cut short with it stays at most once (pub/sub).
    node_hub = make_hub()
    backplane = RedisBackplane(node_hub, redis_server.url, heartbeat=HEARTBEAT, node_ttl=NODE_TTL)
    publish = backplane._publish
    under_way = anyio.Event()

    async def slow_publish(client: Any, batch: list[tuple[int, Relay]], **options: Any) -> None:
        if any(isinstance(relay, AbsenceRelay) for _, relay in batch) and not under_way.is_set():
            under_way.set()
            await anyio.sleep(LIMIT)  # the stop comes meanwhile
        await publish(client, batch, **options)

    monkeypatch.setattr(backplane, "_publish", slow_publish)
    node = backplane.node_id
    async with (
        coredis.Redis.from_url(redis_server.url) as raw,
        raw.pubsub() as pubsub,
    ):
        await pubsub.subscribe(backplane.channel)
        async with anyio.create_task_group() as tg:
            await tg.start(backplane.run)
            await until(lambda: backplane.connected)
            session = TestClient(node_hub).websocket_connect("/ws/gone")
            uuid = json.loads(session.receive_text())["uuid"]
            await until(lambda: backplane.stats["published"] >= 3)  # hello, snapshot, present
            node_hub.broadcast("last")
            session.close()
            with anyio.fail_after(LIMIT):
                await under_way.wait()
            tg.cancel_scope.cancel()
        seen: list[Relay] = []
        with anyio.fail_after(LIMIT):
            while AbsenceRelay(node=node, uuids=(uuid,)) not in seen:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1)
                if message is not None:
                    assert isinstance(message["data"], bytes)
                    seen.append(decode_relay(message["data"]))
        assert BroadcastRelay(node=node, data=b"last") not in seen
        assert await raw.exists([backplane.node_key(node)]) == 0  # the farewell ran


async def test_a_crashed_node_is_forgotten_after_its_ttl(redis_server: RedisServer) -> None:
    port = free_port()
    with process([sys.executable, NODE, str(port), redis_server.url]) as proc:
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
    cli = [sys.executable, "-m", "ikisocket_adapters", "run", "redis_support:hub"]
    with process([*cli, "--port", str(port), "--redis", redis_server.url]) as proc:
        async with (
            coredis.Redis.from_url(redis_server.url) as raw,
            raw.pubsub() as pubsub,
        ):
            await pubsub.subscribe("ikisocket")
            async with client(f"ws://127.0.0.1:{port}", "b1") as (ws, b1_uuid):
                # Until the node has told Redis about b1: a SIGTERM before its backplane is
                # up has no one to announce (on Python 3.13 that race lost 2 runs in 4).
                with anyio.fail_after(LIMIT):
                    while True:
                        message = await pubsub.get_message(
                            ignore_subscribe_messages=True, timeout=1
                        )
                        if message is not None:
                            assert isinstance(message["data"], bytes)
                            told = decode_relay(message["data"])
                            if isinstance(told, PresenceRelay) and b1_uuid in told.uuids:
                                break
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
        [sys.executable, "-m", "ikisocket_adapters", "run", "redis_support:hub", "--redis", "x://"],
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

            # Direct messages cross nodes, both ways (the page's "to" field). Presence is
            # eventually consistent: until the sender's node knows the other user, the sender
            # gets "... is not online"; then the message gets through.
            users = {"alice": alice, "bob": bob}

            async def direct(sender: ClientConnection, to: str, text: str) -> dict[str, Any]:
                with anyio.fail_after(LIMIT):
                    while True:
                        await sender.send(json.dumps({"to": to, "event": "message", "data": text}))
                        with anyio.move_on_after(0.5):
                            while True:  # past system and presence news
                                message = dict(json.loads(await users[to].recv()))
                                if message["event"] == "message" and message["data"] == text:
                                    return message

            async def error(ws: ClientConnection, text: str) -> None:
                with anyio.fail_after(LIMIT):
                    while json.loads(await ws.recv()) != {
                        "from": "server",
                        "to": "bob",
                        "event": "error",
                        "data": text,
                    }:
                        pass

            dm = await direct(alice, "bob", "psst bob")
            assert (dm["from"], dm["to"], dm["data"]) == ("alice", "bob", "psst bob")
            dm = await direct(bob, "alice", "psst alice")
            assert (dm["from"], dm["to"], dm["data"]) == ("bob", "alice", "psst alice")
            await bob.send(json.dumps({"to": "nobody", "event": "message", "data": "hello?"}))
            await error(bob, "nobody is not online")
            # A name in use on the other node is taken.
            async with connect(f"ws://127.0.0.1:{ports[1]}/ws/alice", open_timeout=LIMIT) as dup:
                with anyio.fail_after(LIMIT):
                    await dup.wait_closed()
                assert dup.close_code == 4000
