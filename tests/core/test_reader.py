"""The frame reader on its own: buffering, bulk unmasking, limits before buffering, deflate.

Its agreement with wsproto on arbitrary streams is ``test_reader_differential.py``;
these are the cases a random stream rarely reaches or cannot observe (how much is
buffered before a refusal, big frames over many reads).
"""

from __future__ import annotations

import zlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_reader_differential import frame
from unmasking import each_unmask  # noqa: F401 (the fixture of pytestmark)
from wsproto.frame_protocol import FrameProtocol

import ikisocket_core
from ikisocket_core import RemoteProtocolError, _reader
from ikisocket_core._frames import _close_frame, _frame, _Inflater
from ikisocket_core._reader import (
    BINARY,
    CLOSE,
    CONTINUATION,
    PING,
    PONG,
    TEXT,
    FrameReader,
    _load_c_unmask,
    _unmask,
    _unmask_py,
)

pytestmark = pytest.mark.usefixtures("each_unmask")


def read_all(reader: FrameReader, data: bytes = b"") -> list[tuple[int, bytes]]:
    if data:
        reader.feed(data)
    out = []
    while (item := reader.next()) is not None:
        out.append(item)
    return out


def deflated(data: bytes, bits: int = 15) -> bytes:
    compressor = zlib.compressobj(wbits=-bits)
    return (compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH))[:-4]


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(min_size=1, max_size=3000), st.binary(min_size=4, max_size=4))
def test_unmasking_is_a_xor_with_the_repeated_key(data: bytes, key: bytes) -> None:
    # The installed one (C or Python), and Python's big-integer (up to 1 KiB) and
    # translate paths.
    expected = bytes(b ^ key[i % 4] for i, b in enumerate(data))
    assert _unmask(data, key) == expected
    assert _unmask_py(data, key) == expected


def test_websockets_c_unmasking_is_used_where_installed() -> None:
    # The test environment installs websockets with its C extension.
    speedups = pytest.importorskip("websockets.speedups")
    assert _load_c_unmask() is speedups.apply_mask
    assert ikisocket_core.native_unmask is True
    big = bytes(range(256)) * 4096  # 1 MiB, over several reads below
    assert _unmask(big, b"\x01\x02\x03\x04") == _unmask_py(big, b"\x01\x02\x03\x04")


