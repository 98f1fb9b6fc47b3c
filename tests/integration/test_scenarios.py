"""The shared scenarios: the same behaviour, checked with real clients, on every server.

Each test runs once per launcher registered in ``servers.py`` (the ``server``
fixture), against the app in ``apps.py``, with the ``websockets`` client over
127.0.0.1. User names are unique per test because one server process serves
the whole session.
"""

from __future__ import annotations

import json
import os
import socket
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from contextlib import AsyncExitStack
from typing import Any

import anyio
import anyio.to_thread
import pytest
from servers import LIMIT, RunningServer, client, recv
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.typing import Subprotocol
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, Request, TextMessage

pytestmark = [pytest.mark.integration, pytest.mark.anyio]


def unique(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}"


async def recv_text(ws: ClientConnection) -> str:
    message = await recv(ws)
    assert isinstance(message, str), message
    return message


async def recv_until(ws: ClientConnection, wanted: Callable[[str | bytes], bool]) -> str | bytes:
    """Skip messages (broadcasts from other scenarios' users) until ``wanted`` matches."""
    with anyio.fail_after(LIMIT):
        while True:
            message = await ws.recv()
            if wanted(message):
                return message


async def observed(observer: ClientConnection, event: str, user: str) -> dict[str, Any]:
    """The observer's next record of ``event`` for ``user``."""

    def match(message: str | bytes) -> bool:
        if not isinstance(message, str) or not message.startswith("{"):
            return False
        record = json.loads(message)
        return bool(record.get("event") == event and record.get("user") == user)

    record = json.loads(await recv_until(observer, match))
    assert isinstance(record, dict)
    return record


def welcome_uuid(message: str, user: str) -> str:
    prefix = f"Hello user: {user} with UUID: "
    assert message.startswith(prefix), message
    return message[len(prefix) :]


# -- the seed's chat -----------------------------------------------------------------------


async def test_connect_broadcasts_the_newcomer_and_welcomes_it(server: RunningServer) -> None:
    alice, bob = unique("alice"), unique("bob")
    async with client(server, f"/ws/{alice}") as a:
        alice_uuid = welcome_uuid(await recv_text(a), alice)
        async with client(server, f"/ws/{bob}") as b:
            # Its own broadcast would come first: the welcome proves except_self.
            bob_uuid = welcome_uuid(await recv_text(b), bob)
            assert await recv_text(a) == f"New user connected: {bob} and UUID: {bob_uuid}"
    assert alice_uuid != bob_uuid


async def test_emit_to_reaches_the_user_named_in_the_message(server: RunningServer) -> None:
    alice, bob = unique("alice"), unique("bob")
    async with client(server, f"/ws/{alice}") as a, client(server, f"/ws/{bob}") as b:
        await recv_text(a)
        await recv_until(a, lambda m: m == f"New user connected: {bob}" or bob in str(m))
        await recv_text(b)
        message = json.dumps({"from": alice, "to": bob, "event": "", "data": "hello"})
        await a.send(message)
        assert await recv_text(b) == message
        await a.send(json.dumps({"from": alice, "to": unique("nobody"), "data": "x"}))
        assert (await recv_text(a)).startswith("No such user: nobody-")


async def test_a_message_fires_its_custom_event(server: RunningServer) -> None:
    alice, bob = unique("alice"), unique("bob")
    async with client(server, f"/ws/{alice}") as a, client(server, f"/ws/{bob}") as b:
        await recv_text(a)
        await recv_text(b)
        message = json.dumps({"from": alice, "to": bob, "event": "CUSTOM_EVENT", "data": "hi"})
        await a.send(message)
        confirmation = await recv_until(a, lambda m: str(m).startswith("Custom event"))
        assert confirmation == f"Custom event - User: {alice} - Data: hi"
        assert await recv_text(b) == message


async def test_disconnect_and_close_are_observable(server: RunningServer) -> None:
    alice, carol = unique("alice"), unique("carol")
    async with client(server, "/observe") as observer:
        assert await recv_text(observer) == "observing"
        async with client(server, f"/ws/{alice}") as a:
            await recv_text(a)
            assert (await observed(observer, "connect", alice))["user"] == alice
            await a.close(4000, "leaving")
        record = await observed(observer, "disconnect", alice)
        if not server.launcher.has("close-code-lost"):
            assert record["code"] == 4000

        async with client(server, f"/closing/{carol}") as c:
            assert await recv_text(c) == "bye"
            with pytest.raises(ConnectionClosed) as closed:
                await recv(c)
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 4001
        if not server.launcher.has("no-close-reason"):
            assert closed.value.rcvd.reason == "server says bye"
        record = await observed(observer, "close", carol)
        assert record["code"] == 4001


