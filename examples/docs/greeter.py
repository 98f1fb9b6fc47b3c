"""A small application to unit-test with ``TestClient`` (see ``greeter_tests.py``)."""

from __future__ import annotations

import json

from ikisocket_core import BINARY, EVENT_MESSAGE, EventPayload, Hub, Websocket

# Connections that send nothing for a minute are closed with 1001.
hub = Hub(idle_timeout=60)


@hub.websocket("/ws/:name")
def on_open(kws: Websocket) -> None:
    kws.set_attribute("name", kws.params["name"])
    kws.emit(f"hello, {kws.params['name']}")


@hub.on(EVENT_MESSAGE)
def on_message(ep: EventPayload) -> None:
    if ep.kind is BINARY:
        ep.kws.emit(ep.data[::-1], BINARY)
        return
    request = ep.json()
    if request.get("type") == "whoami":
        answer = {"name": ep.socket_attributes["name"], "room": ep.kws.query.get("room")}
        ep.kws.emit(json.dumps(answer))
    elif request.get("type") == "quit":
        ep.kws.close(4000, "bye")
