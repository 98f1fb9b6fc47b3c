"""Connection-state recovery with a real socket.io-client (Node) over loopback.

An ``async def`` connect hook admits the client (and refuses a bad token).
The server drops the client's transport (no ``DISCONNECT``), keeps sending to
its room and to everyone, and socket.io-client reconnects by itself: it must
come back with ``socket.recovered`` true, the same id, its rooms and
attributes, and the missed events in order, then live ones. On asyncio and trio.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio
import pytest
import test_socketio_clients as clients
from test_socketio_clients import asyncio_server, run_node, trio_server

from ikisocket_core import ConnectRefused, EventPayload, Hub, Recovery, Websocket

pytestmark = pytest.mark.integration

#: The fixture that installs socket.io-client with npm (and fails under CI without node).
node = clients.node


def recovery_hub() -> tuple[Hub, list[tuple[str, str]]]:
    """A hub with recovery on, and the log of its ``connect``/``recover``/``disconnect``."""
    hub = Hub()
    sio = hub.socketio(recovery=Recovery(max_disconnection_duration=30), ping_interval=5)
    log: list[tuple[str, str]] = []
    for name in ("connect", "recover", "disconnect"):
        hub.on(name, lambda ep, name=name: log.append((name, ep.kws.uuid)))

    @sio.before_connect
    async def guard(kws: Websocket) -> None:
        await anyio.sleep(0.01)  # an async hook, on asyncio and trio alike
        if kws.auth.get("token") != "ok":
            raise ConnectRefused("bad token")
        kws.set_attribute("since", "hook")

    @hub.on("remember")
    def remember(ep: EventPayload) -> str:
        room, user = ep.args
        ep.kws.join(room)
        ep.kws.set_attribute("user", user)
        return "kept"

    @hub.on("tick-please")
    def tick(ep: EventPayload) -> None:
        hub.to("lobby").emit_event("tick", ep.args[0])

    @hub.on("drop-me")
    def drop(ep: EventPayload) -> None:
        sio.close_transport(ep.kws)
        hub.to("lobby").emit_event("tick", 2)  # missed: kept for the client
        hub.broadcast("while you were away")
        hub.to("lobby").emit_event("tick", 3)

    @hub.on("state")
    def state(ep: EventPayload) -> dict[str, Any]:
        kws = ep.kws
        return {
            "recovered": kws.recovered,
            "rooms": sorted(kws.rooms),
            "user": kws.get_attribute("user"),
            "since": kws.get_attribute("since"),
        }

    return hub, log


@pytest.mark.parametrize("adapter", ["asyncio", "trio"])
def test_socket_io_client_recovers_after_a_server_side_drop(node: str, adapter: str) -> None:
    hub, log = recovery_hub()
    serve: Callable[[Hub], Any] = asyncio_server if adapter == "asyncio" else trio_server
    with serve(hub) as port:
        seen = run_node(node, port, script="recovery.mjs")
    assert seen == {
        "refused": "bad token",
        "firstRecovered": False,
        "join": "kept",
        "disconnect": "transport close",
        "recovered": True,
        "sameId": True,
        "state": {"recovered": True, "rooms": ["lobby"], "user": "ann", "since": "hook"},
        "heard": [
            ["tick", 1],
            ["tick", 2],
            ["message", "while you were away"],
            ["tick", 3],
            ["tick", 9],
        ],
    }
    (uuid,) = {uuid for _, uuid in log}  # one connection all along
    assert log[:2] == [("connect", uuid), ("recover", uuid)]