# -- what the request carries, and refusals ------------------------------------------------


async def test_params_query_headers_cookies_and_subprotocol(server: RunningServer) -> None:
    headers = {"x-custom": "yes", "cookie": "a=1; b=two"}
    offered = [Subprotocol("chat.v2"), Subprotocol("chat.v1")]
    async with client(
        server, "/info/caf%C3%A9%2541?x=1&x=2&y=", additional_headers=headers, subprotocols=offered
    ) as ws:
        info = json.loads(await recv_text(ws))
        assert ws.subprotocol == "chat.v1"
    assert info == {
        "path": "/info/café%41",
        "params": {"name": "café%41"},
        "query": {"x": "1", "y": ""},
        "cookies": {"a": "1", "b": "two"},
        "custom": "yes",
        "subprotocol": "chat.v1",
    }


async def test_refusals_carry_their_status(server: RunningServer) -> None:
    real_status = not server.launcher.has("no-http-reject")

    def status(expected: int) -> int:
        return expected if real_status else 403

    with pytest.raises(InvalidStatus) as unknown:
        async with client(server, "/no/such/route"):
            pass
    assert unknown.value.response.status_code == status(404)
    with pytest.raises(InvalidStatus) as anonymous:
        async with client(server, "/private"):
            pass
    assert anonymous.value.response.status_code == status(401)
    if real_status:
        assert anonymous.value.response.body == b"token required"
    with pytest.raises(InvalidStatus) as wrong:
        async with client(server, "/private", additional_headers={"x-token": "guess"}):
            pass
    assert wrong.value.response.status_code == 403
    async with client(server, "/private", additional_headers={"x-token": "secret"}) as ws:
        assert await recv_text(ws) == "welcome to the private room"


def http_get(url: str) -> tuple[int, dict[str, str]]:
    try:
        with urllib.request.urlopen(url, timeout=LIMIT) as response:
            return response.status, dict(response.headers)
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers)


async def test_plain_http_gets_426_on_a_websocket_route_and_404_elsewhere(
    server: RunningServer,
) -> None:
    root = server.http_url + server.launcher.prefix
    status, headers = await anyio.to_thread.run_sync(http_get, f"{root}/echo")
    assert status == 426
    assert headers.get("upgrade", headers.get("Upgrade", "")).lower() == "websocket"
    status, _ = await anyio.to_thread.run_sync(http_get, f"{root}/no/such/route")
    assert status == 404


# -- messages ------------------------------------------------------------------------------


async def test_text_and_binary_messages_keep_their_kind(server: RunningServer) -> None:
    messages: list[str | bytes] = ["héllo ✓", b"\x00\xffbinary", "x" * 100_000, os.urandom(70_000)]
    if not server.launcher.has("no-empty-messages"):
        messages += ["", b""]
    async with client(server, f"/echo?id={unique('echo')}") as ws:
        for message in messages:
            await ws.send(message)
            assert await recv(ws) == message


async def test_fifty_clients_broadcasting_in_a_room_all_hear_each_other(
    server: RunningServer,
) -> None:
    room, count = unique("room"), 50
    heard: dict[int, set[str]] = {}
    everyone_joined = anyio.Event()
    joined = 0

    async def member(i: int) -> None:
        nonlocal joined
        async with client(server, f"/rooms/{room}?id=m{i}") as ws:
            assert await recv_text(ws) == f"joined {room}"
            joined += 1
            if joined == count:
                everyone_joined.set()
            await everyone_joined.wait()
            await ws.send(f"from {i}")
            heard[i] = {await recv_text(ws) for _ in range(count - 1)}

    with anyio.fail_after(LIMIT * 3):
        async with anyio.create_task_group() as tg:
            for i in range(count):
                tg.start_soon(member, i)
    for i in range(count):
        assert heard[i] == {f"from {j}" for j in range(count) if j != i}


async def test_an_async_listener_that_sleeps_does_not_stall_other_connections(
    server: RunningServer,
) -> None:
    gate = unique("gate")
    async with client(server, f"/sleepy/{gate}") as sleeper:
        await sleeper.send("first")
        await sleeper.send("second")
        # The sleeping listener waits for a message on another connection: if the
        # adapter stopped every connection while it sleeps, this would time out.
        async with client(server, f"/gate/{gate}") as opener:
            await opener.send("open")
            assert await recv_text(opener) == f"opened {gate}"
        # One connection's events stay in order.
        assert await recv_text(sleeper) == "woke: first"
        assert await recv_text(sleeper) == "woke: second"


