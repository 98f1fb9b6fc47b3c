"""Frames: building outgoing ones by hand, and permessage-deflate with a bounded inflater."""

from __future__ import annotations

import struct
import zlib
from typing import TYPE_CHECKING

from wsproto.extensions import Extension, PerMessageDeflate
from wsproto.frame_protocol import CloseReason
from wsproto.handshake import server_extensions_handshake

if TYPE_CHECKING:
    from wsproto.frame_protocol import FrameDecoder, FrameProtocol

__all__: list[str] = []

#: The two header bytes of every short (< 126 bytes) final frame, indexed by opcode.
_SHORT_HEADS = tuple(tuple(bytes((0x80 | op, n)) for n in range(126)) for op in range(3))
_pack_head_16 = struct.Struct("!BBH").pack
_pack_head_64 = struct.Struct("!BBQ").pack


def _frame(opcode: int, payload: bytes) -> bytes:
    """Frame ``payload`` as one final, unmasked server frame (RFC 6455 section 5.2).

    Only for connections without extensions (no RSV bit is ever set): wsproto
    has no public way to frame text that is already UTF-8 without decoding it
    back to ``str`` first. Incoming frames are always parsed by wsproto.

    Args:
        opcode: 1 (text) or 2 (binary).
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


class _BoundedDeflate(PerMessageDeflate):
    """permessage-deflate whose inflater never produces more than the message limit allows.

    A few KiB of deflate can inflate to gigabytes. wsproto inflates each
    chunk of frame payload whole; here each chunk is inflated with zlib's
    ``max_length`` set to what the message may still grow by (plus one byte,
    to notice the excess), and a message that would exceed ``limit`` fails
    with 1009 (RFC 6455 7.4.1) before more than that was ever inflated.
    """

    def __init__(self, limit: int | None) -> None:
        super().__init__()
        self._limit = limit
        self._inflated = 0

    def frame_inbound_payload_data(
        self, proto: FrameDecoder | FrameProtocol, data: bytes
    ) -> bytes | CloseReason:
        """Inflate one chunk of a frame's payload, bounded by the message limit."""
        limit = self._limit
        decompressor = self._decompressor
        if (
            limit is None
            or decompressor is None
            or not self._inbound_compressed
            or not self._inbound_is_compressible
        ):
            return super().frame_inbound_payload_data(proto, data)
        room = limit - self._inflated
        try:
            out = decompressor.decompress(bytes(data), room + 1)
        except zlib.error:
            return CloseReason.INVALID_FRAME_PAYLOAD_DATA
        self._inflated += len(out)
        if self._inflated > limit or decompressor.unconsumed_tail:
            return CloseReason.MESSAGE_TOO_BIG
        return out

    def frame_inbound_complete(
        self, proto: FrameDecoder | FrameProtocol, fin: bool
    ) -> bytes | CloseReason | None:
        """End a frame; the count starts again after a message's last frame."""
        data_frame = self._inbound_is_compressible  # not a control frame between fragments
        # The sync tail inflates to nothing more: every payload chunk was inflated
        # to the end within the room it had (or failed), so zlib holds no output back.
        out = super().frame_inbound_complete(proto, fin)
        if fin and data_frame:
            self._inflated = 0
        return out


def negotiate_extensions(
    offers: list[str], max_message_size: int | None
) -> tuple[bytes | None, list[Extension]]:
    """Answer a client's ``Sec-WebSocket-Extensions`` offers (only permessage-deflate).

    Args:
        offers: The header's values.
        max_message_size: The engine's message limit, which bounds inflation.

    Returns:
        The response header value (``None`` when nothing was accepted) and the
        extensions for wsproto.
    """
    if not offers:
        return None, []
    deflate = _BoundedDeflate(max_message_size)
    try:
        accepted = server_extensions_handshake(offers, [deflate])
    except ValueError:  # RFC 7692 5: decline an offer with invalid parameters
        return None, []
    if not accepted:
        return None, []
    return accepted, [deflate]
