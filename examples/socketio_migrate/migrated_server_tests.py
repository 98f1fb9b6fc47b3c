"""Testing ``migrated_server.py`` with no network (python-socketio has no such client)."""

from __future__ import annotations

import pytest
from migrated_server import hub

from ikisocket_core.testing import SocketIORefused, TestClient


# [start:tests]
def test_a_known_token_is_welcomed_and_can_add() -> None:
    client = TestClient(hub)
    with client.socketio_connect(auth={"token": "t0ken-ann"}) as ann:
        assert ann.receive_event("welcome") == ("ann",)
        assert ann.call("add", 2, 3) == (5,)
        assert ann.call("my event") == ("ann", ann.uuid)


def test_an_unknown_token_is_refused() -> None:
    client = TestClient(hub)
    with pytest.raises(SocketIORefused, match="authentication failed") as refused:
        client.socketio_connect(auth={"token": "guess"})
    assert refused.value.data == {"retry": False}


# [end:tests]


def test_rooms_skip_the_sender_or_not() -> None:
    client = TestClient(hub)
    with (
        client.socketio_connect(auth={"token": "t0ken-ann"}) as ann,
        client.socketio_connect(auth={"token": "t0ken-bob"}) as bob,
    ):
        ann.emit("enter", "python")
        bob.emit("enter", "python")
        assert ann.receive_event("welcome") == ("ann",)
        assert ann.receive_event("entered") == ("bob",)
        assert bob.receive_event("welcome") == ("bob",)
        assert bob.pending == 0  # skip_sid: bob is not told about himself
        bob.emit("shout", "python", "hello")
        assert ann.receive_event("shouted") == ("hello",)
        assert bob.receive_event("shouted") == ("hello",)
        ann.emit("leave", "python")
        bob.emit("shout", "python", "still there?")
        assert ann.pending == 0


def test_the_admin_namespace_has_its_own_listeners() -> None:
    client = TestClient(hub)
    with client.socketio_connect(auth={"token": "t0ken-ann"}) as ann:
        admin = ann.connect("/admin", auth={"token": "t0ken-ann"})
        assert admin.call("stats") == ({"online": 1},)
        assert ann.call("stats") == ()  # no "stats" listener on "/": an empty ack