async def test_a_client_that_stops_reading_does_not_delay_the_others(
    server: RunningServer,
) -> None:
    room, count, size = unique("flood"), 200, 64 * 1024
    payload = os.urandom(size - 4)
    # A tiny receive buffer and a one-frame queue: the slow client's socket
    # fills up almost at once and stays full.
    plain = {"compression": None, "max_size": None}
    async with AsyncExitStack() as stack:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        stack.callback(sock.close)  # the last thing to close, whoever owns it by then
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", server.port))
        sock.setblocking(False)
        observer = await stack.enter_async_context(client(server, "/observe"))
        assert await recv_text(observer) == "observing"
        slow = await stack.enter_async_context(
            client(server, f"/rooms/{room}?id=slow", sock=sock, max_queue=1, **plain)
        )
        fast = [
            await stack.enter_async_context(client(server, f"/rooms/{room}?id=fast{i}", **plain))
            for i in range(3)
        ]
        sender = await stack.enter_async_context(client(server, f"/rooms/{room}?id=sender"))
        for ws in [slow, *fast, sender]:
            assert await recv_text(ws) == f"joined {room}"

        # The sender stays at most ``window`` messages ahead of the fast readers
        # (they could not keep up with an unpaced sender either); the slow
        # client falls behind without bound.
        window = 16
        progress = [0] * len(fast)
        advanced = anyio.Event()

        async def read_all(k: int, ws: ClientConnection) -> None:
            nonlocal advanced
            for i in range(count):
                message = await recv(ws)
                assert isinstance(message, bytes)
                assert message[:4] == i.to_bytes(4, "big")
                progress[k] = i + 1
                advanced.set()

        with anyio.fail_after(LIMIT * 6):
            async with anyio.create_task_group() as tg:
                for k, ws in enumerate(fast):
                    tg.start_soon(read_all, k, ws)
                for i in range(count):
                    while min(progress) < i - window:
                        await advanced.wait()
                        advanced = anyio.Event()
                    await sender.send(i.to_bytes(4, "big") + payload)
        if not server.launcher.has("unbounded-send-buffer"):
            # The server's writes to it blocked, so its queue overflowed: reported, not fatal.
            record = await observed(observer, "error", "slow")
            assert record["error"] == "SlowConsumer"
        # The slow client is still connected (drop policy); leave without reading.
        slow.transport.abort()


class _RawClient:
    """A blocking socket with wsproto framing: its frames leave with ``sendall``, at once."""

    def __init__(self, port: int, path: str) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=LIMIT)
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.texts: list[str] = []
        self.accepted = False
        try:
            self.sock.sendall(self.ws.send(Request(host="127.0.0.1", target=path)))
            while not self.accepted:
                self._read()
        except BaseException:
            self.sock.close()
            raise

    def _read(self) -> None:
        data = self.sock.recv(65536)
        assert data, "the server closed the connection"
        self.ws.receive_data(data)
        for event in self.ws.events():
            if isinstance(event, AcceptConnection):
                self.accepted = True
            elif isinstance(event, TextMessage):
                self.texts.append(event.data)

    def frame(self, text: str) -> bytes:
        return self.ws.send(TextMessage(data=text))

    def receive(self, count: int) -> None:
        while len(self.texts) < count:
            self._read()


async def test_each_client_gets_its_messages_in_the_order_the_hub_sent_them(
    server: RunningServer,
) -> None:
    """Echoes and room broadcasts of three clients, sent in one go, arrive in the hub's order.

    In every round A and C ask for an echo and B for a broadcast to the room of
    the three, written with no await between them, so the server finds all three
    waiting at once (the asyncio and ASGI adapters hold a turn's echoes and write
    them together; a broadcast in the same turn must not overtake them). The hub
    numbers every message it sends; each client must receive its own in rising
    order, none missing.
    """
    room, rounds = unique("order"), 100
    path = f"{server.launcher.prefix}/order/{room}"
    a, c, b = [await anyio.to_thread.run_sync(_RawClient, server.port, path) for _ in "acb"]
    try:
        with anyio.fail_after(LIMIT * 3):
            for n in range(rounds):
                a.sock.sendall(a.frame("echo"))
                c.sock.sendall(c.frame("echo"))
                b.sock.sendall(b.frame("shout"))
                for echoed in (a, c):
                    await anyio.to_thread.run_sync(echoed.receive, 2 * (n + 1))
                await anyio.to_thread.run_sync(b.receive, n + 1)
    finally:
        for raw in (a, c, b):
            raw.sock.close()
    for raw, kinds in ((a, {"echo", "shout"}), (c, {"echo", "shout"}), (b, {"shout"})):
        numbers = [int(text.split()[0]) for text in raw.texts]
        assert numbers == sorted(set(numbers)), raw.texts
        assert {text.split()[1] for text in raw.texts} == kinds
    assert len(b.texts) == rounds