def test_without_websockets_the_engine_unmasks_in_python(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_module(name: str) -> object:
        raise ImportError(name)

    monkeypatch.setattr(_reader, "import_module", no_module)
    assert _load_c_unmask() is None
    # A websockets whose C module lacks the function (another version): Python too.
    monkeypatch.setattr(_reader, "import_module", lambda name: object())
    assert _load_c_unmask() is None


def test_several_frames_in_one_read_and_one_frame_over_many() -> None:
    reader = FrameReader(None)
    assert read_all(reader, frame(TEXT, b"a") + frame(BINARY, b"b") + frame(PING, b"p")) == [
        (TEXT, b"a"),
        (BINARY, b"b"),
        (PING, b"p"),
    ]
    big = bytes(range(256)) * 1000  # 256 kB: a 64-bit length, unmasked by translate
    data = frame(BINARY, big) + frame(PONG, b"")
    got: list[tuple[int, bytes]] = []
    for i in range(0, len(data), 1000):  # joined once, when the frame is complete
        got += read_all(reader, data[i : i + 1000])
        if i + 1000 < len(data) - 6:
            assert got == []
    assert got == [(BINARY, big), (PONG, b"")]


def test_a_header_split_across_reads() -> None:
    reader = FrameReader(None)
    data = frame(TEXT, b"x" * 300) + frame(TEXT, b"y" * 70_000)
    got = []
    for i in range(len(data)):
        got += read_all(reader, data[i : i + 1])
    assert got == [(TEXT, b"x" * 300), (TEXT, b"y" * 70_000)]


def test_the_limit_refuses_a_frame_from_its_header() -> None:
    reader = FrameReader(100)
    header = frame(BINARY, bytes(101))[:8]  # 2 bytes, the key, 2 payload bytes
    with pytest.raises(RemoteProtocolError) as failed:
        read_all(reader, header)
    assert failed.value.close_code == 1009


def test_the_limit_counts_the_fragments_so_far() -> None:
    reader = FrameReader(100)
    assert read_all(reader, frame(TEXT, b"a" * 60, fin=False)) == []
    assert reader.message_size == 60
    with pytest.raises(RemoteProtocolError) as failed:
        read_all(reader, frame(CONTINUATION, b"b" * 41)[:6])
    assert failed.value.close_code == 1009
    assert reader.message_size == 0  # dropped


def test_a_compressed_frame_far_above_the_limit_is_refused_from_its_header() -> None:
    reader = FrameReader(1000, _Inflater(1000, 15, no_context_takeover=False))
    header = frame(BINARY, bytes(1_000_000), rsv=4)[:14]
    with pytest.raises(RemoteProtocolError) as failed:
        read_all(reader, header)
    assert failed.value.close_code == 1009


def test_a_compressed_frame_a_bit_longer_than_the_limit_is_inflated() -> None:
    # Stored (incompressible) data grows by a few bytes in deflate: still accepted.
    noise = bytes((i * 7919) % 251 for i in range(1000))
    compressor = zlib.compressobj(0, wbits=-15)  # level 0: stored blocks only
    payload = (compressor.compress(noise) + compressor.flush(zlib.Z_SYNC_FLUSH))[:-4]
    assert len(payload) > 1000
    reader = FrameReader(1000, _Inflater(1000, 15, no_context_takeover=False))
    assert read_all(reader, frame(BINARY, payload, rsv=4)) == [(BINARY, noise)]


@pytest.mark.parametrize("reset", [False, True])
def test_compressed_messages_with_and_without_context_takeover(reset: bool) -> None:
    compressor = zlib.compressobj(wbits=-10)
    stream = b""
    for text in (b"hello there", b"hello there", b"hello again"):
        if reset:
            compressor = zlib.compressobj(wbits=-10)
        data = compressor.compress(text) + compressor.flush(zlib.Z_SYNC_FLUSH)
        stream += frame(TEXT, data[:3], fin=False, rsv=4) + frame(CONTINUATION, data[3:-4])
    reader = FrameReader(None, _Inflater(None, 10, no_context_takeover=reset))
    assert read_all(reader, stream) == [
        (TEXT, b"hello there"),
        (TEXT, b"hello there"),
        (TEXT, b"hello again"),
    ]


def test_an_uncompressed_message_when_deflate_was_negotiated() -> None:
    reader = FrameReader(100, _Inflater(100, 15, no_context_takeover=False))
    assert read_all(reader, frame(TEXT, b"plain") + frame(TEXT, deflated(b"zip"), rsv=4)) == [
        (TEXT, b"plain"),
        (TEXT, b"zip"),
    ]


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (deflated(b"\xff\xfe"), 1007),  # inflates to invalid UTF-8
        (b"\xff\xff\xff", 1007),  # not deflate at all
        (deflated(bytes(200)), 1009),  # inflates past the limit
    ],
)
def test_compressed_failures(data: bytes, code: int) -> None:
    reader = FrameReader(100, _Inflater(100, 15, no_context_takeover=False))
    with pytest.raises(RemoteProtocolError) as failed:
        read_all(reader, frame(TEXT, data, rsv=4))
    assert failed.value.close_code == code


@pytest.mark.parametrize(
    "data",
    [
        frame(PING, b"", rsv=4),  # RFC 7692 6.1: never on a control frame
        frame(TEXT, b"a", fin=False, rsv=4) + frame(CONTINUATION, b"b", rsv=4),
        frame(TEXT, b"a", rsv=2),
    ],
)
def test_rsv_bits_with_deflate(data: bytes) -> None:
    reader = FrameReader(100, _Inflater(100, 15, no_context_takeover=False))
    with pytest.raises(RemoteProtocolError) as failed:
        read_all(reader, data)
    assert failed.value.close_code == 1002


def test_after_a_close_frame_nothing_more_is_read() -> None:
    reader = FrameReader(None)
    data = frame(TEXT, b"a") + frame(CLOSE, b"\x03\xe8bye") + frame(TEXT, b"late")
    assert read_all(reader, data) == [(TEXT, b"a"), (CLOSE, b"\x03\xe8bye")]
    assert (reader.close_code, reader.close_reason) == (1000, "bye")
    assert read_all(reader, frame(TEXT, b"later")) == []


def test_after_a_failure_nothing_more_is_read() -> None:
    reader = FrameReader(None)
    with pytest.raises(RemoteProtocolError):
        read_all(reader, frame(0x3, b"") + frame(TEXT, b"late"))
    assert read_all(reader, frame(TEXT, b"later")) == []


