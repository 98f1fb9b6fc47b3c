"""Event names, message kinds and the payload listeners receive."""

from __future__ import annotations

import dataclasses
import itertools
import json

import pytest

from ikisocket_core import (
    BINARY,
    EVENT_CLOSE,
    EVENT_CONNECT,
    EVENT_DISCONNECT,
    EVENT_ERROR,
    EVENT_MESSAGE,
    EVENT_PING,
    EVENT_PONG,
    RESERVED_EVENTS,
    TEXT,
    EventPayload,
    Hub,
    MessageKind,
    Websocket,
)
from ikisocket_core.testing import TestClient


def test_event_names_match_the_seed() -> None:
    names = (
        EVENT_MESSAGE,
        EVENT_PING,
        EVENT_PONG,
        EVENT_DISCONNECT,
        EVENT_CONNECT,
        EVENT_CLOSE,
        EVENT_ERROR,
    )
    assert names == ("message", "ping", "pong", "disconnect", "connect", "close", "error")
    assert frozenset(names) == RESERVED_EVENTS


def test_message_kinds_are_the_rfc_6455_opcodes() -> None:
    assert (TEXT, BINARY) == (MessageKind.TEXT, MessageKind.BINARY)
    assert (int(TEXT), int(BINARY)) == (1, 2)


def payloads(hub: Hub) -> list[EventPayload]:
    got: list[EventPayload] = []
    hub.on(EVENT_MESSAGE, got.append)
    return got


def test_payload_kind_text_json_of_text_and_binary_messages() -> None:
    numbers = itertools.count(1)
    hub = Hub(uuid_factory=lambda: f"c{next(numbers)}")
    hub.websocket("/ws", lambda kws: None)
    got = payloads(hub)
    with TestClient(hub).websocket_connect("/ws") as ws:
        ws.send_text('{"a": "é"}')
        ws.send_bytes(b"[1, 2]")
        ws.send_json({"b": None}, mode="binary")
        ws.send_bytes(b"\xff")
    text, binary, json_binary, raw = got
    assert (text.kind, text.text, text.json()) == (TEXT, '{"a": "é"}', {"a": "é"})
    assert text.data == '{"a": "é"}'.encode()
    assert (binary.kind, binary.json()) == (BINARY, [1, 2])
    assert (json_binary.kind, json_binary.json()) == (BINARY, {"b": None})
    assert raw.kind is BINARY
    with pytest.raises(UnicodeDecodeError):
        _ = raw.text
    with pytest.raises(ValueError):
        raw.json()
    with pytest.raises(json.JSONDecodeError):
        dataclasses.replace(text, data=b"not json").json()
    assert text.name == EVENT_MESSAGE
    assert text.socket_uuid == "c1"
    assert isinstance(text.kws, Websocket)
    assert text.error is None


def test_payload_defaults_and_immutability() -> None:
    hub = Hub()
    hub.websocket("/ws", lambda kws: None)
    with TestClient(hub).websocket_connect("/ws") as ws:
        ep = EventPayload(kws=ws.kws, name="CUSTOM", socket_uuid=ws.uuid, socket_attributes={})
        assert (ep.data, ep.kind, ep.error) == (b"", TEXT, None)
        with pytest.raises(dataclasses.FrozenInstanceError):
            ep.name = "other"  # type: ignore[misc]
        with pytest.raises(TypeError):
            EventPayload(ws.kws, "x", ws.uuid, {})  # type: ignore[call-arg]
