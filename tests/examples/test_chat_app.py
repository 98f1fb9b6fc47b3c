"""The chat example's behaviour, driven with TestClient: no sockets, no browser.

``examples/chat/app.py`` is not a package: it is loaded by file path, fresh for
each test (its user map is module state), exactly as ``ikisocket demo`` loads it.
"""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from ikisocket_core import EVENT_ERROR, EventPayload, Hub
from ikisocket_core.testing import (
    SocketIORefused,
    SocketIOTestSession,
    TestClient,
    WebSocketDisconnect,
    WebSocketTestSession,
)

APP = Path(__file__).resolve().parents[2] / "examples" / "chat" / "app.py"


@pytest.fixture
def chat() -> Iterator[ModuleType]:
    spec = importlib.util.spec_from_file_location("chat_app_under_test", APP)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    # A listener that raised would only be logged by the app: make it fail the test.
    errors: list[BaseException | None] = []
    module.hub.on(EVENT_ERROR, lambda ep: errors.append(ep.error))
    yield module
    assert errors == []


@pytest.fixture
def client(chat: ModuleType) -> TestClient:
    return TestClient(chat.hub)


def inbox(ws: WebSocketTestSession) -> list[dict[str, Any]]:
    """Every message waiting for ``ws``, parsed (each must be a JSON object)."""
    messages = []
    while ws.pending:
        message = ws.receive_json()
        assert isinstance(message, dict)
        assert set(message) == {"from", "to", "event", "data"}
        messages.append(message)
    return messages


def system(text: str, to: str = "") -> dict[str, Any]:
    return {"from": "server", "to": to, "event": "system", "data": text}


def presence(*users: str) -> dict[str, Any]:
    return {"from": "server", "to": "", "event": "presence", "data": list(users)}


def error(text: str, to: str) -> dict[str, Any]:
    return {"from": "server", "to": to, "event": "error", "data": text}


def room(name: str, *members: str) -> dict[str, Any]:
    return {"from": "server", "to": f"#{name}", "event": "room", "data": list(members)}


def connect(client: TestClient, *names: str) -> list[WebSocketTestSession]:
    """Connect users in order, then empty every inbox."""
    sessions = [client.websocket_connect(f"/ws/{name}") for name in names]
    for ws in sessions:
        inbox(ws)
    return sessions


# -- joining: the seed's greetings ----------------------------------------------------------


def test_newcomer_is_greeted_and_the_others_told_the_seed_way(
    chat: ModuleType, client: TestClient
) -> None:
    alice = client.websocket_connect("/ws/alice")
    assert inbox(alice) == [
        system(f"Hello user: alice with UUID: {alice.uuid}", to="alice"),
        presence("alice"),
    ]
    bob = client.websocket_connect("/ws/bob")
    assert inbox(alice) == [
        system(f"New user connected: bob and UUID: {bob.uuid}"),
        presence("alice", "bob"),
    ]
    assert inbox(bob) == [
        system(f"Hello user: bob with UUID: {bob.uuid}", to="bob"),
        presence("alice", "bob"),
    ]
    assert chat.clients == {"alice": alice.uuid, "bob": bob.uuid}
    assert bob.kws.get_attribute("user_id") == "bob"


def test_a_name_in_use_is_refused_without_disturbing_its_owner(
    chat: ModuleType, client: TestClient
) -> None:
    (alice,) = connect(client, "alice")
    impostor = client.websocket_connect("/ws/alice")
    with pytest.raises(WebSocketDisconnect) as closed:
        impostor.receive()
    assert closed.value.code == chat.NAME_TAKEN == 4000
    assert closed.value.reason == "alice is already connected"
    assert chat.clients == {"alice": alice.uuid}
    assert inbox(alice) == []  # no "left", no presence change
    alice.send_json({"to": "", "event": "", "data": "still me"})  # and it still works


@pytest.mark.parametrize("name", ["x" * 33, "no!bang", "with%20space", "%23room"])
def test_a_malformed_name_is_refused(chat: ModuleType, client: TestClient, name: str) -> None:
    (alice,) = connect(client, "alice")
    ws = client.websocket_connect(f"/ws/{name}")
    with pytest.raises(WebSocketDisconnect) as closed:
        ws.receive()
    assert closed.value.code == chat.BAD_NAME == 4001
    assert chat.clients == {"alice": alice.uuid}
    assert inbox(alice) == []


# -- messages -------------------------------------------------------------------------------


