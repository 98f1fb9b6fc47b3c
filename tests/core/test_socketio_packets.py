"""Engine.IO v4 and Socket.IO v5 codecs: round trips, the specifications' examples, bad input."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ikisocket_core import LocalProtocolError, RemoteProtocolError
from ikisocket_core._socketio._packets import (
    EnginePacket,
    EngineType,
    PacketError,
    SocketDecoder,
    SocketPacket,
    SocketType,
    decode_engine,
    dumps,
    encode_engine,
    encode_socket,
)

SETTINGS = settings(max_examples=150, deadline=None)

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**53), max_value=2**53),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
with_bytes = st.recursive(
    st.one_of(json_scalars, st.binary(max_size=30)),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
namespaces = st.one_of(
    st.just("/"),
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_/", min_size=1, max_size=12).map(
        lambda s: "/" + s
    ),
)
ids = st.one_of(st.none(), st.integers(min_value=0, max_value=10**12))


def decoder() -> SocketDecoder:
    return SocketDecoder(max_attachments=64, max_attachment_bytes=1_000_000)


def decode_all(text: str, attachments: tuple[bytes, ...]) -> SocketPacket:
    d = decoder()
    found = d.receive_text(text)
    for attachment in attachments:
        assert found is None
        found = d.receive_binary(attachment)
    assert found is not None
    assert d.waiting == 0
    return found


@st.composite
def packets(draw: st.DrawFn) -> SocketPacket:
    kind = draw(st.sampled_from(list(SocketType)[:5]))
    namespace = draw(namespaces)
    if kind is SocketType.CONNECT:
        data: Any = draw(st.one_of(st.none(), st.dictionaries(st.text(max_size=8), json_values)))
        return SocketPacket(type=kind, namespace=namespace, data=data)
    if kind is SocketType.DISCONNECT:
        return SocketPacket(type=kind, namespace=namespace)
    if kind is SocketType.CONNECT_ERROR:
        data = draw(st.one_of(st.text(max_size=20), st.fixed_dictionaries({"message": st.text()})))
        return SocketPacket(type=kind, namespace=namespace, data=data)
    args = draw(st.lists(with_bytes, max_size=4))
    if kind is SocketType.EVENT:
        return SocketPacket(
            type=kind, namespace=namespace, data=[draw(st.text(max_size=10)), *args], id=draw(ids)
        )
    ack_id = draw(st.integers(min_value=0, max_value=10**12))
    return SocketPacket(type=kind, namespace=namespace, data=args, id=ack_id)


@SETTINGS
@given(packet=packets())
def test_every_socket_packet_round_trips(packet: SocketPacket) -> None:
    text, attachments = encode_socket(packet)
    assert decode_all(text, attachments) == packet


@SETTINGS
@given(packet=packets())
def test_a_packet_round_trips_inside_engine_messages(packet: SocketPacket) -> None:
    text, attachments = encode_socket(packet)
    messages = [encode_engine(EnginePacket(type=EngineType.MESSAGE, data=text))]
    messages += [encode_engine(EnginePacket(type=EngineType.MESSAGE, data=a)) for a in attachments]
    d = decoder()
    found = None
    for binary, payload in messages:
        engine = decode_engine(payload, binary)
        assert engine.type is EngineType.MESSAGE
        body = engine.data
        found = d.receive_binary(body) if isinstance(body, bytes) else d.receive_text(body)
    assert found == packet


@SETTINGS
@given(kind=st.sampled_from(list(EngineType)), data=st.text(max_size=30))
def test_every_engine_text_packet_round_trips(kind: EngineType, data: str) -> None:
    packet = EnginePacket(type=kind, data=data)
    binary, payload = encode_engine(packet)
    assert not binary
    assert decode_engine(payload, binary) == packet


# -- the specifications' own examples ----------------------------------------------------


@pytest.mark.parametrize(
    ("packet", "text", "attachments"),
    [
        (SocketPacket(type=SocketType.CONNECT), "0", ()),
        (
            SocketPacket(type=SocketType.CONNECT, namespace="/admin", data={"sid": "oSO0"}),
            '0/admin,{"sid":"oSO0"}',
            (),
        ),
        (
            SocketPacket(type=SocketType.CONNECT_ERROR, data={"message": "Not authorized"}),
            '4{"message":"Not authorized"}',
            (),
        ),
        (SocketPacket(type=SocketType.EVENT, data=["foo"]), '2["foo"]', ()),
        (
            SocketPacket(type=SocketType.EVENT, namespace="/admin", data=["bar"]),
            '2/admin,["bar"]',
            (),
        ),
        (
            SocketPacket(type=SocketType.EVENT, data=["baz", b"\x01\x02\x03\x04"]),
            '51-["baz",{"_placeholder":true,"num":0}]',
            (b"\x01\x02\x03\x04",),
        ),
        (
            SocketPacket(
                type=SocketType.EVENT, namespace="/admin", data=["baz", b"\x01\x02", b"\x03\x04"]
            ),
            '52-/admin,["baz",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]',
            (b"\x01\x02", b"\x03\x04"),
        ),
        (SocketPacket(type=SocketType.EVENT, data=["foo"], id=12), '212["foo"]', ()),
        (
            SocketPacket(type=SocketType.ACK, namespace="/admin", data=["bar"], id=13),
            '3/admin,13["bar"]',
            (),
        ),
        (
            SocketPacket(type=SocketType.ACK, data=["bar", b"\x01\x02\x03\x04"], id=15),
            '61-15["bar",{"_placeholder":true,"num":0}]',
            (b"\x01\x02\x03\x04",),
        ),
        (SocketPacket(type=SocketType.DISCONNECT), "1", ()),
        (SocketPacket(type=SocketType.DISCONNECT, namespace="/admin"), "1/admin,", ()),
    ],
)
def test_the_specification_examples(
    packet: SocketPacket, text: str, attachments: tuple[bytes, ...]
) -> None:
    assert encode_socket(packet) == (text, attachments)
    assert decode_all(text, attachments) == packet


def test_the_engine_examples() -> None:
    assert encode_engine(EnginePacket(type=EngineType.MESSAGE, data="hello")) == (False, b"4hello")
    assert encode_engine(EnginePacket(type=EngineType.MESSAGE, data=b"\x01")) == (True, b"\x01")
    assert decode_engine(b"2probe", False) == EnginePacket(type=EngineType.PING, data="probe")
    assert decode_engine(b"\x01\x02", True) == EnginePacket(
        type=EngineType.MESSAGE, data=b"\x01\x02"
    )


def test_a_namespace_without_a_comma_ends_the_packet() -> None:
    # socket.io-parser reads "1/admin" (no comma, nothing after) as namespace /admin.
    assert decode_all("1/admin", ()) == SocketPacket(type=SocketType.DISCONNECT, namespace="/admin")


def test_bytearray_and_memoryview_travel_as_attachments() -> None:
    packet = SocketPacket(type=SocketType.EVENT, data=["e", bytearray(b"ab"), (memoryview(b"c"),)])
    text, attachments = encode_socket(packet)
    assert attachments == (b"ab", b"c")
    assert decode_all(text, attachments).data == ["e", b"ab", [b"c"]]


def test_a_placeholder_shaped_dict_in_a_plain_event_stays_a_dict() -> None:
    text = '2["e",{"_placeholder":true,"num":0}]'
    assert decode_all(text, ()).data == ["e", {"_placeholder": True, "num": 0}]


# -- invalid packets cannot be made -------------------------------------------------------


@pytest.mark.parametrize(
    "fields",
    [
        {"type": SocketType.BINARY_EVENT, "data": ["e"]},
        {"type": SocketType.EVENT, "data": []},
        {"type": SocketType.EVENT, "data": [1]},
        {"type": SocketType.EVENT, "data": "e"},
        {"type": SocketType.ACK, "data": []},
        {"type": SocketType.ACK, "data": "x", "id": 1},
        {"type": SocketType.CONNECT, "data": [1]},
        {"type": SocketType.DISCONNECT, "data": {}},
        {"type": SocketType.CONNECT_ERROR, "data": None},
        {"type": SocketType.CONNECT, "namespace": "admin"},
        {"type": SocketType.CONNECT, "namespace": "/a,b"},
        {"type": SocketType.CONNECT, "namespace": "/" + "a" * 300},
        {"type": SocketType.CONNECT, "id": 1},
        {"type": SocketType.EVENT, "data": ["e"], "id": -1},
        {"type": SocketType.EVENT, "data": ["e"], "id": True},
        {"type": SocketType.EVENT, "data": ["e"], "id": 10**15},
    ],
)
def test_an_invalid_packet_cannot_be_made(fields: dict[str, Any]) -> None:
    with pytest.raises(LocalProtocolError):
        SocketPacket(**fields)


def test_only_a_message_carries_bytes() -> None:
    with pytest.raises(LocalProtocolError):
        EnginePacket(type=EngineType.PING, data=b"x")


@pytest.mark.parametrize("value", [float("nan"), float("inf"), {1j}, object()])
def test_what_json_cannot_carry_is_refused_when_encoding(value: object) -> None:
    with pytest.raises((TypeError, ValueError)):
        encode_socket(SocketPacket(type=SocketType.EVENT, data=["e", value]))


def test_dumps_is_compact_and_keeps_unicode() -> None:
    assert dumps({"a": ["é", 1]}) == '{"a":["é",1]}'


# -- hostile input ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "payload",
    [b"", b"7", b"x", b"\xff"],
)
def test_engine_garbage_is_a_packet_error(payload: bytes) -> None:
    with pytest.raises(PacketError) as caught:
        decode_engine(payload, False)
    assert isinstance(caught.value, RemoteProtocolError)
    assert caught.value.close_code == 1002


@pytest.mark.parametrize(
    "text",
    [
        "",
        "7",
        "x",
        "2",  # an event without its array
        "2[]",  # an empty array
        "2[1]",  # no event name
        '2{"a":1}',
        "2[",  # not JSON
        "2[NaN]",  # JavaScript's JSON has no NaN
        '2["e",Infinity]',
        "2" + "[" * 100_000 + "]" * 100_000,  # nesting as deep as recursion allows, and more
        "3[]",  # an ack without an id
        '3x["a"]',
        '0["a"]',  # CONNECT data is an object
        "1{}",  # DISCONNECT has none
        "4",  # CONNECT_ERROR needs a message
        '0{"a":1}{',
        '5["e"]',  # no attachment count
        '5x-["e"]',
        '5-["e"]',
        '5\u0661-["e"]',  # a digit, but not an ASCII one
        '51234567-["e"]',
        '565-["e",1]',  # more than max_attachments
        "2/" + "a" * 300 + ',["e"]',
        '2/admin,1234567890123456["e"]',
        '2/a,b,["e"]',
        '1/admin,["e"]',
    ],
)
def test_malformed_socket_packets_are_packet_errors(text: str) -> None:
    with pytest.raises(PacketError):
        decoder().receive_text(text)


def test_an_attachment_count_that_lies_low_is_caught_by_the_placeholder() -> None:
    d = decoder()
    assert d.receive_text('51-["e",{"_placeholder":true,"num":1}]') is None
    with pytest.raises(PacketError, match="placeholder"):
        d.receive_binary(b"x")


@pytest.mark.parametrize(
    "placeholder",
    [
        '{"_placeholder":true,"num":"0"}',
        '{"_placeholder":true,"num":true}',
        '{"_placeholder":true}',
        '{"_placeholder":true,"num":-1}',
    ],
)
def test_a_placeholder_must_name_an_attachment(placeholder: str) -> None:
    d = decoder()
    assert d.receive_text(f'51-["e",{placeholder}]') is None
    with pytest.raises(PacketError):
        d.receive_binary(b"x")


def test_an_attachment_count_that_lies_high_waits_then_text_is_an_error() -> None:
    d = decoder()
    assert d.receive_text('52-["e",{"_placeholder":true,"num":0}]') is None
    assert d.waiting == 2
    assert d.receive_binary(b"a") is None
    assert d.waiting == 1
    with pytest.raises(PacketError, match="attachments were expected"):
        d.receive_text('2["next"]')


def test_extra_attachments_beyond_the_placeholders_are_dropped() -> None:
    d = decoder()
    assert d.receive_text('52-["e",{"_placeholder":true,"num":1}]') is None
    assert d.receive_binary(b"first") is None
    packet = d.receive_binary(b"second")
    assert packet == SocketPacket(type=SocketType.EVENT, data=["e", b"second"])


def test_a_binary_message_nobody_announced_is_an_error() -> None:
    with pytest.raises(PacketError, match="no packet announced"):
        decoder().receive_binary(b"x")


def test_attachments_are_bounded_in_bytes() -> None:
    d = SocketDecoder(max_attachments=4, max_attachment_bytes=10)
    assert d.receive_text('53-["e",{"_placeholder":true,"num":0}]') is None
    assert d.receive_binary(b"x" * 6) is None
    with pytest.raises(PacketError, match="payload limit"):
        d.receive_binary(b"x" * 6)


def test_zero_attachments_still_resolve_placeholders() -> None:
    with pytest.raises(PacketError):
        decoder().receive_text('50-["e",{"_placeholder":true,"num":0}]')
    assert decoder().receive_text('50-["e"]') == SocketPacket(type=SocketType.EVENT, data=["e"])


@SETTINGS
@given(garbage=st.text(max_size=40))
def test_any_text_is_a_packet_or_a_packet_error(garbage: str) -> None:
    d = decoder()
    try:
        found = d.receive_text(garbage)
    except PacketError:
        return
    assert found is None or isinstance(found, SocketPacket)
