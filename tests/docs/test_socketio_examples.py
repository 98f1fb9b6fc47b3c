"""The Socket.IO examples of the reference (``examples/docs/socketio_chat*.py``) pass as shown."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from ikisocket_core.testing import SocketIORefused, TestClient

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples" / "docs"))

import socketio_chat_tests
from socketio_chat import hub


def test_the_examples_tests_pass() -> None:
    socketio_chat_tests.test_chat_is_acknowledged_and_reaches_the_room()
    socketio_chat_tests.test_the_server_asks_for_an_ack()


def test_the_admin_namespace_wants_the_token() -> None:
    client = TestClient(hub)
    sio = client.socketio_connect()
    with pytest.raises(SocketIORefused, match="not an admin"):
        sio.connect("/admin", auth={"token": "guess"})
    assert sio.connect("/admin", auth={"token": "s3cret"}).namespace == "/admin"