def test_a_close_frame_without_a_code() -> None:
    reader = FrameReader(None)
    assert read_all(reader, frame(CLOSE, b"")) == [(CLOSE, b"")]
    assert (reader.close_code, reader.close_reason) == (1005, "")


@pytest.mark.parametrize(
    ("code", "reason"), [(1000, ""), (1001, "going away"), (4000, "é" * 61), (1011, "x")]
)
def test_control_frames_are_framed_as_wsproto_frames_them(code: int, reason: str) -> None:
    proto = FrameProtocol(client=False, extensions=[])
    assert _close_frame(code, reason) == proto.close(code, reason)
    assert _frame(PING, reason.encode()[:125]) == proto.ping(reason.encode()[:125])
    assert _frame(PONG, b"p") == proto.pong(b"p")


@pytest.mark.parametrize(
    "data",
    [
        frame(BINARY, b"short", form=16),  # RFC 6455 5.2: the minimal number of bytes
        frame(BINARY, b"short", form=64),
        frame(BINARY, b"x" * 200, form=64),
        frame(BINARY, b"x" * 70_000, form=65),  # the most significant bit must be 0
    ],
    ids=["16-bit-for-5", "64-bit-for-5", "64-bit-for-200", "64-bit-top-bit"],
)
def test_lengths_in_the_shortest_form_only(data: bytes) -> None:
    with pytest.raises(RemoteProtocolError) as failed:
        read_all(FrameReader(None), data)
    assert failed.value.close_code == 1002


def feed_in_parts(reader: FrameReader, data: bytes, size: int) -> list[tuple[int, bytes]]:
    got = []
    for i in range(0, len(data), size):
        got += read_all(reader, data[i : i + size])
    return got


@pytest.mark.parametrize("size", [1, 3, 7, 100])
def test_text_arriving_in_parts_is_checked_as_it_arrives(size: int) -> None:
    text = "héllo wörld €uro ☃ " * 20  # characters of 1-3 bytes, cut anywhere by the reads
    data = frame(TEXT, text.encode()) + frame(TEXT, b"a", fin=False)
    data += frame(CONTINUATION, "ü€".encode() * 50, fin=False) + frame(CONTINUATION, b"z")
    reader = FrameReader(None)
    assert feed_in_parts(reader, data, size) == [
        (TEXT, text.encode()),
        (TEXT, b"a" + "ü€".encode() * 50 + b"z"),
    ]


@pytest.mark.parametrize(
    "data",
    [
        frame(TEXT, b"fine so far \xff" + b"x" * 300),  # RFC 6455 8.1: fail fast
        frame(TEXT, b"ok \xc3", fin=False) + frame(CONTINUATION, b"(" + b"x" * 300),
    ],
    ids=["in-the-frame", "across-fragments"],
)
def test_invalid_utf8_fails_before_the_frame_is_whole(data: bytes) -> None:
    reader = FrameReader(None)
    with pytest.raises(RemoteProtocolError) as failed:
        feed_in_parts(reader, data[:-200], 10)
    assert failed.value.close_code == 1007


def test_ascii_after_half_a_character_fails_before_the_frame_is_whole() -> None:
    # A read that ends inside a character, then one of ASCII only: the character is broken.
    data = frame(TEXT, b"ok \xc3" + b"(" + b"x" * 300)
    head = len(data) - 305  # where the payload starts: after 2 bytes, the length and the key
    reader = FrameReader(None)
    reader.feed(data[: head + 4])  # the payload up to and with the \xc3
    assert reader.next() is None
    reader.feed(data[head + 4 : head + 40])  # ASCII only
    with pytest.raises(RemoteProtocolError) as failed:
        reader.next()
    assert failed.value.close_code == 1007


def test_compressed_text_arriving_in_parts_is_checked_once_inflated() -> None:
    compressor = zlib.compressobj(wbits=-15)
    data = compressor.compress("ünïcödé ".encode() * 40) + compressor.flush(zlib.Z_SYNC_FLUSH)
    data = data[:-4]
    stream = frame(TEXT, data[:20], fin=False, rsv=4) + frame(CONTINUATION, data[20:])
    stream += frame(TEXT, deflated("ünïcödé".encode()), rsv=4)
    reader = FrameReader(None, _Inflater(None, 15, no_context_takeover=False))
    assert feed_in_parts(reader, stream, 5) == [
        (TEXT, "ünïcödé ".encode() * 40),
        (TEXT, "ünïcödé".encode()),
    ]
