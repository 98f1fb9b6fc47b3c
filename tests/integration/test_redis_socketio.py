"""Socket.IO named events cross nodes through a real ``redis-server``.

Two node processes (the anyio adapter on asyncio, and on trio), each with the
Redis backplane and Socket.IO mounted; python-socketio ``AsyncClient`` clients
on both. A named event emitted on one node, to a room, to everyone, or to a
UUID held by the other node, reaches the clients of both nodes as that event
(binary arguments included), and only the clients it was meant for. A node
asks an ack of a client of the other node (or of a room's members on both)
and gets the answer, or a timeout that runs on the asking node.
"""

from __future__ import annotations

import asyncio
import importlib
import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import anyio
import pytest
import redis_support
from redis_support import HERE, LIMIT, RedisServer, free_port, process, redis_server

from ikisocket_adapters.redis import decode_relay, encode_relay
from ikisocket_core import EventRelay

pytestmark = redis_support.pytestmark

__all__ = ["redis_server"]  # the fixture, imported for pytest

NODE = str(HERE / "sio_redis_node.py")
#: python-socketio (the test extra has it; a missing one fails the module, never skips).
socketio: Any = importlib.import_module("socketio")


def test_an_event_relay_survives_the_wire() -> None:
    relays = [
        EventRelay(node="n", event="e"),
        EventRelay(
            node="n",
            event="e",
            data=b'["x",{"_placeholder":true,"num":0}]',
            attachments=(b"\x00\xff",),
            namespace="/chat",
            room="r",
            exclude="u",
        ),
        EventRelay(node="n", event="e", namespace="/", uuids=("a", "b")),
    ]
    for relay in relays:
        assert decode_relay(encode_relay(relay)) == relay
    assert encode_relay(relays[0]) == b'{"op":"event","node":"n","event":"e"}'
    for junk in (
        b'{"op":"event","node":"n"}',
        b'{"op":"event","node":"n","event":"e","attachments":"AP8="}',
        b'{"op":"event","node":"n","event":"e","attachments":[1]}',
        b'{"op":"event","node":"n","event":"e","attachments":["***"]}',
        b'{"op":"event","node":"n","event":"e","namespace":5}',
    ):
        with pytest.raises(ValueError, match="relay"):
            decode_relay(junk)


class Client:
    """A python-socketio client that keeps what each event brought, in order."""

    def __init__(self, sio: Any) -> None:
        self.sio = sio
        self.events: asyncio.Queue[tuple[str, list[Any]]] = asyncio.Queue()
        for name in ("said", "news", "dm"):
            sio.on(name, lambda *args, name=name: self.events.put_nowait((name, list(args))))

    async def next(self) -> tuple[str, list[Any]]:
        return await asyncio.wait_for(self.events.get(), LIMIT)

    async def call(self, event: str, *args: Any) -> Any:
        data = args if len(args) > 1 else (args[0] if args else None)
        return await self.sio.call(event, data, timeout=LIMIT)


@asynccontextmanager
async def connected(port: int) -> AsyncIterator[Client]:
    sio = socketio.AsyncClient(reconnection=False)
    client = Client(sio)
    await sio.connect(f"http://127.0.0.1:{port}", transports=["websocket"], wait_timeout=LIMIT)
    try:
        yield client
    finally:
        await sio.disconnect()


