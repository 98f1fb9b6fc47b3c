"""Engine.IO v4 and Socket.IO v5 packets: pure encoders and decoders, no state but attachments.

Engine.IO (the transport layer) puts one packet in each WebSocket message:
a type digit (``0`` open, ``1`` close, ``2`` ping, ``3`` pong, ``4`` message,
``5`` upgrade, ``6`` noop) then the data; a binary WebSocket message is a
``message`` packet whose data are the raw bytes (Engine.IO protocol v4,
"Packet encoding", WebSocket).

Socket.IO rides in Engine.IO ``message`` packets, text first::

    <type>[<attachments>-][<namespace>,][<ack id>][<JSON payload>]

followed, for ``BINARY_EVENT`` and ``BINARY_ACK``, by that many binary
messages, each replacing one ``{"_placeholder":true,"num":n}`` in the payload
(Socket.IO protocol v5, "Packet encoding"). Here a decoded packet always has
its bytes back in place and the plain type (``EVENT`` or ``ACK``); the
encoder picks the binary type again when the data hold bytes.

Every decoding failure raises :class:`PacketError`, a
:class:`~ikisocket_core.RemoteProtocolError`: the session closes on it.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Callable
from dataclasses import dataclass
from json.encoder import encode_basestring
from typing import Any, Final

from ikisocket_core._errors import LocalProtocolError, RemoteProtocolError

__all__: list[str] = []

#: Digits accepted in an ack id: more than any client counts to, fewer than a float loses.
MAX_ID_DIGITS: Final = 15
#: The longest namespace name accepted (names are declared by the server anyway).
MAX_NAMESPACE: Final = 256


class PacketError(RemoteProtocolError):
    """A packet the peer sent is malformed (the session is closed with 1002).

    Args:
        message: What is wrong with it.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message, close_code=1002)


class EngineType(enum.IntEnum):
    """Engine.IO v4 packet types (the first character of every packet)."""

    OPEN = 0
    CLOSE = 1
    PING = 2
    PONG = 3
    MESSAGE = 4
    UPGRADE = 5
    NOOP = 6


class SocketType(enum.IntEnum):
    """Socket.IO v5 packet types (the first character of a Socket.IO packet)."""

    CONNECT = 0
    DISCONNECT = 1
    EVENT = 2
    ACK = 3
    CONNECT_ERROR = 4
    BINARY_EVENT = 5
    BINARY_ACK = 6


@dataclass(frozen=True, slots=True, kw_only=True)
class EnginePacket:
    """One Engine.IO packet.

    Attributes:
        type: The packet type.
        data: Its data: text, or bytes for a binary ``MESSAGE``.
    """

    type: EngineType
    data: str | bytes = ""

    def __post_init__(self) -> None:
        if isinstance(self.data, bytes) and self.type is not EngineType.MESSAGE:
            raise LocalProtocolError("only a message packet carries bytes")


def encode_engine(packet: EnginePacket) -> tuple[bool, bytes]:
    """The WebSocket message for one Engine.IO packet.

    Args:
        packet: The packet.

    Returns:
        ``(binary, payload)``: whether it goes in a binary message, and its bytes.
    """
    if isinstance(packet.data, bytes):
        return True, packet.data  # binary payloads travel as they are, without a type
    return False, b"%d" % packet.type + packet.data.encode("utf-8")


def decode_engine(payload: bytes, binary: bool) -> EnginePacket:
    """Read one WebSocket message as an Engine.IO packet.

    Args:
        payload: The message.
        binary: Whether it came in a binary message.

    Returns:
        The packet.

    Raises:
        PacketError: The message is not an Engine.IO packet.
    """
    if binary:
        return EnginePacket(type=EngineType.MESSAGE, data=payload)
    if not payload or not 0x30 <= payload[0] <= 0x36:
        raise PacketError("an Engine.IO packet starts with a type digit from 0 to 6")
    try:
        text = payload[1:].decode("utf-8")
    except UnicodeDecodeError:  # pragma: no cover - the WebSocket layer checked it (1007)
        raise PacketError("an Engine.IO text packet is UTF-8") from None
    return EnginePacket(type=_ENGINE_TYPES[payload[0] - 0x30], data=text)


_ENGINE_TYPES: Final = tuple(EngineType)


# -- Socket.IO ----------------------------------------------------------------------------

_PLAIN: Final = (
    SocketType.CONNECT,
    SocketType.DISCONNECT,
    SocketType.EVENT,
    SocketType.ACK,
    SocketType.CONNECT_ERROR,
)


