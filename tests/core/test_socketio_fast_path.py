"""The fast path for common Socket.IO packets agrees with the general decoder and encoder.

``parse_plain`` reads a text ``EVENT`` or ``ACK`` at a glance and
``encode_fields`` writes a packet from its fields without building it: on
any text, valid or not, the fast reading is either "ask the general decoder"
or exactly what the general decoder makes of it, and it fails only where the
general decoder fails too.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_socketio_packets import json_values, namespaces, packets, with_bytes

from ikisocket_core import EVENT_ERROR, EventPayload, Hub
from ikisocket_core._socketio._packets import (
    PacketError,
    SocketDecoder,
    SocketPacket,
    SocketType,
    dumps,
    encode_fields,
    encode_socket,
    parse_plain,
)
from ikisocket_core.testing import TestClient

SETTINGS = settings(max_examples=400, deadline=None)


def general(text: str) -> SocketPacket | None:
    return SocketDecoder(max_attachments=64, max_attachment_bytes=1_000_000).receive_text(text)


def assert_agrees(text: str) -> tuple[SocketType, str, Any, int | None] | None:
    """The fast reading of ``text`` is the general one, or none; it fails only where that fails."""
    try:
        fast = parse_plain(text)
    except PacketError:
        with pytest.raises(PacketError):
            general(text)
        return None
    if fast is not None:
        packet = general(text)
        assert packet is not None
        assert (packet.type, packet.namespace, packet.data, packet.id) == fast
    return fast


# Texts close to the grammar: type digits, namespaces, ids, commas, brackets, JSON pieces.
GRAMMAR = ["2", "3", "5", "1-", "/", "/chat", ",", "0", "7", "12", "[", "]", '"e"', "{", "}"]
ODDITIES = [":", " ", "\u0661", "\u00b2", "NaN", "null", "-", "e5", "1" * 16, "[" * 50, "x"]
pieces = st.sampled_from([*GRAMMAR, *ODDITIES])
near_grammar = st.lists(pieces, max_size=12).map("".join)


@SETTINGS
@given(text=st.one_of(near_grammar, st.text(max_size=40), st.text(alphabet='23/,[]"e0 ')))
def test_the_fast_reading_of_any_text_is_the_general_one_or_none(text: str) -> None:
    assert_agrees(text)


@SETTINGS
@given(packet=packets())
def test_every_text_event_and_ack_the_encoder_writes_takes_the_fast_path(
    packet: SocketPacket,
) -> None:
    text, attachments = encode_socket(packet)
    fast = assert_agrees(text)
    plain = packet.type in (SocketType.EVENT, SocketType.ACK) and not attachments
    assert (fast is not None) == plain
    if fast is not None:
        assert fast == (packet.type, packet.namespace, packet.data, packet.id)


@SETTINGS
@given(
    kind=st.sampled_from([SocketType.EVENT, SocketType.ACK]),
    namespace=namespaces,
    ack_id=st.integers(min_value=0, max_value=10**12),
    args=st.lists(with_bytes, max_size=4),
    name=st.text(max_size=10),
)
def test_encoding_fields_is_encoding_the_packet(
    kind: SocketType, namespace: str, ack_id: int, args: list[Any], name: str
) -> None:
    data = [name, *args] if kind is SocketType.EVENT else args
    packet = SocketPacket(type=kind, namespace=namespace, data=data, id=ack_id)
    assert encode_fields(kind, namespace, data, ack_id) == encode_socket(packet)


@SETTINGS
@given(items=st.lists(st.one_of(st.text(max_size=20), json_values), max_size=5))
def test_an_array_is_written_as_the_json_encoder_writes_it(items: list[Any]) -> None:
    text, _ = encode_fields(SocketType.ACK, "/", items, 1)
    assert text == "31" + dumps(items)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('2["e"]', (SocketType.EVENT, "/", ["e"], None)),
        ('27["e",1]', (SocketType.EVENT, "/", ["e", 1], 7)),
        ('2/chat,["e"]', (SocketType.EVENT, "/chat", ["e"], None)),
        ('2/chat,0012["e"]', (SocketType.EVENT, "/chat", ["e"], 12)),
        ('3/chat,5["a",{"b":null}]', (SocketType.ACK, "/chat", ["a", {"b": None}], 5)),
        ("35[]", (SocketType.ACK, "/", [], 5)),
        (
            '2["e",{"_placeholder":true,"num":0}]',
            (SocketType.EVENT, "/", ["e", {"_placeholder": True, "num": 0}], None),
        ),
        # Left to the general decoder: it accepts some of these, refuses the others.
        ('0{"a":1}', None),
        ('51-["e",{"_placeholder":true,"num":0}]', None),
        ("", None),
        ("3[]", None),  # an ACK needs its id
        ('2 ["e"]', None),  # whitespace before the array
        ('2["e"] ', None),  # and after it
        ('2["e"]["f"]', None),
        ("2[]", None),
        ("2[1]", None),
        ('2/chat["e"]', None),  # no comma after the namespace
        ("2/" + "a" * 300 + ',["e"]', None),
        ("2/" + "a" * 255 + ',["e"]', (SocketType.EVENT, "/" + "a" * 255, ["e"], None)),
        ("2/" + "a" * 256 + ',["e"]', None),  # one more than MAX_NAMESPACE
        ("2" + "9" * 15 + '["e"]', (SocketType.EVENT, "/", ["e"], 10**15 - 1)),
        ('2/chat,["e"', None),
        ('21234567890123456["e"]', None),
        ('2\u0661["e"]', None),
        ('2x["e"]', None),
        ("2", None),
    ],
)
def test_the_fast_path_examples(
    text: str, expected: tuple[SocketType, str, Any, int | None] | None
) -> None:
    assert assert_agrees(text) == expected


@pytest.mark.parametrize(
    "text", ["2[", '2["e",NaN]', "2[" + "[" * 100_000, '21["e",' + "1" * 5000 + "]"]
)
def test_json_the_fast_path_cannot_read_is_an_error_for_both(text: str) -> None:
    with pytest.raises(PacketError):
        parse_plain(text)
    with pytest.raises(PacketError):
        general(text)


def test_no_fast_path_while_attachments_are_awaited() -> None:
    decoder = SocketDecoder(max_attachments=4, max_attachment_bytes=100)
    assert decoder.receive_plain('2["e"]') == (SocketType.EVENT, "/", ["e"], None)
    assert decoder.receive_text('51-["e",{"_placeholder":true,"num":0}]') is None
    assert decoder.receive_plain('2["e"]') is None
    with pytest.raises(PacketError, match="attachments were expected"):
        decoder.receive_text('2["e"]')


# -- the session on the fast path -------------------------------------------------------------


@pytest.mark.parametrize("text", ['42["e"', "43[", '421["e",NaN]', "42[]", "43[]", '42/x,["e"'])
def test_a_malformed_event_or_ack_still_closes_the_session_with_1002(text: str) -> None:
    hub = Hub()
    hub.socketio()
    errors: list[BaseException | None] = []
    hub.on(EVENT_ERROR, lambda ep: errors.append(ep.error))
    sio = TestClient(hub).socketio_connect()
    sio.ws.send_text(text)
    assert sio.ws.close_code == 1002
    assert len(errors) == 1
    assert isinstance(errors[0], PacketError)


def test_a_text_event_while_attachments_are_awaited_closes_the_session() -> None:
    hub = Hub()
    hub.socketio()
    seen: list[Any] = []
    hub.on("e", lambda ep: seen.append(ep.args))
    sio = TestClient(hub).socketio_connect()
    sio.ws.send_text('451-["e",{"_placeholder":true,"num":0}]')
    sio.ws.send_text('42["e"]')
    assert sio.ws.close_code == 1002
    assert seen == []


def test_sync_and_async_listeners_answer_an_ack_once_in_either_order() -> None:
    hub = Hub()
    hub.socketio()
    ran: list[str] = []

    def sync(ep: EventPayload) -> str:
        ran.append("sync")
        return "sync"

    async def later(ep: EventPayload) -> str:
        await asyncio.sleep(0)
        ran.append("async")
        return "async"

    async def silent(ep: EventPayload) -> None:
        await asyncio.sleep(0)
        ran.append("silent")

    hub.on("async-first", later)
    hub.on("async-first", sync)
    hub.on("sync-first", sync)
    hub.on("sync-first", later)
    hub.on("async-none", silent)
    hub.on("async-none", lambda ep: None)
    hub.on("async-none", silent)
    sio = TestClient(hub, run_async=asyncio.run).socketio_connect()
    assert sio.call("async-first") == ("sync",)
    assert sio.call("sync-first") == ("sync",)
    assert sio.call("async-none") == ()
    assert sorted(ran) == ["async", "async", "silent", "silent", "sync", "sync"]
    sio.emit("async-first")  # no ack asked: both still run
    assert sorted(ran).count("async") == 3
