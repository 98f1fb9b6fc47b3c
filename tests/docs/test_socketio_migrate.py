"""The how-to for python-socketio users (``examples/socketio_migrate/``) does what it says.

The example's own tests run under ``TestClient``; ``call()`` (an ack awaited in
an ``async def`` listener) and the ASGI app run on real sockets over 127.0.0.1
against python-socketio's ``AsyncClient``, every wait bounded.
"""

from __future__ import annotations

import asyncio
import importlib
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "examples" / "socketio_migrate"))

import migrated_server as server  # noqa: E402
import migrated_server_tests as server_tests  # noqa: E402

#: Every wait on a socket is bounded by this many seconds.
WAIT = 10.0
TESTS = sorted(n for n in dir(server_tests) if n.startswith("test_"))


def _socketio() -> Any:
    try:
        return importlib.import_module("socketio")  # a test extra, untyped
    except ImportError:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail("CI needs python-socketio (the test extra has it)")
        pytest.skip("python-socketio is not installed")


@pytest.mark.parametrize("name", TESTS)
def test_example_tests_pass(name: str) -> None:
    test: Callable[[], None] = getattr(server_tests, name)
    test()
    assert len(server.hub.connections) == 0


async def _delete(port: int, confirm: Callable[..., Any]) -> Any:
    """Connect a python-socketio client that answers ``confirm`` with ``confirm``; delete."""
    client = _socketio().AsyncClient()
    client.on("confirm", confirm)
    await client.connect(f"http://127.0.0.1:{port}", auth={"token": "t0ken-ann"}, wait_timeout=WAIT)
    try:
        return await client.call("delete", timeout=WAIT)
    finally:
        await client.disconnect()


def _serve_and(run: Callable[[int], Any]) -> Any:
    from ikisocket_adapters.asyncio import open_server  # noqa: PLC0415

    async def main() -> Any:
        async with open_server(server.hub, "127.0.0.1", 0) as s:
            return await run(s.port)

    return asyncio.run(asyncio.wait_for(main(), 4 * WAIT))


def test_call_waits_for_the_clients_answer() -> None:
    async def yes(question: str) -> bool:
        return question == "delete?"

    async def no(question: str) -> bool:
        return False

    assert _serve_and(lambda port: _delete(port, yes)) == "deleted"
    assert _serve_and(lambda port: _delete(port, no)) == "kept"


def test_call_times_out(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(server, "CONFIRM_TIMEOUT", 0.2)
    never = asyncio.Event()

    async def silent(question: str) -> bool:
        await never.wait()  # never answers; python-socketio sends no ack meanwhile
        return True

    assert _serve_and(lambda port: _delete(port, silent)) == "not deleted: no answer"
