"""Real Socket.IO clients over loopback: socket.io-client in Node and python-socketio.

The Node client is installed from npm at test time into the git-ignored
``tests/e2e/socketio/node_modules`` (``package.json`` pins it). Without
``node`` or ``npm`` the Node tests skip, except under CI (``CI=true``), where
they fail. Every wait is bounded: the server runs in a thread, each client
run has a timeout.
"""

from __future__ import annotations

import asyncio
import gc
import importlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
from socketio_app import make_hub

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e" / "socketio"))
from socketio_npm import NODE_DIR, node_with_socketio_client

from ikisocket_adapters import asyncio as asyncio_adapter
from ikisocket_adapters import trio as trio_adapter
from ikisocket_core import Hub

pytestmark = pytest.mark.integration

#: Seconds any one client run may take.
RUN_TIMEOUT = 60


def _missing(reason: str) -> None:
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"CI needs the Socket.IO client tests to run: {reason}")
    pytest.skip(reason)


def _import(name: str) -> Any:
    try:
        return importlib.import_module(name)
    except ImportError:
        _missing(f"{name} is not installed (the test extra has it)")


@pytest.fixture(scope="module")
def node() -> str:
    """``node``, with socket.io-client installed next to the scenario."""
    return node_with_socketio_client(_missing)


@contextmanager
def asyncio_server(hub: Hub) -> Iterator[int]:
    """Serve ``hub`` with the asyncio adapter in a thread; yield its port."""
    ready = threading.Event()
    port: list[int] = []
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()

    async def main() -> None:
        async with asyncio_adapter.open_server(hub, "127.0.0.1", 0) as server:
            port.append(server.port)
            ready.set()
            await stop.wait()

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    try:
        assert ready.wait(10), "the asyncio server did not start"
        yield port[0]
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(10)
        loop.close()


@contextmanager
def trio_server(hub: Hub) -> Iterator[int]:
    """Serve ``hub`` with the trio adapter in a thread; yield its port."""
    ready = threading.Event()
    port: list[int] = []
    token: list[trio.lowlevel.TrioToken] = []
    cancel = trio.CancelScope()

    async def main() -> None:
        token.append(trio.lowlevel.current_trio_token())
        with cancel:
            async with trio_adapter.open_server(hub, "127.0.0.1", 0) as server:
                port.append(server.port)
                ready.set()
                await trio.sleep_forever()

    thread = threading.Thread(target=trio.run, args=(main,), daemon=True)
    thread.start()
    try:
        assert ready.wait(10), "the trio server did not start"
        yield port[0]
    finally:
        trio.from_thread.run_sync(cancel.cancel, trio_token=token[0])
        thread.join(10)