def test_a_seed_message_goes_to_its_recipient_only(client: TestClient) -> None:
    alice, bob, carol = connect(client, "alice", "bob", "carol")
    # Exactly what the seed's clients send; "from" is stamped by the server.
    alice.send_text('{"from":"mallory","to":"bob","event":"","data":"hello"}')
    assert inbox(bob) == [{"from": "alice", "to": "bob", "event": "message", "data": "hello"}]
    assert inbox(alice) == []
    assert inbox(carol) == []


@pytest.mark.parametrize("to", ["", "*"])
def test_a_message_to_everyone_reaches_all_but_the_sender(client: TestClient, to: str) -> None:
    alice, bob, carol = connect(client, "alice", "bob", "carol")
    bob.send_json({"to": to, "event": "message", "data": "hi all"})
    expected = [{"from": "bob", "to": to, "event": "message", "data": "hi all"}]
    assert inbox(alice) == expected
    assert inbox(carol) == expected
    assert inbox(bob) == []


def test_missing_fields_default_to_a_message_for_everyone(client: TestClient) -> None:
    alice, bob = connect(client, "alice", "bob")
    alice.send_json({"data": "short form"}, mode="binary")  # JSON in a binary frame works too
    assert inbox(bob) == [{"from": "alice", "to": "", "event": "message", "data": "short form"}]


def test_a_message_to_someone_offline_is_answered_with_an_error(client: TestClient) -> None:
    alice, bob = connect(client, "alice", "bob")
    alice.send_json({"to": "zed", "event": "", "data": "anyone?"})
    assert inbox(alice) == [error("zed is not online", to="alice")]
    assert inbox(bob) == []


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        ("not json", "messages are JSON"),
        ("[1, 2]", "messages are JSON objects"),
        ('{"to": "bob", "data": 42}', '"data" must be a string'),
        ('{"to": ["bob"], "data": "x"}', '"to" must be a string'),
        ('{"event": "close", "data": ""}', "the event name 'close' is reserved"),
        ('{"event": "disconnect", "data": ""}', "the event name 'disconnect' is reserved"),
        ('{"event": "presence", "data": ""}', "the event name 'presence' is reserved"),
        ('{"event": "system", "to": "bob", "data": "fake"}', "the event name 'system' is reserved"),
    ],
)
def test_a_malformed_message_is_refused_and_nothing_else_happens(
    chat: ModuleType, client: TestClient, raw: str, why: str
) -> None:
    alice, bob = connect(client, "alice", "bob")
    alice.send_text(raw)
    [reply] = inbox(alice)
    assert reply["event"] == "error"
    assert reply["data"].startswith(why)
    assert inbox(bob) == []
    assert chat.clients == {"alice": alice.uuid, "bob": bob.uuid}  # "close" fired nothing


def test_a_custom_event_is_fired_and_delivered_like_the_seed(
    chat: ModuleType, client: TestClient
) -> None:
    seen: list[tuple[str, bytes]] = []
    hub: Hub = chat.hub

    @hub.on("CUSTOM_EVENT")
    def record(ep: EventPayload) -> None:
        seen.append((ep.kws.get_attribute("user_id"), ep.data))

    alice, bob, carol = connect(client, "alice", "bob", "carol")
    alice.send_json({"from": "alice", "to": "bob", "event": "CUSTOM_EVENT", "data": "payload"})
    assert seen == [("alice", b"payload")]
    assert inbox(bob) == [
        {"from": "alice", "to": "bob", "event": "CUSTOM_EVENT", "data": "payload"}
    ]
    assert inbox(carol) == []


# -- rooms ----------------------------------------------------------------------------------


def test_rooms_join_talk_and_leave(client: TestClient) -> None:
    alice, bob, carol = connect(client, "alice", "bob", "carol")

    bob.send_json({"event": "join", "data": "lobby"})
    assert inbox(bob) == [system("bob joined #lobby", to="#lobby"), room("lobby", "bob")]
    carol.send_json({"event": "join", "data": "lobby"})
    joined = [system("carol joined #lobby", to="#lobby"), room("lobby", "bob", "carol")]
    assert inbox(bob) == joined
    assert inbox(carol) == joined
    assert inbox(alice) == []  # joining is a command: delivered to no one outside

    carol.send_json({"to": "#lobby", "event": "", "data": "room talk"})
    assert inbox(bob) == [
        {"from": "carol", "to": "#lobby", "event": "message", "data": "room talk"}
    ]
    assert inbox(carol) == []
    assert inbox(alice) == []

    alice.send_json({"to": "#lobby", "data": "let me in"})
    assert inbox(alice) == [error("join #lobby before sending to it", to="alice")]
    assert inbox(bob) == []

    carol.send_json({"event": "leave", "data": "lobby"})
    assert inbox(carol) == [system("carol left #lobby", to="#lobby")]
    assert inbox(bob) == [system("carol left #lobby", to="#lobby"), room("lobby", "bob")]
    carol.send_json({"event": "leave", "data": "lobby"})
    assert inbox(carol) == [error("you are not in #lobby", to="carol")]


