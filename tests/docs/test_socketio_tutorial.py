"""The Socket.IO chat of the tutorial (``examples/socketio_chat/``) works as the page says.

Its own tests (``chat_server_tests.py``, shown in the tutorial) run here; then
the same server runs on asyncio, on trio and behind uvicorn over 127.0.0.1,
and python-socketio's ``AsyncClient`` chats through it, every wait bounded.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHAT = ROOT / "examples" / "socketio_chat"
sys.path.insert(0, str(CHAT))

sys.path.insert(0, str(ROOT / "tests" / "e2e" / "socketio"))

import chat_server  # noqa: E402
import chat_server_tests  # noqa: E402
from socketio_npm import NODE_DIR, node_with_socketio_client  # noqa: E402

#: Every wait on a socket, a thread or a process is bounded by this many seconds.
WAIT = 10.0
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

CHAT_TESTS = sorted(n for n in dir(chat_server_tests) if n.startswith("test_"))


def test_the_tutorial_has_its_tests() -> None:
    assert len(CHAT_TESTS) >= 4


@pytest.mark.parametrize("name", CHAT_TESTS)
def test_chat_example_tests_pass(name: str) -> None:
    test: Callable[[], None] = getattr(chat_server_tests, name)
    test()
    assert len(chat_server.hub.connections) == 0  # chat_client() left the hub empty


def test_a_blank_line_or_a_bad_room_is_answered_not_sent() -> None:
    with chat_server_tests.chat_client() as client:
        ann = client.socketio_connect(auth={"name": "ann"})
        bob = client.socketio_connect(auth={"name": "bob"})
        ann.receive_event("joined")
        assert bob.call("chat", "   ") == (0,)
        assert bob.call("chat", {"not": "text"}) == (0,)
        assert bob.call("join", "no spaces allowed") == ([],)
        assert "lobby" in bob.kws.rooms
        assert ann.pending == 0


def test_a_long_line_is_cut() -> None:
    with chat_server_tests.chat_client() as client:
        ann = client.socketio_connect(auth={"name": "ann"})
        bob = client.socketio_connect(auth={"name": "bob"})
        ann.receive_event("joined")
        bob.call("chat", "x" * 10_000)
        assert ann.receive_event("chat") == ("bob", "x" * 500)


# -- the same server over real sockets ----------------------------------------------------


async def _chat_with_python_socketio(port: int) -> None:
    """Two python-socketio clients chat through the server on ``port``.

    Ann is on WebSocket only (a refused upgrade fails her connect), Bob starts on
    HTTP long-polling and upgrades, as a browser does.
    """
    socketio: Any = importlib.import_module("socketio")  # a test extra, untyped

    got: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue()
    ann, bob = socketio.AsyncClient(), socketio.AsyncClient()

    async def on_chat(*args: Any) -> None:
        await got.put(args)

    ann.on("chat", on_chat)

    url = f"http://127.0.0.1:{port}"
    try:
        await ann.connect(url, auth={"name": "ann"}, transports=["websocket"], wait_timeout=WAIT)
        await bob.connect(url, auth={"name": "bob"}, wait_timeout=WAIT)
        assert await bob.call("join", "python", timeout=WAIT) == ["bob"]
        assert await ann.call("join", "python", timeout=WAIT) == ["ann", "bob"]
        assert await bob.call("chat", "hello over TCP", timeout=WAIT) == 1
        args = await asyncio.wait_for(got.get(), WAIT)
        # recovery is on: the server appends an offset, which python-socketio passes on
        assert args[:2] == ("bob", "hello over TCP")
    finally:
        await ann.disconnect()
        await bob.disconnect()


def _missing(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"CI needs this test to run: {reason}")
    pytest.skip(reason)


def _require(module: str) -> None:
    try:
        __import__(module)
    except ImportError:
        _missing(f"{module} is not installed (the test extra has it)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=WAIT) as response:
        body: bytes = response.read()
        return body


@contextmanager
def _in_thread(run: Callable[[], None], stop: Callable[[], None]) -> Iterator[None]:
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop()
        thread.join(WAIT)
        assert not thread.is_alive(), "the server did not stop"


def test_on_asyncio_with_python_socketio() -> None:
    _require("socketio")
    from ikisocket_adapters.asyncio import open_server  # noqa: PLC0415

    async def main() -> None:
        async with open_server(chat_server.hub, "127.0.0.1", 0, static=chat_server.static()) as s:
            page = await asyncio.to_thread(_get, f"http://127.0.0.1:{s.port}/")
            assert b"socket.io.min.js" in page
            await _chat_with_python_socketio(s.port)

    asyncio.run(asyncio.wait_for(main(), 4 * WAIT))
    assert len(chat_server.hub.connections) == 0


def test_on_trio_with_python_socketio() -> None:
    _require("socketio")
    _require("trio")
    import trio  # noqa: PLC0415

    from ikisocket_adapters.trio import serve  # noqa: PLC0415

    ready = threading.Event()
    ports: list[int] = []
    token: list[trio.lowlevel.TrioToken] = []
    cancel = trio.CancelScope()

    async def main() -> None:
        token.append(trio.lowlevel.current_trio_token())
        with cancel:
            async with trio.open_nursery() as nursery:
                server = await nursery.start(
                    partial(serve, chat_server.hub, "127.0.0.1", 0, static=chat_server.static())
                )
                ports.append(server.port)
                ready.set()

    with _in_thread(
        partial(trio.run, main),
        lambda: trio.from_thread.run_sync(cancel.cancel, trio_token=token[0]),
    ):
        assert ready.wait(WAIT), "the trio server did not start"
        asyncio.run(asyncio.wait_for(_chat_with_python_socketio(ports[0]), 4 * WAIT))


def test_behind_uvicorn_with_python_socketio() -> None:
    _require("socketio")
    _require("uvicorn")
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "chat_asgi:app", "--port", str(port)],
        cwd=CHAT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + WAIT
        while True:
            try:
                page = _get(f"http://127.0.0.1:{port}/")
                break
            except OSError:
                assert server.poll() is None, "uvicorn exited"
                assert time.monotonic() < deadline, "uvicorn did not start"
                time.sleep(0.1)
        assert b"socket.io.min.js" in page
        asyncio.run(asyncio.wait_for(_chat_with_python_socketio(port), 4 * WAIT))
    finally:
        server.terminate()
        _, err = server.communicate(timeout=WAIT)
    # uvicorn shuts down cleanly on SIGTERM, then some versions exit by the signal
    assert server.returncode in (0, -15), err.decode()[-2000:]
    # No upgrade was refused: uvicorn logs each WebSocket request as accepted or with
    # its status ('"WebSocket /socket.io/?...t=1796264987.4514403" 403'); the query's
    # timestamp may itself contain "403".
    upgrades = [line for line in err.decode().splitlines() if '"WebSocket /' in line]
    assert upgrades, err.decode()[-2000:]
    refused = [line for line in upgrades if not line.endswith("[accepted]")]
    assert not refused, refused


def test_the_pages_flow_with_socket_io_client() -> None:
    node = node_with_socketio_client(_missing)
    from ikisocket_adapters.asyncio import open_server  # noqa: PLC0415

    async def main() -> subprocess.CompletedProcess[str]:
        async with open_server(chat_server.hub, "127.0.0.1", 0) as s:
            return await asyncio.to_thread(
                subprocess.run,
                [node, "tutorial_chat.mjs", f"http://127.0.0.1:{s.port}"],
                cwd=NODE_DIR,
                capture_output=True,
                text=True,
                timeout=6 * WAIT,
                check=False,
            )

    done = asyncio.run(main())
    assert done.returncode == 0, done.stderr[-2000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen == {
        "refused": "pick a name: 1 to 32 letters, digits, '-' or '_'",
        "joined": ["bob", "lobby"],
        "delivered": 1,
        "chat": ["bob", "hi from node"],
        "bobIn": ["bob"],
        "annIn": ["ann", "bob"],
        "annTransport": "websocket",  # ann started on polling and upgraded
    }
