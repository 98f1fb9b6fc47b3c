"""Testing the Socket.IO chat of ``chat_server.py`` with no network."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from chat_server import hub, sio

from ikisocket_core.testing import SocketIORefused, TestClient


# [start:client]
@contextmanager
def chat_client() -> Iterator[TestClient]:
    """A test client on the chat's hub; every connection ends with the block."""
    client = TestClient(hub)
    try:
        yield client
    finally:
        hub.close_all()  # the hub is the module's: leave it empty for the next test


# [end:client]


# [start:refused]
def test_a_client_without_a_name_is_refused() -> None:
    with chat_client() as client, pytest.raises(SocketIORefused, match="pick a name"):
        client.socketio_connect(auth={"name": "<script>"})


# [end:refused]


# [start:chat]
def test_a_line_reaches_the_room_and_the_ack_counts_the_others() -> None:
    with chat_client() as client:
        ann = client.socketio_connect(auth={"name": "ann"})
        bob = client.socketio_connect(auth={"name": "bob"})
        assert ann.receive_event("joined") == ("bob", "lobby")
        assert bob.call("chat", "hi ann") == (1,)  # the ack: one other person got it
        assert ann.receive_event("chat") == ("bob", "hi ann")
        assert bob.pending == 0  # the sender does not get its own line back


# [end:chat]


# [start:rooms]
def test_rooms_keep_conversations_apart() -> None:
    with chat_client() as client:
        ann = client.socketio_connect(auth={"name": "ann"})
        bob = client.socketio_connect(auth={"name": "bob"})
        ann.receive_event("joined")  # bob, in the lobby
        assert bob.call("join", "python") == (["bob"],)
        assert ann.call("join", "python") == (["ann", "bob"],)
        assert bob.receive_event("joined") == ("ann", "python")
        carol = client.socketio_connect(auth={"name": "carol"})  # in the lobby
        assert ann.call("chat", "snakes!") == (1,)
        assert bob.receive_event("chat") == ("ann", "snakes!")
        assert carol.pending == 0


# [end:rooms]


# [start:recovery]
def test_a_dropped_client_comes_back_with_what_it_missed() -> None:
    with chat_client() as client:
        ann = client.socketio_connect(auth={"name": "ann"})
        bob = client.socketio_connect(auth={"name": "bob"})
        ann.receive_event("joined")
        sio.close_transport(ann.kws)  # as if ann's train entered a tunnel
        bob.call("chat", "are you there?")
        back = client.socketio_connect(auth={"name": "ann", "pid": ann.pid, "offset": ann.offset})
        assert back.recovered
        assert back.uuid == ann.uuid  # same connection, same room, same attributes
        assert back.receive_event("chat") == ("bob", "are you there?")


# [end:recovery]