def test_joining_twice_only_repeats_the_member_list(client: TestClient) -> None:
    alice, bob = connect(client, "alice", "bob")
    for ws in (alice, bob):
        ws.send_json({"event": "join", "data": "lobby"})
    inbox(alice)
    inbox(bob)
    bob.send_json({"event": "join", "data": "lobby"})
    assert inbox(bob) == [room("lobby", "alice", "bob")]
    assert inbox(alice) == []


def test_a_join_command_is_never_delivered_even_with_a_recipient(client: TestClient) -> None:
    alice, bob = connect(client, "alice", "bob")
    alice.send_json({"to": "bob", "event": "join", "data": "lobby"})
    assert inbox(bob) == []


@pytest.mark.parametrize("name", ["", "a b", "x" * 33, "#lobby"])
def test_a_malformed_room_name_is_refused(client: TestClient, name: str) -> None:
    (alice,) = connect(client, "alice")
    alice.send_json({"event": "join", "data": name})
    [reply] = inbox(alice)
    assert reply["event"] == "error"
    assert reply["data"].startswith("a room name is")
    assert client.hub.rooms == {}


# -- leaving --------------------------------------------------------------------------------


def test_a_user_who_disconnects_is_forgotten_and_the_others_told(
    chat: ModuleType, client: TestClient
) -> None:
    alice, bob, carol = connect(client, "alice", "bob", "carol")
    for ws in (bob, carol):
        ws.send_json({"event": "join", "data": "lobby"})
    inbox(bob)
    inbox(carol)

    bob.close(1001)
    assert chat.clients == {"alice": alice.uuid, "carol": carol.uuid}
    assert inbox(alice) == [system("User left: bob"), presence("alice", "carol")]
    assert inbox(carol) == [
        system("User left: bob"),
        presence("alice", "carol"),
        room("lobby", "carol"),
    ]
    # The name is free again.
    bob = client.websocket_connect("/ws/bob")
    assert inbox(bob)[0] == system(f"Hello user: bob with UUID: {bob.uuid}", to="bob")


def test_a_user_closed_by_the_server_is_forgotten_too(chat: ModuleType, client: TestClient) -> None:
    alice, bob = connect(client, "alice", "bob")
    client.hub.close(bob.uuid, 1008, "behave")
    with pytest.raises(WebSocketDisconnect):
        bob.receive()
    assert chat.clients == {"alice": alice.uuid}
    assert inbox(alice) == [system("User left: bob"), presence("alice")]


def test_a_shutdown_closes_everyone_without_farewells(chat: ModuleType, client: TestClient) -> None:
    alice, bob = connect(client, "alice", "bob")
    client.hub.stop_accepting()
    client.hub.close_all(1001, "server shutting down")
    for ws in (alice, bob):
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive()  # the close, with no "User left" before it
        assert closed.value.code == 1001
    assert chat.clients == {}


# -- the page -------------------------------------------------------------------------------


