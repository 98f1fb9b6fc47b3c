"""Testing the Socket.IO app of ``socketio_chat.py`` with no network."""

from __future__ import annotations

from typing import Any

from socketio_chat import hub

from ikisocket_core.testing import TestClient


def test_chat_is_acknowledged_and_reaches_the_room() -> None:
    client = TestClient(hub)
    ann = client.socketio_connect()
    bob = client.socketio_connect()
    assert bob.call("chat", "lobby", "hi") == ("delivered",)  # bob joins the lobby
    assert ann.call("chat", "lobby", "hello bob") == ("delivered",)
    assert bob.receive_event("chat") == ("hello bob",)


def test_the_server_asks_for_an_ack() -> None:
    client = TestClient(hub)
    sio = client.socketio_connect()
    got: list[Any] = []
    sio.kws.emit_event("question", 1, ack=got.append, timeout=5)
    event = sio.receive()  # ReceivedEvent(name="question", args=(1,), ack_id=0)
    sio.ack(event, "answer")
    assert got == [("answer",)]
