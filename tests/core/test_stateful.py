"""Random sequences of opens, messages, emits, rooms and closes against a simple model.

The application under test interprets JSON commands from its clients (echo,
emit_to, broadcast, join, leave, room emit, close); the machine also drives the
hub directly, as a background job would. After every step the model (plain
dicts and sets) must agree with what each virtual client received, in order,
with the hub's registry and rooms, and with the terminal events fired.
"""

from __future__ import annotations

import itertools
import json
from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from ikisocket_core import (
    BINARY,
    EVENT_CLOSE,
    EVENT_DISCONNECT,
    EVENT_MESSAGE,
    TEXT,
    EventPayload,
    Hub,
    MessageKind,
    UnknownConnection,
    Websocket,
)
from ikisocket_core.testing import (
    NothingReceived,
    TestClient,
    WebSocketDisconnect,
    WebSocketTestSession,
)

ROOMS = ("red", "blue", "green")
Message = tuple[MessageKind, bytes]

texts = st.text(alphabet="abcé€ \x00", max_size=6)
kinds = st.sampled_from([TEXT, BINARY])
rooms = st.sampled_from(ROOMS)


class HubMachine(RuleBasedStateMachine):
    """One hub, one test client, and the model of what should happen."""

    def __init__(self) -> None:
        super().__init__()
        numbers = itertools.count(1)
        self.hub = Hub(uuid_factory=lambda: f"c{next(numbers)}")
        self.hub.websocket("/ws/:name", self.on_open)
        self.hub.on(EVENT_MESSAGE, self.on_message)
        self.hub.on("PING_ALL", lambda ep: ep.kws.emit(b"pinged", BINARY))
        self.hub.on(EVENT_CLOSE, self.on_terminal)
        self.hub.on(EVENT_DISCONNECT, self.on_terminal)
        self.client = TestClient(self.hub)
        # The model.
        self.sessions: dict[str, WebSocketTestSession] = {}  # every one ever opened
        self.live: list[str] = []  # in registration order
        self.rooms: dict[str, list[str]] = {}  # in joining order
        self.expected: dict[str, list[Message]] = {}
        self.expected_terminal: dict[str, list[str]] = {}
        # What the application saw.
        self.terminal: dict[str, list[str]] = {}

    # -- the application --------------------------------------------------------------------

    def on_open(self, kws: Websocket) -> None:
        kws.set_attribute("name", kws.params["name"])

    def on_terminal(self, ep: EventPayload) -> None:
        assert ep.socket_attributes["name"] == ep.socket_uuid
        self.terminal.setdefault(ep.socket_uuid, []).append(ep.name)

    def on_message(self, ep: EventPayload) -> None:
        command: dict[str, Any] = ep.json()
        kws = ep.kws
        op = command["op"]
        data = command.get("data", "").encode()
        kind = MessageKind(command.get("kind", TEXT))
        if op == "echo":
            kws.emit(data, kind)
        elif op == "emit_to":
            try:
                kws.emit_to(command["to"], data, kind)
            except UnknownConnection as error:
                kws.emit(f"unknown {error.uuid}")
        elif op == "broadcast":
            kws.broadcast(data, except_self=command["except_self"], kind=kind)
        elif op == "join":
            kws.join(command["room"])
        elif op == "leave":
            kws.leave(command["room"])
        elif op == "room":
            kws.to(command["room"]).emit(data, kind)
        elif op == "close":
            kws.close(command["code"])

    # -- model helpers ---------------------------------------------------------------------

    def expect(self, uuids: list[str], data: bytes, kind: MessageKind) -> None:
        for uuid in uuids:
            self.expected[uuid].append((kind, data))

    def send(self, uuid: str, **command: Any) -> None:
        self.sessions[uuid].send_text(json.dumps(command))

    def gone(self, uuid: str, event: str) -> None:
        self.live.remove(uuid)
        for members in self.rooms.values():
            if uuid in members:
                members.remove(uuid)
        self.rooms = {room: members for room, members in self.rooms.items() if members}
        self.expected_terminal[uuid] = [event]

    def pick(self, data: st.DataObject) -> str:
        return data.draw(st.sampled_from(self.live), label="connection")

    def any_uuid(self, data: st.DataObject) -> str:
        return data.draw(st.sampled_from([*self.sessions, "ghost"]), label="target")

    # -- rules -------------------------------------------------------------------------------

    @initialize()
    def start_empty(self) -> None:
        assert self.hub.connections == ()

    @rule()
    def open(self) -> None:
        uuid = f"c{len(self.sessions) + 1}"
        session = self.client.websocket_connect(f"/ws/{uuid}")
        assert session.uuid == uuid
        self.sessions[uuid] = session
        self.live.append(uuid)
        self.expected[uuid] = []
        self.expected_terminal[uuid] = []

    @precondition(lambda self: self.live)
    @rule(data=st.data(), text=texts, kind=kinds)
    def echo(self, data: st.DataObject, text: str, kind: MessageKind) -> None:
        uuid = self.pick(data)
        self.send(uuid, op="echo", data=text, kind=kind)
        self.expect([uuid], text.encode(), kind)

    @precondition(lambda self: self.live)
    @rule(data=st.data(), text=texts, kind=kinds)
    def kws_emit_to(self, data: st.DataObject, text: str, kind: MessageKind) -> None:
        sender, target = self.pick(data), self.any_uuid(data)
        self.send(sender, op="emit_to", to=target, data=text, kind=kind)
        if target in self.live:
            self.expect([target], text.encode(), kind)
        else:
            self.expect([sender], f"unknown {target}".encode(), TEXT)

    @rule(data=st.data(), text=texts, kind=kinds)
    def hub_emit_to(self, data: st.DataObject, text: str, kind: MessageKind) -> None:
        target = self.any_uuid(data)
        try:
            self.hub.emit_to(target, text, kind)
        except UnknownConnection:
            assert target not in self.live
        else:
            self.expect([target], text.encode(), kind)

    @rule(data=st.data(), text=texts)
    def hub_emit_to_list(self, data: st.DataObject, text: str) -> None:
        targets = data.draw(st.lists(st.sampled_from([*self.sessions, "ghost"]), max_size=4))
        self.hub.emit_to_list(targets, text)
        self.expect([u for u in dict.fromkeys(targets) if u in self.live], text.encode(), TEXT)

    @precondition(lambda self: self.live)
    @rule(data=st.data(), text=texts, kind=kinds, except_self=st.booleans())
    def kws_broadcast(
        self, data: st.DataObject, text: str, kind: MessageKind, except_self: bool
    ) -> None:
        sender = self.pick(data)
        self.send(sender, op="broadcast", data=text, kind=kind, except_self=except_self)
        targets = [u for u in self.live if not (except_self and u == sender)]
        self.expect(targets, text.encode(), kind)

    @rule(data=st.data(), text=texts, kind=kinds)
    def hub_broadcast(self, data: st.DataObject, text: str, kind: MessageKind) -> None:
        exclude = data.draw(st.none() | st.sampled_from([*self.sessions, "ghost"]))
        self.hub.broadcast(text, kind, exclude=exclude)
        self.expect([u for u in self.live if u != exclude], text.encode(), kind)

    @rule()
    def hub_fire(self) -> None:
        self.hub.fire("PING_ALL")
        self.expect(list(self.live), b"pinged", BINARY)

    @precondition(lambda self: self.live)
    @rule(data=st.data(), room=rooms)
    def join(self, data: st.DataObject, room: str) -> None:
        uuid = self.pick(data)
        self.send(uuid, op="join", room=room)
        members = self.rooms.setdefault(room, [])
        if uuid not in members:
            members.append(uuid)

    @precondition(lambda self: self.live)
    @rule(data=st.data(), room=rooms)
    def leave(self, data: st.DataObject, room: str) -> None:
        uuid = self.pick(data)
        self.send(uuid, op="leave", room=room)
        if uuid in self.rooms.get(room, []):
            self.rooms[room].remove(uuid)
            if not self.rooms[room]:
                del self.rooms[room]

    @precondition(lambda self: self.live)
    @rule(data=st.data(), room=rooms, text=texts, kind=kinds)
    def kws_room_emit(self, data: st.DataObject, room: str, text: str, kind: MessageKind) -> None:
        sender = self.pick(data)
        self.send(sender, op="room", room=room, data=text, kind=kind)
        members = [u for u in self.rooms.get(room, []) if u != sender]
        self.expect(members, text.encode(), kind)

    @rule(room=rooms, text=texts)
    def hub_room_emit(self, room: str, text: str) -> None:
        self.hub.to(room).emit(text)
        self.expect(list(self.rooms.get(room, [])), text.encode(), TEXT)

    @precondition(lambda self: self.live)
    @rule(data=st.data(), from_listener=st.booleans())
    def server_close(self, data: st.DataObject, from_listener: bool) -> None:
        uuid = self.pick(data)
        if from_listener:
            self.send(uuid, op="close", code=4000)
        else:
            self.hub.close(uuid, 4000)
        self.gone(uuid, EVENT_CLOSE)
        session = self.sessions[uuid]
        assert session.pending == len(self.expected[uuid])
        assert session.close_code == 4000

    @precondition(lambda self: self.live)
    @rule(data=st.data(), abort=st.booleans())
    def peer_disconnect(self, data: st.DataObject, abort: bool) -> None:
        uuid = self.pick(data)
        session = self.sessions[uuid]
        session.abort() if abort else session.close()
        self.gone(uuid, EVENT_DISCONNECT)
        self.expected[uuid] = []  # what was waiting is lost with the client

    # -- invariants -----------------------------------------------------------------------

    @invariant()
    def clients_received_what_the_model_expects(self) -> None:
        for uuid, session in self.sessions.items():
            got: list[Message] = []
            while True:
                try:
                    got.append(session.receive())
                except (NothingReceived, WebSocketDisconnect):
                    break
            if session.closed and uuid not in self.live and session.close_code is None:
                got = []  # the client went away itself: its inbox no longer matters
            assert got == self.expected[uuid], uuid
            self.expected[uuid] = []

    @invariant()
    def registry_and_rooms_match_the_model(self) -> None:
        assert list(self.hub.connections) == self.live
        assert len(self.hub) == len(self.live)
        assert self.hub.rooms == {room: tuple(m) for room, m in self.rooms.items()}
        for uuid in self.live:
            assert self.hub.get(uuid).rooms == {r for r, m in self.rooms.items() if uuid in m}

    @invariant()
    def each_connection_has_at_most_its_one_terminal_event(self) -> None:
        for uuid, events in self.expected_terminal.items():
            assert self.terminal.get(uuid, []) == events, uuid

    def teardown(self) -> None:
        for uuid in list(self.live):
            self.sessions[uuid].close()
            self.gone(uuid, EVENT_DISCONNECT)
        for uuid in self.sessions:
            assert len(self.terminal[uuid]) == 1, uuid
            assert self.terminal[uuid] == self.expected_terminal[uuid]
        assert (self.hub.connections, self.hub.rooms, len(self.hub)) == ((), {}, 0)
        assert self.hub.drain_actions() == []


HubMachine.TestCase.settings = settings(max_examples=100, stateful_step_count=30, deadline=None)
TestHubMachine = HubMachine.TestCase
