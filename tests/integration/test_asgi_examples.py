"""The ASGI recipes of ``examples/asgi/`` (shown in docs/howto/asgi.md) work as documented.

Each example is imported from its file and driven with Starlette's
``TestClient`` (in process, lifespan included); the FastAPI one is also served
by a real uvicorn on 127.0.0.1 and used with the ``websockets`` client.
"""

from __future__ import annotations

import importlib.util
import json
import time
import urllib.request
from types import ModuleType

import pytest
from servers import LAUNCHERS, ROOT, launch
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect
from websockets.sync.client import connect

EXAMPLES = ROOT / "examples" / "asgi"
LIMIT = 10.0


def load(name: str) -> ModuleType:
    """Import ``examples/asgi/<name>.py`` afresh (each test gets its own hub)."""
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_echo_example_keeps_text_and_binary() -> None:
    example = load("echo_asgi")
    with TestClient(example.app) as client, client.websocket_connect("/echo") as ws:
        assert ws.receive_text() == "welcome"
        ws.send_text("héllo")
        assert ws.receive_text() == "héllo"
        ws.send_bytes(b"\x00\xff")
        assert ws.receive_bytes() == b"\x00\xff"
    assert client.get("/echo").status_code == 426
    assert client.get("/").status_code == 404


def test_starlette_example_routes_coexist() -> None:
    example = load("starlette_app")
    with TestClient(example.app) as client:
        with client.websocket_connect("/ws/lobby") as a, client.websocket_connect("/ws/lobby") as b:
            assert a.receive_text() == "joined lobby"
            assert b.receive_text() == "joined lobby"
            page = client.get("/")
            assert (page.status_code, page.text) == (200, "2 connected, rooms: ['lobby']")
            a.send_text("hi room")
            assert b.receive_text() == "hi room"
        with pytest.raises(WebSocketDisconnect), client.websocket_connect("/elsewhere"):
            pass  # Starlette's own router refuses paths it does not route


def test_fastapi_example_pushes_from_an_http_endpoint() -> None:
    example = load("fastapi_app")
    with TestClient(example.app) as client:
        with client.websocket_connect("/realtime/chat/alice") as alice:
            assert client.get("/health").json() == {"connections": 1}
            answer = client.post("/announce", content=b"lunch is ready")
            assert answer.json() == {"delivered_to": 1}
            assert alice.receive_text() == "announcement: lunch is ready"
            alice.send_text("coming")
            assert alice.receive_text() == "alice: coming"
        # The hub's routes live below the mount point only.
        assert client.get("/realtime/chat/alice").status_code == 426
        assert client.get("/chat/alice").status_code == 404


def test_wrapped_app_gets_the_rest_and_the_lifespan() -> None:
    example = load("wrap_app")
    assert example.state == {"started": False}
    with TestClient(example.app) as client:
        assert client.get("/status").json() == {"started": True, "connections": 0}
        with client.websocket_connect("/ws/alice") as ws:
            assert ws.receive_text().startswith("Hello user: alice with UUID: ")
            assert client.get("/status").json()["connections"] == 1
    assert example.state == {"started": False}


@pytest.mark.integration
def test_fastapi_example_on_a_real_uvicorn() -> None:
    launcher = LAUNCHERS["uvicorn-websockets"]
    with launch(launcher, app="fastapi_app:app", pythonpath=[EXAMPLES]) as server:
        base = f"ws://127.0.0.1:{server.port}/realtime/chat"
        with connect(f"{base}/alice", open_timeout=LIMIT) as alice:
            with connect(f"{base}/bob", open_timeout=LIMIT) as bob:
                assert alice.recv(timeout=LIMIT) == "bob joined"
                request = urllib.request.Request(
                    f"{server.http_url}/announce", data=b"hello all", method="POST"
                )
                with urllib.request.urlopen(request, timeout=LIMIT) as response:
                    assert json.load(response) == {"delivered_to": 2}
                assert alice.recv(timeout=LIMIT) == "announcement: hello all"
                assert bob.recv(timeout=LIMIT) == "announcement: hello all"
            # bob's leaving reaches the hub a moment after his close handshake.
            deadline = time.monotonic() + LIMIT
            while health(server.http_url) != {"connections": 1}:
                assert time.monotonic() < deadline, health(server.http_url)
                time.sleep(0.02)


def health(root: str) -> object:
    with urllib.request.urlopen(f"{root}/health", timeout=LIMIT) as response:
        return json.load(response)