@dataclass(frozen=True, slots=True, kw_only=True)
class SocketPacket:
    """One Socket.IO packet, with its binary attachments in place (``bytes`` in ``data``).

    Attributes:
        type: ``CONNECT``, ``DISCONNECT``, ``EVENT``, ``ACK`` or ``CONNECT_ERROR``;
            the binary types are chosen on the wire from the data.
        namespace: The namespace, ``"/"`` for the main one.
        data: The payload: a dict (or nothing) for ``CONNECT``, a list whose
            first item is the event name for ``EVENT``, the answer's list for
            ``ACK``, a dict or a string for ``CONNECT_ERROR``, nothing for
            ``DISCONNECT``.
        id: The ack id of an ``EVENT`` that wants an answer, or of an ``ACK``.
    """

    type: SocketType
    namespace: str = "/"
    data: Any = None
    id: int | None = None

    def __post_init__(self) -> None:
        problem = _invalid(self.type, self.namespace, self.data, self.id)
        if problem:
            raise LocalProtocolError(problem)


def _invalid(kind: SocketType, namespace: str, data: Any, ack_id: int | None) -> str:
    """Why a packet with these fields may not exist, or ``""`` when it may."""
    if kind not in _PLAIN:
        return "binary packet types are chosen from the data: use EVENT or ACK"
    if not namespace.startswith("/") or len(namespace) > MAX_NAMESPACE or "," in namespace:
        return f"invalid namespace {namespace[:40]!r}"
    if ack_id is not None and (
        kind not in (SocketType.EVENT, SocketType.ACK)
        or isinstance(ack_id, bool)
        or not 0 <= ack_id < 10**MAX_ID_DIGITS
    ):
        return "only EVENT and ACK carry an ack id, a non-negative integer"
    if kind is SocketType.CONNECT:
        ok = data is None or isinstance(data, dict)
    elif kind is SocketType.DISCONNECT:
        ok = data is None
    elif kind is SocketType.EVENT:
        ok = isinstance(data, list) and bool(data) and isinstance(data[0], str)
    elif kind is SocketType.ACK:
        ok = isinstance(data, list) and ack_id is not None
    else:  # CONNECT_ERROR
        ok = isinstance(data, (dict, str))
    return "" if ok else f"invalid payload for {kind.name}"


#: Exact types that hold no bytes and no other value (checked before anything else).
_SCALARS: Final = frozenset({str, int, float, bool, type(None)})


def _has_binary(value: Any) -> bool:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return True
    if isinstance(value, (list, tuple)):
        items: Any = value
    elif isinstance(value, dict):
        items = value.values()
    else:
        return False
    for item in items:  # noqa: SIM110 (a loop: any() over a generator costs more)
        if item.__class__ not in _SCALARS and _has_binary(item):
            return True
    return False