async def test_named_events_cross_nodes_to_a_room_everyone_and_a_uuid(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three nodes: asyncio, trio, and the same hub as an ASGI app on uvicorn."""
    ports = {kind: free_port() for kind in ("asyncio", "trio", "uvicorn")}
    monkeypatch.setenv("IKISOCKET_TEST_REDIS", redis_server.url)
    uvicorn = [sys.executable, "-m", "uvicorn", "sio_redis_node:asgi_node", "--port"]
    with (
        process([sys.executable, NODE, str(ports["asyncio"]), redis_server.url, "asyncio"]),
        process([sys.executable, NODE, str(ports["trio"]), redis_server.url, "trio"]),
        process([*uvicorn, str(ports["uvicorn"])], "unning on"),  # "Uvicorn running on"
    ):
        async with AsyncExitStack() as stack:
            a1 = await stack.enter_async_context(connected(ports["asyncio"]))
            a2 = await stack.enter_async_context(connected(ports["asyncio"]))
            t1 = await stack.enter_async_context(connected(ports["trio"]))
            t2 = await stack.enter_async_context(connected(ports["trio"]))
            u1 = await stack.enter_async_context(connected(ports["uvicorn"]))
            uuids = [await c.call("join", "lobby") for c in (a1, t1, u1)]
            uuids += [await c.call("join", "side") for c in (a2, t2)]
            with anyio.fail_after(LIMIT):  # presence crossed every way
                while not all([set(uuids) <= set(await c.call("who")) for c in (a1, t1, u1)]):
                    await anyio.sleep(0.05)
            everyone = (a1, a2, t1, t2, u1)

            # A room, from the asyncio node: its members on the other nodes get the named event.
            await a1.sio.emit("room", ("lobby", "hello lobby"))
            for member in (a1, t1, u1):
                assert await member.next() == ("said", ["hello lobby", {"room": "lobby"}])
            # Everyone, from the trio node, with a binary argument.
            await t2.sio.emit("all", "hello all")
            for anyone in everyone:
                assert await anyone.next() == ("news", ["hello all", b"\x00\xff"])
            # A UUID held by another node, from the asyncio node and from the ASGI node.
            await a2.sio.emit("dm", ([uuids[4]], "just t2"))
            assert await t2.next() == ("dm", ["just t2"])
            await u1.sio.emit("dm", ([uuids[0]], "just a1"))
            assert await a1.next() == ("dm", ["just a1"])
            # Nothing else reached anyone: a last broadcast is the next event of each.
            await u1.sio.emit("all", "end")
            for anyone in everyone:
                assert await anyone.next() == ("news", ["end", b"\x00\xff"])


async def test_a_node_gets_the_ack_of_a_client_of_the_other_node_or_times_out(
    redis_server: RedisServer,
) -> None:
    await acks_cross_nodes(redis_server.url)


async def acks_cross_nodes(url: str) -> None:
    """Acks asked on the asyncio node of clients of the trio node, through Redis at ``url``."""
    ports = {kind: free_port() for kind in ("asyncio", "trio")}
    gates: list[asyncio.Event] = [asyncio.Event() for _ in range(2)]

    async def held(question: str) -> str:  # answers each question once its gate opens
        await gates[held_count.pop()].wait()
        return "late"

    held_count = [1, 0]
    with (
        process([sys.executable, NODE, str(ports["asyncio"]), url, "asyncio"]),
        process([sys.executable, NODE, str(ports["trio"]), url, "trio"]),
    ):
        async with AsyncExitStack() as stack:
            for gate in gates:  # never leave the client waiting
                stack.callback(gate.set)
            asker = await stack.enter_async_context(connected(ports["asyncio"]))
            near = await stack.enter_async_context(connected(ports["asyncio"]))
            quick = await stack.enter_async_context(connected(ports["trio"]))
            slow = await stack.enter_async_context(connected(ports["trio"]))
            for client, answer in ((near, "near"), (quick, "quick")):
                client.sio.on("question", lambda q, answer=answer: (answer, q))
            slow.sio.on("question", held)
            uuids = [await c.call("join", "lobby") for c in (near, quick, slow)]
            with anyio.fail_after(LIMIT):  # the trio node's clients are known on the asyncio one
                while not set(uuids) <= set(await asker.call("who")):
                    await anyio.sleep(0.05)
            _near, quick_uuid, slow_uuid = uuids

            # One client of the other node: its answer comes back to the asking node.
            assert await asker.call("ask", quick_uuid, LIMIT) == ["quick", "ready?"]
            # One that does not answer in time: the asking node's timeout decides.
            assert await asker.call("ask", slow_uuid, 0.5) == "timeout"
            gates[0].set()  # its answer, late, reaches the asking node: dropped and counted
            with anyio.fail_after(LIMIT):
                while await asker.call("late") != 1:
                    await anyio.sleep(0.05)
            # A room on both nodes, one timeout: what arrived, and a timeout for the rest.
            answers = await asker.call("ask_room", "lobby", 1.5)
            assert answers == {
                uuids[0]: ["near", "ready?"],
                quick_uuid: ["quick", "ready?"],
                slow_uuid: "timeout",
            }
