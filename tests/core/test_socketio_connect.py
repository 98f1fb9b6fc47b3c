"""Socket.IO connect hooks that are ``async def``: the CONNECT is answered when they finish."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

import pytest

from ikisocket_core import (
    EVENT_CONNECT,
    EVENT_ERROR,
    ConnectRefused,
    Hub,
    Websocket,
)
from ikisocket_core._socketio._packets import SocketPacket, SocketType
from ikisocket_core.testing import SocketIORefused, SocketIOTestSession, TestClient


def guarded_hub() -> tuple[Hub, list[str]]:
    """A hub whose ``/private`` namespace has an ``async def`` hook, and its ``connect`` log."""
    numbers = iter(range(1, 1000))
    hub = Hub(uuid_factory=lambda: f"c{next(numbers)}")
    sio = hub.socketio()

    @sio.before_connect(namespace="/private")
    async def guard(kws: Websocket) -> bool | None:
        await asyncio.sleep(0)
        token = kws.auth.get("token")
        if token == "raise":
            raise ConnectRefused("bad token", {"retry": False})
        if token == "boom":
            raise RuntimeError("hook bug")
        if token == "no":
            return False
        kws.set_attribute("user", token)
        return None

    connected: list[str] = []
    hub.on(EVENT_CONNECT, lambda ep: connected.append(ep.kws.uuid), namespace="/private")
    return hub, connected


def test_an_async_hook_accepts_or_refuses_like_a_sync_one() -> None:
    hub, connected = guarded_hub()
    client = TestClient(hub, run_async=asyncio.run)
    sio = client.socketio_connect()
    for token, message, data in (
        ("raise", "bad token", {"retry": False}),
        ("boom", "internal server error", None),
        ("no", "Connection refused", None),
    ):
        with pytest.raises(SocketIORefused) as caught:
            sio.connect("/private", auth={"token": token})
        assert (caught.value.message, caught.value.data) == (message, data)
    assert connected == []
    private = sio.connect("/private", auth={"token": "ann"})
    assert private.kws.get_attribute("user") == "ann"
    assert connected == [private.uuid]
    assert private.call("anything") == ()  # a live namespace connection


class Deferred:
    """A ``run_async`` that keeps the handlers for the test to run (or not) later."""

    def __init__(self) -> None:
        self.waiting: list[Coroutine[Any, Any, None]] = []

    def __call__(self, coroutine: Coroutine[Any, Any, None]) -> None:
        self.waiting.append(coroutine)

    def handler(self) -> Any:
        """The hub's handler inside the oldest coroutine waiting."""
        coroutine: Any = self.waiting[0]
        return coroutine.cr_frame.f_locals["awaitable"]

    def run(self, client: TestClient) -> None:
        while self.waiting:
            asyncio.run(self.waiting.pop(0))
        client.pump()


def ask(sio: SocketIOTestSession, token: str) -> None:
    sio._wire.write(
        SocketPacket(type=SocketType.CONNECT, namespace="/private", data={"token": token})
    )


def test_the_connect_is_answered_when_the_hook_finishes_and_only_once() -> None:
    hub, connected = guarded_hub()
    deferred = Deferred()
    client = TestClient(hub, run_async=deferred)
    sio = client.socketio_connect()
    ask(sio, "ann")
    ask(sio, "ann")  # socket.io-client repeats it when connect() is called again meanwhile
    assert sio._wire.take("/private") is None  # not answered while the hook runs
    assert len(deferred.waiting) == 1
    deferred.run(client)
    answer = sio._wire.take("/private")
    assert answer is not None
    assert answer.type is SocketType.CONNECT
    assert sio._wire.take("/private") is None
    assert connected == [answer.data["sid"]]


def test_a_client_that_leaves_while_the_hook_runs_never_connects() -> None:
    hub, connected = guarded_hub()
    deferred = Deferred()
    client = TestClient(hub, run_async=deferred)
    sio = client.socketio_connect()
    ask(sio, "ann")
    sio.ws.abort()
    deferred.run(client)
    assert connected == []
    assert len(hub.connections) == 0


def test_a_session_waiting_on_a_hook_still_times_out() -> None:
    hub, connected = guarded_hub()
    deferred = Deferred()
    client = TestClient(hub, run_async=deferred)
    ws = client.websocket_connect("/socket.io/?EIO=4&transport=websocket")
    ws.receive()  # the open packet
    ws.send_text('40/private,{"token":"ann"}')
    client.advance(46)  # connect_timeout: no namespace joined
    assert ws.closed
    deferred.run(client)
    assert connected == []
    assert hub._sio is not None
    assert hub._sio.sessions == 0


def test_a_hook_the_driver_cancels_is_a_refusal() -> None:
    hub, connected = guarded_hub()
    errors: list[Any] = []
    hub.on(EVENT_ERROR, lambda ep: errors.append(ep.error), namespace="/private")
    deferred = Deferred()
    client = TestClient(hub, run_async=deferred)
    sio = client.socketio_connect()
    ask(sio, "ann")
    handler = deferred.handler()
    handler.timed_out(2.0)  # what the engine does at handler_timeout
    client.pump()
    answer = sio._wire.take("/private")
    assert answer is not None
    assert answer.type is SocketType.CONNECT_ERROR
    assert answer.data == {"message": "internal server error"}
    deferred.run(client)  # it finishes after all: ignored
    assert sio._wire.take("/private") is None
    assert connected == []


def test_a_uuid_taken_while_the_hook_ran_refuses() -> None:
    hub = Hub(uuid_factory=lambda: "same")
    sio_mount = hub.socketio()

    @sio_mount.before_connect(namespace="/private")
    async def slow(kws: Websocket) -> None:
        await asyncio.sleep(0)

    deferred = Deferred()
    client = TestClient(hub, run_async=deferred)
    ws = client.websocket_connect("/socket.io/?EIO=4&transport=websocket")
    ws.receive()
    ws.send_text("40/private,")
    other = client.socketio_connect()  # takes "same" meanwhile
    deferred.run(client)
    assert ws.receive_text() == '44/private,{"message":"this uuid is already connected"}'
    assert other.uuid == "same"


def test_a_hook_that_finishes_once_the_server_stops_accepting_refuses() -> None:
    hub, connected = guarded_hub()
    deferred = Deferred()
    client = TestClient(hub, run_async=deferred)
    sio = client.socketio_connect()
    ask(sio, "ann")
    hub.stop_accepting()
    deferred.run(client)
    answer = sio._wire.take("/private")
    assert answer is not None
    assert answer.data == {"message": "the server is not accepting connections"}
    assert connected == []