@contextmanager
def uvicorn_server(hub: Hub) -> Iterator[int]:
    """Serve ``hub`` with the ASGI adapter behind uvicorn (lifespan on) in a thread."""
    uvicorn = _import("uvicorn")
    from ikisocket_adapters.asgi import asgi_app  # noqa: PLC0415

    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(128)
    config = uvicorn.Config(
        asgi_app(hub), ws="wsproto", lifespan="on", log_level="warning", access_log=False
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    try:
        for _ in range(500):
            if server.started:
                break
            time.sleep(0.02)
        assert server.started, "uvicorn did not start"
        yield int(listener.getsockname()[1])
    finally:
        server.should_exit = True
        thread.join(10)
        listener.close()


SERVERS: dict[str, Callable[[Hub], Any]] = {
    "asyncio": asyncio_server,
    "trio": trio_server,
    "uvicorn": uvicorn_server,
}


def run_node(
    node: str, port: int, mode: str = "websocket", script: str = "scenario.mjs"
) -> dict[str, Any]:
    done = subprocess.run(
        [node, script, f"http://127.0.0.1:{port}", mode],
        cwd=NODE_DIR,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        check=False,
    )
    assert done.stdout, done.stderr
    seen: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    assert done.returncode == 0, (seen, done.stderr[-2000:])
    return seen


EXPECTED = {
    "connect": {"ok": True},
    "idIsUuid": True,
    "echo": ["hi", 2],
    "binaryEcho": [{"bytes": [1, 2, 3]}, "tail"],
    "slow": "slow done",
    "serverBinary": [{"bytes": [0, 255]}, {"nested": [{"bytes": [1]}]}, {"bytes": [2, 3]}],
    "serverAck": [42, "thanks"],
    "bobConnect": {"ok": True},
    "joined": ["joined", "joined"],
    "room": ["hello lobby"],
    "roomEvent": [{"n": 1}],
    "broadcast": [["everyone!"], ["everyone!"]],
    "adminConnect": {"ok": True},
    "whoami": ["/admin", True],
    "unknown": {"ok": False, "message": "Invalid namespace", "data": None},
    "badToken": {"ok": False, "message": "bad token", "data": {"hint": "ask an admin"}},
    "goodToken": {"ok": True},
    "auth": {"token": "s3cret"},
    "kicked": ["io server disconnect", None],
}


#: The transport each mode of the scenario ends on.
FINAL_TRANSPORT = {"websocket": "websocket", "polling": "polling", "default": "websocket"}


@pytest.mark.parametrize("mode", ["websocket", "polling", "default"])
@pytest.mark.parametrize("adapter", ["asyncio", "trio", "uvicorn"])
def test_socket_io_client_in_node(node: str, adapter: str, mode: str) -> None:
    hub = make_hub()
    with SERVERS[adapter](hub) as port:
        seen = run_node(node, port, mode)
    assert seen == {**EXPECTED, "transport": FINAL_TRANSPORT[mode]}


@pytest.mark.parametrize("transport", ["websocket", "polling"])
def test_python_socketio_async_client(transport: str) -> None:
    socketio = _import("socketio")
    hub = make_hub()

    async def scenario(port: int) -> dict[str, Any]:
        seen: dict[str, Any] = {}
        client = socketio.AsyncClient(reconnection=False)
        questions: list[Any] = []

        async def question(n: int) -> tuple[int, str]:
            questions.append(n)
            return n * 2, "thanks"

        client.on("question", question)

        answers: asyncio.Queue[Any] = asyncio.Queue()
        client.on("answer-was", lambda *args: answers.put_nowait(list(args)))
        client.on("message", lambda data: answers.put_nowait(["message", data]))
        client.on("message", lambda data: answers.put_nowait(["message", data]), namespace="/admin")
        await client.connect(
            f"http://127.0.0.1:{port}",
            transports=[transport],
            namespaces=["/", "/admin"],
            wait_timeout=5,
        )
        seen["echo"] = await client.call("echo", ("hi", 2), timeout=5)
        seen["binary"] = await client.call("echo", b"\x01\x02", timeout=5)
        seen["slow"] = await client.call("slow", timeout=5)
        seen["whoami"] = await client.call("whoami", namespace="/admin", timeout=5)
        await client.emit("ask", 21)
        seen["serverAck"] = await asyncio.wait_for(answers.get(), 5)
        await client.emit("shout", "all of you")
        seen["broadcast"] = sorted(
            [json.dumps(await asyncio.wait_for(answers.get(), 5)) for _ in range(2)]
        )
        blobs: asyncio.Queue[Any] = asyncio.Queue()
        client.on("blob", lambda *args: blobs.put_nowait(list(args)))
        await client.emit("blob-please")
        seen["blob"] = await asyncio.wait_for(blobs.get(), 5)
        seen["binaryMessages"] = [await asyncio.wait_for(answers.get(), 5) for _ in range(2)]
        seen["transport"] = client.transport()
        await client.disconnect()
        seen["questions"] = questions
        return seen

    with asyncio_server(hub) as port:
        seen = asyncio.run(asyncio.wait_for(scenario(port), RUN_TIMEOUT))
    assert seen == {
        "echo": ("hi", 2),
        "binary": b"\x01\x02",
        "slow": "slow done",
        "whoami": ("/admin", True),
        "serverAck": [42, "thanks"],
        "broadcast": [json.dumps(["message", "all of you"])] * 2,
        "blob": [b"\x00\xff", {"nested": [b"\x01"]}],
        "binaryMessages": [["message", b"\x02\x03"]] * 2,
        "questions": [21],
        "transport": transport,
    }
    assert hub.connections == ()


def test_a_plain_client_and_a_socket_io_client_share_rooms() -> None:
    socketio = _import("socketio")
    websockets = _import("websockets.asyncio.client")
    hub = make_hub()

    async def scenario(port: int) -> list[str]:
        client = socketio.AsyncClient(reconnection=False)
        heard: asyncio.Queue[str] = asyncio.Queue()
        client.on("message", heard.put_nowait)
        await client.connect(f"http://127.0.0.1:{port}", transports=["websocket"], wait_timeout=5)
        assert await client.call("join", "lobby", timeout=5) == "joined"
        async with websockets.connect(f"ws://127.0.0.1:{port}/ws") as plain:
            for _ in range(50):  # the plain client joins through the hub directly
                if hub.connections and len(hub.connections) == 2:
                    break
                await asyncio.sleep(0.02)
            for uuid in hub.connections:
                kws = hub.get(uuid)
                if kws.transport is None:
                    kws.join("lobby")
            await client.call("say", ("lobby", "from socket.io"), timeout=5)
            got_plain = await asyncio.wait_for(plain.recv(), 5)
        await client.disconnect()
        return [str(got_plain)]

    with asyncio_server(hub) as port:
        assert asyncio.run(asyncio.wait_for(scenario(port), RUN_TIMEOUT)) == ["from socket.io"]


def _ours_in_cycles() -> list[str]:
    """Collect what is in reference cycles; the names of this library's objects among it."""
    control: list[object] = []
    control.append(control)  # the test's own cycle: proof that the collector looked
    del control
    gc.set_debug(gc.DEBUG_SAVEALL)
    gc.collect()
    assert any(type(o) is list and o and o[0] is o for o in gc.garbage)
    return [
        type(o).__qualname__
        for o in gc.garbage
        if type(o).__module__.startswith(("ikisocket_core", "ikisocket_adapters"))
    ]


@pytest.mark.parametrize("end", ["client", "server", "dropped"])
@pytest.mark.parametrize("transport", ["websocket", "polling", "upgrade"])
def test_an_ended_socket_io_session_leaves_nothing_for_the_collector(
    transport: str, end: str
) -> None:
    # While a session is open its objects refer to each other: a namespace connection's
    # handle and the session's record of it, the Engine.IO session and its transport's
    # handle (and the probe of an upgrade), a polling transport and the session, the
    # session's timers and the acks it waits for. At the end every link goes: nothing of
    # the session waits in a reference cycle for the collector (off until the look).
    socketio = _import("socketio")
    hub = Hub()
    hub.socketio()
    answered: list[Any] = []
    ended: list[str] = []
    handles: list[Any] = []

    @hub.on("hello")
    def hello(ep: Any) -> None:
        handles.append(ep.kws)
        ep.kws.emit_event("question", 1, ack=answered.append, timeout=5)
        ep.kws.emit_event("unanswered", ack=answered.append, timeout=0.2)

    hub.on("disconnect", lambda ep: ended.append(ep.kws.uuid))
    hub.on("close", lambda ep: ended.append(ep.kws.uuid))  # (a server close)

    async def session(port: int) -> None:
        client = socketio.AsyncClient(reconnection=False)
        client.on("question", lambda n: n + 1)
        await client.connect(
            f"http://127.0.0.1:{port}",
            transports=["polling", "websocket"] if transport == "upgrade" else [transport],
            wait_timeout=5,
        )
        for _ in range(100):  # (an upgrade follows the connect)
            if transport != "upgrade" or client.transport() == "websocket":
                break
            await asyncio.sleep(0.02)
        await client.emit("hello")
        for _ in range(100):
            if len(answered) == 2:  # the answer, then the timeout
                break
            await asyncio.sleep(0.02)
        assert answered[0] == (2,)
        if end == "client":
            await client.disconnect()
        elif end == "server":
            handles.pop().close()
        else:  # the transport goes without a word (the session ends as a drop)
            await client.eio._reset()  # (its transport's close)
            if client.eio.ws is not None:
                await client.eio.ws.close()
            if client.eio.http is not None:
                await client.eio.http.close()
        for _ in range(250):
            if ended and not hub.connections:
                break
            await asyncio.sleep(0.02)
        assert len(ended) == 1
        handles.clear()
        if end != "client":
            await client.disconnect()

    async def scenario() -> None:
        async with asyncio_adapter.open_server(hub, "127.0.0.1", 0) as server:
            await session(server.port)  # (a first one: imports, caches)
            ended.clear()
            answered.clear()
            gc.collect()
            gc.disable()
            await session(server.port)
            for _ in range(10):
                await asyncio.sleep(0.02)
            assert _ours_in_cycles() == []

    try:
        asyncio.run(asyncio.wait_for(scenario(), RUN_TIMEOUT))
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