def test_static_serves_one_self_contained_page(
    chat: ModuleType, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(chat, "SOCKETIO_CLIENT", tmp_path / "not-installed.js")
    files = chat.static()
    assert set(files) == {"/", "/index.html"}
    content_type, body = files["/"]
    assert content_type == "text/html; charset=utf-8"
    page = body.decode("utf-8")
    assert page.lower().startswith("<!doctype html>")
    assert "<script>" in page
    assert "<style>" in page
    # Offline machines: nothing may be fetched from elsewhere (no CDN, no web fonts); the
    # one script it loads is socket.io-client from the demo itself, when it is installed.
    assert re.findall(r"""(?:src|href)\s*=\s*["'](?!data:|#)([^"']*)""", page) == [
        chat.SOCKETIO_CLIENT_URL
    ]
    assert "@import" not in page
    assert "url(" not in page


def test_the_readme_documents_every_server_event(chat: ModuleType) -> None:
    readme = (APP.parent / "README.md").read_text(encoding="utf-8")
    for event in sorted(chat.SERVER_EVENTS | chat.COMMANDS):
        assert f'"{event}"' in readme, event
    for code in (chat.NAME_TAKEN, chat.BAD_NAME):
        assert str(code) in readme
    # The README's examples are valid JSON in the wire format.
    for block in re.findall(r"```json\n(.*?)```", readme, re.S):
        for line in block.strip().splitlines():
            message = json.loads(line)
            assert set(message) <= {"from", "to", "event", "data"}


def test_the_tutorials_inline_example_runs(
    chat: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    tutorial = APP.parents[2] / "docs" / "tutorial" / "chat.md"
    blocks = re.findall(r"```python\n(.*?)```", tutorial.read_text(encoding="utf-8"), re.S)
    assert blocks
    monkeypatch.setitem(sys.modules, "app", chat)  # what `from app import hub` finds
    for block in blocks:
        exec(compile(block, str(tutorial), "exec"), {})


def test_static_serves_socketio_client_once_npm_installed_it(
    chat: ModuleType, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    script = tmp_path / "socket.io.min.js"
    script.write_bytes(b"/* socket.io-client */")
    monkeypatch.setattr(chat, "SOCKETIO_CLIENT", script)
    files = chat.static()
    assert files[chat.SOCKETIO_CLIENT_URL] == (
        "text/javascript; charset=utf-8",
        b"/* socket.io-client */",
    )
    assert set(files) == {"/", "/index.html", chat.SOCKETIO_CLIENT_URL}


# -- Socket.IO users ------------------------------------------------------------------------


def sio_inbox(session: SocketIOTestSession) -> list[dict[str, Any]]:
    """Every message waiting for a Socket.IO user: each is a ``message`` event with JSON text."""
    messages = []
    while session.pending:
        event = session.receive()
        assert event.name == "message"
        (text,) = event.args  # the virtual client takes recovery's offset off
        message = json.loads(text)
        assert set(message) == {"from", "to", "event", "data"}
        messages.append(message)
    return messages


def test_socketio_and_plain_users_share_the_chat(chat: ModuleType, client: TestClient) -> None:
    alice = client.socketio_connect(auth={"name": "alice"})
    assert alice.kws.uuid == chat.uuid_of("alice")  # found by direct messages from any node
    assert chat.clients == {"alice": alice.kws.uuid}
    greeting = sio_inbox(alice)
    assert greeting[0] == system(f"Hello user: alice with UUID: {alice.kws.uuid}", to="alice")
    assert greeting[1:] == [presence("alice")]

    (bob,) = connect(client, "bob")
    assert sio_inbox(alice)[-1] == presence("alice", "bob")

    # A room both kinds of user joined; then a direct message each way.
    bob.send_text(json.dumps({"event": "join", "data": "lobby"}))
    alice.send(json.dumps({"event": "join", "data": "lobby"}))
    assert inbox(bob)[-1] == room("lobby", "alice", "bob")
    alice.send(json.dumps({"to": "#lobby", "data": "hi room"}))
    said = {"from": "alice", "to": "#lobby", "event": "message", "data": "hi room"}
    assert inbox(bob) == [said]
    bob.send_text(json.dumps({"to": "alice", "data": "hi alice"}))
    assert sio_inbox(alice)[-1] == {
        "from": "bob",
        "to": "alice",
        "event": "message",
        "data": "hi alice",
    }

    # Alice leaves: Bob is told, as for a plain user.
    alice.close()
    assert inbox(bob) == [
        system("User left: alice"),
        presence("bob"),
        room("lobby", "bob"),
    ]
    assert chat.clients == {"bob": bob.kws.uuid}


@pytest.mark.parametrize(
    ("auth", "refusal"),
    [
        (None, "a user id is 1-32 letters, digits, '_', '.' or '-'"),
        ({"name": "no spaces"}, "a user id is 1-32 letters, digits, '_', '.' or '-'"),
        ({"name": 7}, "a user id is 1-32 letters, digits, '_', '.' or '-'"),
        ({"name": "bob"}, "bob is already connected"),
    ],
)
def test_socketio_names_are_checked(
    chat: ModuleType, client: TestClient, auth: dict[str, Any] | None, refusal: str
) -> None:
    (bob,) = connect(client, "bob")
    with pytest.raises(SocketIORefused) as refused:
        client.socketio_connect(auth=auth)
    assert refused.value.message == refusal
    assert inbox(bob) == []  # nobody was announced, and nothing was freed
    assert chat.clients == {"bob": bob.kws.uuid}