def _deconstruct(value: Any, attachments: list[bytes]) -> Any:
    """``value`` with each bytes object replaced by a placeholder (and put in ``attachments``)."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        attachments.append(bytes(value))
        return {"_placeholder": True, "num": len(attachments) - 1}
    if isinstance(value, (list, tuple)):
        return [_deconstruct(item, attachments) for item in value]
    if isinstance(value, dict):
        return {key: _deconstruct(item, attachments) for key, item in value.items()}
    return value


def dumps(value: Any) -> str:
    """Compact JSON as Socket.IO peers write it (no NaN: JavaScript's JSON has none).

    Args:
        value: A JSON-serialisable value.

    Returns:
        The JSON text.

    Raises:
        TypeError: ``value`` holds something JSON cannot carry.
        ValueError: ``value`` holds NaN or an infinity.
    """
    return _ENCODER.encode(value)


# One encoder and one decoder for every packet: json.dumps and json.loads build a new one per
# call when given options (timeit on a 3-item event: loads 5.8x and dumps 1.8x the cost).
_ENCODER: Final = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def encode_socket(packet: SocketPacket) -> tuple[str, tuple[bytes, ...]]:
    """The text of a Socket.IO packet and its binary attachments, in order.

    Args:
        packet: The packet.

    Returns:
        The text (to send as an Engine.IO ``message``, that is after ``"4"``)
        and the attachments (each in its own binary message, right after).

    Raises:
        TypeError: The data hold something JSON cannot carry.
        ValueError: The data hold NaN or an infinity.
    """
    return encode_fields(packet.type, packet.namespace, packet.data, packet.id)


_NO_ATTACHMENTS: tuple[bytes, ...] = ()


def encode_fields(
    kind: SocketType, namespace: str, data: Any, ack_id: int | None
) -> tuple[str, tuple[bytes, ...]]:
    """:func:`encode_socket` of the packet with these fields, without building the packet.

    For packets the server assembles from parts it already checked (an
    ``ACK`` answering a client's id, an ``EVENT`` whose name passed
    ``check_event``): nothing is validated here, so the fields must be
    those a :class:`SocketPacket` accepts.

    Args:
        kind: ``EVENT``, ``ACK``, ``CONNECT``, ``DISCONNECT`` or ``CONNECT_ERROR``.
        namespace: The namespace.
        data: The payload.
        ack_id: The ack id, or ``None``.

    Returns:
        The text and the attachments, as :func:`encode_socket` gives them.

    Raises:
        TypeError: The data hold something JSON cannot carry.
        ValueError: The data hold NaN or an infinity.
    """
    if data.__class__ is list:
        for item in data:
            if item.__class__ is not str:
                break
        else:  # strings only (most events and acks): no attachments, the array by hand
            head = _DIGITS[kind] if namespace == "/" else f"{_DIGITS[kind]}{namespace},"
            if ack_id is not None:
                head += str(ack_id)
            return head + "[" + ",".join(map(_quote, data)) + "]", _NO_ATTACHMENTS
    attachments: list[bytes] | None = None
    if (kind is SocketType.EVENT or kind is SocketType.ACK) and _has_binary(data):
        attachments = []
        data = _deconstruct(data, attachments)
        binary = "5" if kind is SocketType.EVENT else "6"
        head = f"{binary}{len(attachments)}-"
    else:
        head = _DIGITS[kind]
    if namespace != "/":
        head += namespace + ","
    if ack_id is not None:
        head += str(ack_id)
    if data is not None:
        head += _ENCODER.encode(data)
    return head, _NO_ATTACHMENTS if attachments is None else tuple(attachments)


_DIGITS: Final = tuple(str(int(kind)) for kind in SocketType)
_quote: Final = encode_basestring  # what _ENCODER writes a str with (ensure_ascii=False)


def _reject_constant(name: str) -> Any:
    raise PacketError(f"{name} is not JSON")


_DECODER: Final = json.JSONDecoder(parse_constant=_reject_constant)


def _loads(text: str) -> Any:
    try:
        return _DECODER.decode(text)
    except (ValueError, RecursionError):  # JSONDecodeError, too many digits, too deep
        raise PacketError("the payload is not valid JSON") from None


def _reconstruct(value: Any, attachments: tuple[bytes, ...]) -> Any:
    if isinstance(value, list):
        return [_reconstruct(item, attachments) for item in value]
    if isinstance(value, dict):
        if value.get("_placeholder") is True:
            num = value.get("num")
            if not isinstance(num, int) or isinstance(num, bool) or not 0 <= num < len(attachments):
                raise PacketError("a placeholder names an attachment that does not exist")
            return attachments[num]
        return {key: _reconstruct(item, attachments) for key, item in value.items()}
    return value


@dataclass(frozen=True, slots=True)
class _Head:
    """A decoded packet's text part, waiting for its attachments when it has any."""

    type: SocketType
    namespace: str
    data: Any
    id: int | None
    attachments: int
    binary: bool


def _parse_head(text: str, max_attachments: int) -> _Head:
    if not text or not "0" <= text[0] <= "6":
        raise PacketError("a Socket.IO packet starts with a type digit from 0 to 6")
    kind = _SOCKET_TYPES[ord(text[0]) - 0x30]
    pos = 1
    count = 0
    if kind in (SocketType.BINARY_EVENT, SocketType.BINARY_ACK):
        dash = text.find("-", pos)
        digits = text[pos:dash] if dash > 0 else ""
        if not digits.isdigit() or not digits.isascii() or len(digits) > 6:
            raise PacketError("a binary packet starts with its attachment count and '-'")
        count = int(digits)
        if count > max_attachments:
            raise PacketError(f"{count} attachments announced, at most {max_attachments} allowed")
        pos = dash + 1
    namespace = "/"
    if text.startswith("/", pos):
        comma = text.find(",", pos)
        end = len(text) if comma < 0 else comma
        namespace = text[pos:end]
        if len(namespace) > MAX_NAMESPACE:
            raise PacketError("the namespace name is too long")
        pos = end + 1
    start = pos
    while pos < len(text) and "0" <= text[pos] <= "9":
        pos += 1
    ack_id: int | None = None
    if pos > start:
        if pos - start > MAX_ID_DIGITS:
            raise PacketError("the ack id is too long")
        ack_id = int(text[start:pos])
    data = _loads(text[pos:]) if pos < len(text) else None
    plain = _PLAIN_OF[kind]
    # What the payload may be for this type (with placeholders for bytes still in it).
    problem = _invalid(plain, namespace, data, ack_id)
    if problem:
        raise PacketError(problem)
    return _Head(plain, namespace, data, ack_id, count, plain is not kind)


_SOCKET_TYPES: Final = tuple(SocketType)
_PLAIN_OF: Final = (*_PLAIN, SocketType.EVENT, SocketType.ACK)  # BINARY_EVENT and BINARY_ACK last
#: One JSON value from an index, no whitespace skipped (``raw_decode`` without its frame).
_scan: Callable[[str, int], tuple[Any, int]] = _DECODER.scan_once  # type: ignore[attr-defined]


def parse_plain(text: str) -> tuple[SocketType, str, Any, int | None] | None:
    """The common packets at a glance: a text ``EVENT`` or ``ACK`` with its array right after.

    ``2[...]``, ``2<id>[...]``, ``2/ns,<id>[...]``, ``3<id>[...]`` (the
    namespace and the id optional as the grammar says) are read with one
    scan and one JSON parse. Anything else, or anything this reading is not
    sure of (whitespace around the JSON, an event name that is not a string,
    an over-long id or namespace...), gives ``None``: the general decoder
    then reads it and says what is wrong. What it returns is exactly what
    :class:`SocketDecoder` makes of the same text, and it raises only where
    that raises.

    Args:
        text: A text Engine.IO message's data (after the ``"4"``).

    Returns:
        ``(type, namespace, data, ack id)``, or ``None``.

    Raises:
        PacketError: The array is not valid JSON.
    """
    first = text[:1]
    if first == "2":
        kind = SocketType.EVENT
    elif first == "3":
        kind = SocketType.ACK
    else:
        return None
    pos = 1
    namespace = "/"
    if text[1:2] == "/":
        pos = text.find(",", 1) + 1
        if not pos or pos > MAX_NAMESPACE + 2:
            return None
        namespace = text[1 : pos - 1]
    bracket = text.find("[", pos)
    if bracket < 0:
        return None
    ack_id = None
    if bracket > pos:
        digits = text[pos:bracket]
        if len(digits) > MAX_ID_DIGITS or not digits.isdigit() or not digits.isascii():
            return None
        ack_id = int(digits)
    elif kind is SocketType.ACK:
        return None
    try:
        data, end = _scan(text, bracket)
    except (StopIteration, ValueError, RecursionError):  # not JSON, too deep, too many digits
        raise PacketError("the payload is not valid JSON") from None
    if end != len(text) or (
        kind is SocketType.EVENT and (not data or data[0].__class__ is not str)
    ):
        return None
    return kind, namespace, data, ack_id


class SocketDecoder:
    """Reassembles Socket.IO packets from Engine.IO messages (text, then its attachments).

    Args:
        max_attachments: The most attachments one packet may announce.
        max_attachment_bytes: The most bytes the attachments of one packet may
            add up to.
    """

    __slots__ = ("_head", "_max_attachments", "_max_bytes", "_parts", "_size")

    def __init__(self, *, max_attachments: int, max_attachment_bytes: int) -> None:
        self._max_attachments = max_attachments
        self._max_bytes = max_attachment_bytes
        self._head: _Head | None = None
        self._parts: list[bytes] = []
        self._size = 0

    @property
    def waiting(self) -> int:
        """How many attachments the packet being reassembled still needs (0: none)."""
        head = self._head
        return 0 if head is None else head.attachments - len(self._parts)

    def receive_text(self, text: str) -> SocketPacket | None:
        """A text Engine.IO message arrived.

        Args:
            text: Its data (after the ``"4"``).

        Returns:
            The packet, or ``None`` while its attachments are still to come.

        Raises:
            PacketError: The packet is malformed, or attachments were expected.
        """
        if self._head is not None:
            raise PacketError("a text packet arrived while attachments were expected")
        head = _parse_head(text, self._max_attachments)
        if head.attachments:
            self._head = head
            return None
        return self._finish(head, ())

    def receive_plain(self, text: str) -> tuple[SocketType, str, Any, int | None] | None:
        """:meth:`receive_text`'s fast path: :func:`parse_plain`, when no attachment is awaited.

        Args:
            text: Its data (after the ``"4"``).

        Returns:
            ``(type, namespace, data, ack id)``, or ``None``: read the text
            with :meth:`receive_text`.

        Raises:
            PacketError: The array is not valid JSON.
        """
        return None if self._head is not None else parse_plain(text)

    def receive_binary(self, data: bytes) -> SocketPacket | None:
        """A binary Engine.IO message arrived: the next attachment.

        Args:
            data: The attachment.

        Returns:
            The packet once its last attachment arrived, else ``None``.

        Raises:
            PacketError: No attachment was expected, or they grew too big.
        """
        head = self._head
        if head is None:
            raise PacketError("a binary message arrived that no packet announced")
        self._size += len(data)
        if self._size > self._max_bytes:
            raise PacketError("the attachments of one packet exceed the payload limit")
        self._parts.append(data)
        if len(self._parts) < head.attachments:
            return None
        parts = tuple(self._parts)
        self._head = None
        self._parts = []
        self._size = 0
        return self._finish(head, parts)

    @staticmethod
    def _finish(head: _Head, attachments: tuple[bytes, ...]) -> SocketPacket:
        data = _reconstruct(head.data, attachments) if head.binary else head.data
        return SocketPacket(type=head.type, namespace=head.namespace, data=data, id=head.id)
