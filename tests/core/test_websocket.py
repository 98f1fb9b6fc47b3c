"""The per-connection handle (the seed's ``kws``): identity, attributes, listeners, verbs."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import pytest

from ikisocket_core import (
    BINARY,
    EVENT_CLOSE,
    EVENT_MESSAGE,
    TEXT,
    ConnectionState,
    EventPayload,
    Hub,
    LocalProtocolError,
    Request,
    Send,
    Websocket,
)
from ikisocket_core.testing import TestClient


def make_hub() -> Hub:
    numbers = itertools.count(1)
    hub = Hub(uuid_factory=lambda: f"c{next(numbers)}")
    hub.websocket("/ws/:id", lambda kws: None)
    return hub


def open_direct(hub: Hub, target: str = "/ws/x") -> Websocket:
    kws = hub.open(Request.from_target(target))
    assert isinstance(kws, Websocket)
    return kws


def test_handle_carries_what_the_request_carried() -> None:
    hub = make_hub()
    kws = open_direct(hub, "/ws/alice?lang=en")
    assert kws.uuid == "c1"
    assert kws.params == {"id": "alice"}
    assert kws.query == {"lang": "en"}
    assert kws.cookies == {}
    assert kws.subprotocol is None
    assert kws.conn is None
    assert kws.is_alive
    assert kws.state is ConnectionState.OPEN
    assert repr(kws) == "<Websocket c1 open>"


def test_locals_are_a_free_dict_not_copied_into_payloads() -> None:
    hub = make_hub()
    seen: list[tuple[object, bool]] = []

    @hub.on(EVENT_MESSAGE)
    def on_message(ep: EventPayload) -> None:
        seen.append((ep.kws.locals.get("db"), "db" in ep.socket_attributes))

    kws = open_direct(hub)
    kws.locals["db"] = "handle"
    hub.receive_message(kws, "x")
    assert seen == [("handle", False)]


def test_attributes_set_get_delete_and_view() -> None:
    kws = open_direct(make_hub())
    assert kws.get_attribute("missing") is None
    assert kws.get_attribute("missing", 0) == 0
    kws.set_attribute("user", "alice")
    kws.set_attribute("n", 1)
    view = kws.attributes
    assert dict(view) == {"user": "alice", "n": 1}
    with pytest.raises(TypeError):
        view["user"] = "mallory"  # type: ignore[index]
    kws.delete_attribute("n")
    kws.delete_attribute("never-set")
    assert dict(kws.attributes) == {"user": "alice"}


def test_payload_attributes_are_a_snapshot() -> None:
    hub = make_hub()
    payloads: list[EventPayload] = []

    @hub.on(EVENT_MESSAGE)
    def on_message(ep: EventPayload) -> None:
        payloads.append(ep)
        ep.kws.set_attribute("count", ep.kws.get_attribute("count", 0) + 1)
        ep.kws.delete_attribute("temp")

    kws = open_direct(hub)
    kws.set_attribute("temp", True)
    hub.receive_message(kws, "1")
    hub.receive_message(kws, "2")
    kws.set_attribute("later", "x")
    first, second = payloads
    assert dict(first.socket_attributes) == {"temp": True}
    assert dict(second.socket_attributes) == {"count": 1}
    assert kws.get_attribute("count") == 2
    with pytest.raises(TypeError):
        first.socket_attributes["x"] = 1  # type: ignore[index]


def test_connection_listeners_on_off_and_decorator() -> None:
    hub = make_hub()
    calls: list[str] = []
    kws = open_direct(hub)

    def a(ep: EventPayload) -> None:
        calls.append("a")

    @kws.on(EVENT_MESSAGE)
    def b(ep: EventPayload) -> None:
        calls.append("b")

    assert kws.on(EVENT_MESSAGE, a) is a
    kws.on("OWN", a)
    hub.receive_message(kws, "x")
    assert calls == ["b", "a"]
    kws.off(EVENT_MESSAGE, b)
    hub.receive_message(kws, "x")
    assert calls == ["b", "a", "a"]
    kws.off(EVENT_MESSAGE, a)  # the last one of the event
    kws.off(EVENT_MESSAGE, a)  # the event has none left: harmless
    kws.off("NEVER")
    hub.receive_message(kws, "x")
    kws.fire("OWN")
    assert calls == ["b", "a", "a", "a"]
    kws.off("OWN")
    kws.fire("OWN")
    assert calls == ["b", "a", "a", "a"]


def test_off_on_a_connection_without_listeners_is_harmless() -> None:
    kws = open_direct(make_hub())
    kws.off(EVENT_MESSAGE)
    kws.off(EVENT_MESSAGE, lambda ep: None)


def test_connection_listeners_do_not_run_for_other_connections() -> None:
    hub = make_hub()
    calls: list[str] = []
    a, b = open_direct(hub), open_direct(hub)
    a.on(EVENT_MESSAGE, lambda ep: calls.append(ep.socket_uuid))
    hub.receive_message(b, "x")
    hub.receive_message(a, "x")
    assert calls == ["c1"]


def test_connection_close_listener_runs_once_then_listeners_are_dropped() -> None:
    hub = make_hub()
    calls: list[int] = []
    kws = open_direct(hub)
    kws.on(EVENT_CLOSE, lambda ep: calls.append(1))
    kws.close()
    kws.close()
    hub.receive_disconnect(kws)
    kws.fire(EVENT_CLOSE)
    assert calls == [1]


def test_emit_kinds_and_text_validation() -> None:
    hub = make_hub()
    kws = open_direct(hub)
    kws.emit("text")
    kws.emit(b"raw", BINARY)
    kws.emit(b"x", 2)  # type: ignore[arg-type]  # the RFC 6455 opcodes work as kinds
    kws.emit("y", 1)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        kws.emit(b"\xc3\x28")
    assert hub.drain_actions() == [
        Send(targets=(kws,), data=b"text", kind=TEXT),
        Send(targets=(kws,), data=b"raw", kind=BINARY),
        Send(targets=(kws,), data=b"x", kind=BINARY),
        Send(targets=(kws,), data=b"y", kind=TEXT),
    ]


def test_verbs_on_a_handle_through_the_client() -> None:
    hub = make_hub()
    client = TestClient(hub)
    with client.websocket_connect("/ws/a") as a, client.websocket_connect("/ws/b") as b:
        a.kws.emit_to(b.uuid, "direct")
        a.kws.emit_to_list([b.uuid, a.uuid], "listed")
        a.kws.broadcast("others")
        a.kws.broadcast("everyone", except_self=False)
        a.kws.broadcast(b"bin", kind=BINARY)
        assert [a.receive_text() for _ in range(2)] == ["listed", "everyone"]
        assert [b.receive_text() for _ in range(4)] == ["direct", "listed", "others", "everyone"]
        assert b.receive_bytes() == b"bin"


def test_rooms_property_follows_join_and_leave() -> None:
    kws = open_direct(make_hub())
    assert kws.rooms == frozenset()
    kws.join("a")
    kws.join("b")
    kws.leave("a")
    assert kws.rooms == frozenset({"b"})


def test_is_alive_follows_the_life_of_the_connection() -> None:
    hub = make_hub()
    alive: list[bool] = []
    hub.on(EVENT_CLOSE, lambda ep: alive.append(ep.kws.is_alive))
    kws = open_direct(hub)
    assert kws.is_alive
    kws.close()
    assert alive == [False]
    assert not kws.is_alive


def test_close_refuses_bad_codes_and_long_reasons() -> None:
    kws = open_direct(make_hub())
    for code in (0, 999, 1004, 1005, 1006, 1015, 2999, 5000):
        with pytest.raises(LocalProtocolError):
            kws.close(code)
    with pytest.raises(LocalProtocolError):
        kws.close(1000, "é" * 62)  # 124 UTF-8 bytes
    assert kws.is_alive
    kws.close(1000, "é" * 61 + "x")  # 123 bytes: fine
    assert not kws.is_alive


def test_broadcast_keeps_the_seeds_positional_order() -> None:
    hub = make_hub()
    a, b = open_direct(hub), open_direct(hub)
    a.broadcast(b"others", True, BINARY)
    a.broadcast(b"all", False, BINARY)
    a.broadcast("text others")
    assert hub.drain_actions() == [
        Send(targets=(b,), data=b"others", kind=BINARY),
        Send(targets=(a, b), data=b"all", kind=BINARY),
        Send(targets=(b,), data=b"text others", kind=TEXT),
    ]


def test_a_kind_in_the_except_self_place_is_a_type_error() -> None:
    # Regression: kws.broadcast(b"\x00\x01", BINARY) sent TEXT to everyone but the sender,
    # BINARY landing in ``except_self`` (truthy). It is refused, never reinterpreted.
    hub = make_hub()
    a, _b = open_direct(hub), open_direct(hub)
    for wrong in (BINARY, TEXT, 2, 1, None, "yes"):
        with pytest.raises(TypeError, match="except_self is a bool"):
            a.broadcast(b"\x00\x01", wrong)  # type: ignore[arg-type]
    assert hub.drain_actions() == []


@pytest.mark.parametrize(
    ("kind", "error"),
    [
        *[(wrong, TypeError) for wrong in (True, False, "2", 2.0, None)],
        *[(wrong, ValueError) for wrong in (0, 3, -1)],
    ],
)
def test_a_bad_kind_is_refused_by_every_verb(kind: object, error: type[Exception]) -> None:
    hub = make_hub()
    a, b = open_direct(hub), open_direct(hub)
    verbs: list[Callable[[], None]] = [
        lambda: a.emit(b"x", kind),  # type: ignore[arg-type]
        lambda: a.emit_to(b.uuid, b"x", kind),  # type: ignore[arg-type]
        lambda: a.emit_to_list([b.uuid], b"x", kind),  # type: ignore[arg-type]
        lambda: a.broadcast(b"x", True, kind),  # type: ignore[arg-type]
        lambda: a.broadcast(b"x", kind=kind),  # type: ignore[arg-type]
        lambda: a.to("r").emit(b"x", kind),  # type: ignore[arg-type]
        lambda: hub.broadcast(b"x", kind),  # type: ignore[arg-type]
        lambda: hub.emit_to(a.uuid, b"x", kind),  # type: ignore[arg-type]
        lambda: hub.to("r").emit(b"x", kind),  # type: ignore[arg-type]
    ]
    for verb in verbs:
        with pytest.raises(error, match="message kind is TEXT"):
            verb()
    assert hub.drain_actions() == []


def test_uuid_assignment_on_a_closed_handle_only_renames_it() -> None:
    hub = make_hub()
    a = open_direct(hub)
    a.uuid = a.uuid  # the same: nothing to do
    a.close()
    a.uuid = "renamed"
    assert a.uuid == "renamed"
    assert "renamed" not in hub
    with pytest.raises(LocalProtocolError):
        a.uuid = ""


def test_rooms_and_own_listeners_are_released_after_the_terminal_event() -> None:
    hub = make_hub()
    a = open_direct(hub)
    seen: list[tuple[frozenset[str], bool]] = []
    a.join("r")
    a.on(EVENT_CLOSE, lambda ep: seen.append((ep.kws.rooms, ep.kws.listeners is not None)))
    a.close()
    assert seen == [(frozenset({"r"}), True)]  # still readable by terminal listeners
    assert (a.rooms, a.listeners) == (frozenset(), None)
    a.join("s")  # a no-op once closed
    a.leave("r")
    assert a.rooms == frozenset()
    assert hub.rooms == {}


def test_leaving_a_room_after_closing_keeps_the_hub_consistent() -> None:
    hub = make_hub()
    a = open_direct(hub)
    a.join("r")
    seen: list[frozenset[str]] = []

    def leave_on_close(ep: EventPayload) -> None:
        ep.kws.leave("r")  # the hub already dropped it from its rooms
        seen.append(ep.kws.rooms)

    a.on(EVENT_CLOSE, leave_on_close)
    a.close()
    assert seen == [frozenset()]
    assert hub.rooms == {}
