"""Frames: building outgoing ones by hand, and permessage-deflate with a bounded inflater."""

from __future__ import annotations

import struct
import zlib
from typing import Final

from wsproto.connection import Connection as WSConnection
from wsproto.events import BytesMessage, TextMessage
from wsproto.extensions import PerMessageDeflate
from wsproto.handshake import server_extensions_handshake

from ._errors import RemoteProtocolError
from ._events import MessageKind

__all__: list[str] = []

#: The two header bytes of every short (< 126 bytes) final frame, indexed by opcode.
_SHORT_HEADS: Final = tuple(tuple(bytes((0x80 | op, n)) for n in range(126)) for op in range(11))
_pack_head_16: Final = struct.Struct("!BBH").pack
_pack_head_64: Final = struct.Struct("!BBQ").pack
_pack_code: Final = struct.Struct("!H").pack


def _frame(opcode: int, payload: bytes) -> bytes:
    """Frame ``payload`` as one final, unmasked server frame (RFC 6455 section 5.2).

    Only for data frames of connections without extensions (no RSV bit is ever
    set) and for control frames (never compressed, RFC 7692 6.1): wsproto has
    no public way to frame text that is already UTF-8 without decoding it back
    to ``str`` first.

    Args:
        opcode: 1 (text), 2 (binary), or 9/10 (ping/pong, at most 125 bytes).
        payload: The application data, already UTF-8 for text.

    Returns:
        FIN + opcode, the 7-bit length or 126/127 and a 16/64-bit length, then
        the payload.
    """
    n = len(payload)
    if n < 126:
        return _SHORT_HEADS[opcode][n] + payload
    if n < 65536:
        return _pack_head_16(0x80 | opcode, 126, n) + payload
    return _pack_head_64(0x80 | opcode, 127, n) + payload


def deflate_frame(ws: WSConnection | None, data: bytes, kind: MessageKind) -> bytes:
    """The frame of one message for a connection with its own deflate context.

    Args:
        ws: The wsproto connection that frames what the connection sends
            (permessage-deflate was negotiated).
        data: The payload (UTF-8 for text).
        kind: ``TEXT`` or ``BINARY``.

    Returns:
        The frame, compressed by the connection's own context (RFC 7692 7.2).
    """
    assert ws is not None
    if kind is MessageKind.TEXT:
        return ws.send(TextMessage(data=data.decode("utf-8")))
    return ws.send(BytesMessage(data=data))


def _close_frame(code: int, reason: str) -> bytes:
    """A close frame with ``code`` and ``reason`` (RFC 6455 5.5.1).

    The hub lets only codes a close frame may carry and reasons of at most 123
    UTF-8 bytes through (``Hub.close``), and the engine's own reasons are short
    ASCII, so the payload always fits a control frame. (A peer's close frame
    without a code is answered with an empty one: ``_SHORT_HEADS[8][0]``.)

    Args:
        code: The close code.
        reason: The close reason.

    Returns:
        The frame.
    """
    return _frame(8, _pack_code(code) + reason.encode("utf-8"))


class _Inflater:
    """The inbound half of permessage-deflate, never producing more than the message limit.

    A few KiB of deflate can inflate to gigabytes. Each frame's payload is
    inflated with zlib's ``max_length`` set to what the message may still grow
    by (plus one byte, to notice the excess), and a message that would exceed
    ``limit`` fails with 1009 (RFC 6455 7.4.1) before more than that was ever
    inflated. RFC 7692 7.2.2: the sender removed the final ``00 00 ff ff`` of
    each message; it is appended here when the message ends.

    Args:
        limit: The message limit (``None``: no limit).
        window_bits: The client's ``client_max_window_bits`` (9-15).
        no_context_takeover: Whether the client resets its compressor after
            every message (``client_no_context_takeover``): then so do we.
    """

    __slots__ = ("_decompressor", "_inflated", "_limit", "_reset", "_wbits")

    def __init__(self, limit: int | None, window_bits: int, no_context_takeover: bool) -> None:
        self._limit = limit
        self._wbits = -window_bits
        self._reset = no_context_takeover
        self._decompressor = zlib.decompressobj(self._wbits)
        self._inflated = 0

    def inflate(self, data: bytes, fin: bool) -> bytes:
        """Inflate one frame's payload of a compressed message.

        Args:
            data: The payload as it arrived (unmasked).
            fin: Whether this frame ends the message.

        Returns:
            What it inflates to.

        Raises:
            RemoteProtocolError: 1007 for data zlib cannot inflate, 1009 when
                the message grows past the limit.
        """
        if fin:
            data += b"\x00\x00\xff\xff"
        decompressor = self._decompressor
        limit = self._limit
        try:
            if limit is None:
                out = decompressor.decompress(data)
            else:
                room = limit - self._inflated
                out = decompressor.decompress(data, room + 1)
                if len(out) > room:
                    raise RemoteProtocolError(
                        f"compressed message inflates past {limit} bytes", close_code=1009
                    )
                self._inflated += len(out)
        except zlib.error as exc:
            raise RemoteProtocolError(f"invalid compressed data: {exc}", close_code=1007) from None
        if fin:
            self._inflated = 0
            if self._reset:
                self._decompressor = zlib.decompressobj(self._wbits)
        return out


def negotiate_extensions(offers: list[str]) -> tuple[bytes | None, PerMessageDeflate | None]:
    """Answer a client's ``Sec-WebSocket-Extensions`` offers (only permessage-deflate).

    Args:
        offers: The header's values.

    Returns:
        The response header value and the negotiated extension (both ``None``
        when nothing was accepted). wsproto compresses what we send with it;
        what we receive is inflated by :class:`_Inflater` with its settings.
    """
    if not offers:
        return None, None
    deflate = PerMessageDeflate()
    try:
        accepted = server_extensions_handshake(offers, [deflate])
    except ValueError:  # RFC 7692 5: decline an offer with invalid parameters
        return None, None
    if not accepted:
        return None, None
    return accepted, deflate
