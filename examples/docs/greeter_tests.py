"""Unit tests of ``greeter.py``: no sockets, no event loop, no sleeping."""

from __future__ import annotations

import pytest
from greeter import hub

from ikisocket_core.testing import TestClient, WebSocketDisconnect, WebSocketRejected


def test_greets_by_name() -> None:
    client = TestClient(hub)
    with client.websocket_connect("/ws/alice") as ws:
        assert ws.receive_text() == "hello, alice"


def test_answers_json_with_the_query() -> None:
    client = TestClient(hub)
    with client.websocket_connect("/ws/bob?room=lobby") as ws:
        ws.receive_text()  # the greeting
        ws.send_json({"type": "whoami"})
        assert ws.receive_json() == {"name": "bob", "room": "lobby"}


def test_reverses_binary_messages() -> None:
    client = TestClient(hub)
    with client.websocket_connect("/ws/carol") as ws:
        ws.receive_text()
        ws.send_bytes(b"\x01\x02\x03")
        assert ws.receive_bytes() == b"\x03\x02\x01"


def test_quit_closes_with_4000() -> None:
    client = TestClient(hub)
    with client.websocket_connect("/ws/dave") as ws:
        ws.receive_text()
        ws.send_json({"type": "quit"})
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_text()
        assert closed.value.code == 4000


def test_idle_connections_are_closed() -> None:
    client = TestClient(hub)
    with client.websocket_connect("/ws/erin") as ws:
        ws.receive_text()
        client.advance(59)  # the fake clock: nothing sleeps
        assert not ws.closed
        client.advance(2)
        assert ws.close_code == 1001


def test_unknown_paths_are_refused() -> None:
    client = TestClient(hub)
    with pytest.raises(WebSocketRejected) as refused:
        client.websocket_connect("/nope")
    assert refused.value.status == 404


def test_clients_that_stop_answering_pings_are_dropped() -> None:
    client = TestClient(hub, ping_interval=10, ping_timeout=5)
    with client.websocket_connect("/ws/frank") as ws:
        ws.receive_text()
        client.advance(25)  # two pings, both answered by the virtual client
        assert not ws.closed
        ws.auto_pong = False  # now it goes silent
        client.advance(15)  # a ping at 30, no pong by 35
        assert ws.close_code == 1011


def test_oversized_messages_are_refused_with_1009() -> None:
    client = TestClient(hub, max_message_size=1024)
    with client.websocket_connect("/ws/grace") as ws:
        ws.receive_text()
        ws.send_text("x" * 2000)
        assert ws.close_code == 1009
