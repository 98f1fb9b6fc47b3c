"""The receive path of an open connection: frames parsed straight from the read buffer.

Theory of operation. Once a connection is upgraded, everything the peer sends
is frames (RFC 6455 5.2). :class:`FrameReader` keeps the bytes read and not yet
parsed, and :meth:`FrameReader.next` takes whole frames out of them in a loop
that costs a few integer operations per header: it returns each complete
*message* (its fragments joined, inflated when compressed, its UTF-8 checked)
and each control frame as one ``(opcode, payload)`` tuple, and ``None`` when
it needs more bytes. The connection calls it until ``None`` (or until an
``async def`` listener holds the rest back), so several frames per read cost
one call each and no event object.

Every check of RFC 6455 and RFC 7692 is made, most of them from the header
before the payload is waited for: a client frame must be masked (5.1), RSV bits
need an extension (5.2), opcodes 3-7 and 11-15 are reserved (5.2), control
frames are final and at most 125 bytes (5.5), fragments come in order (5.4),
lengths use the shortest form and 63 bits (5.2), close frames carry a valid
code and a UTF-8 reason (5.5.1, 7.4), text is UTF-8 (8.1). The message limit
(``max_message_size``) is checked from the header's length and the message's
running total *before* the payload is buffered, so a peer cannot make us hold
more than one limit's worth. Compressed frames (RSV1 on a message's first
frame only, RFC 7692 6) are inflated by the bounded :class:`~ikisocket_core.
_frames._Inflater`; their payload is bounded by the limit plus deflate's
largest expansion.

A failure raises :class:`~ikisocket_core.RemoteProtocolError` carrying the
close code (1002, 1007 or 1009); after it, or after a close frame, the reader
is finished and ignores further input. wsproto is this module's oracle: a
Hypothesis test (``tests/core/test_reader_differential.py``) feeds the same
byte streams to both and compares messages, close codes and error classes.

Unmasking is the one step Python cannot do in bulk at C speed: the stdlib's
best (four ``bytes.translate`` over strided slices, or one big-integer XOR) runs
at 2-3 ns a byte, 3-4 ms for a MiB, most of what a large message costs. Where
``websockets`` is installed with its C extension (the ``speedups`` extra),
its ``apply_mask`` (SSE2, about 0.1 ms a MiB) does it instead, for every
payload; :data:`~ikisocket_core.native_unmask` says which one runs.
"""

from __future__ import annotations

import codecs
import struct
from collections.abc import Callable
from importlib import import_module
from typing import Final

from ._errors import RemoteProtocolError
from ._frames import _Inflater

__all__: list[str] = []

#: Opcodes (RFC 6455 5.2).
CONTINUATION: Final = 0x0
TEXT: Final = 0x1
BINARY: Final = 0x2
CLOSE: Final = 0x8
PING: Final = 0x9
PONG: Final = 0xA

_unpack_16: Final = struct.Struct("!H").unpack_from
_unpack_64: Final = struct.Struct("!Q").unpack_from
_from_bytes: Final = int.from_bytes
_utf8_decoder: Final = codecs.getincrementaldecoder("utf-8")
_XOR_TABLES: Final = tuple(bytes(a ^ b for a in range(256)) for b in range(256))

#: Below this many bytes one big-integer XOR unmasks fastest; above it, four translates.
_INT_XOR_MAX: Final = 1024
#: From this many bytes the C unmasking reads the payload where it lies in the read buffer
#: (a memoryview) instead of a copy: a copy that large is freshly mapped memory, which
#: costs a page fault per 4 KiB on first touch.
_VIEW_MIN: Final = 64 * 1024

#: Close codes a peer may send (RFC 6455 7.4.1-7.4.2): the registered ones below 3000
#: (1004, 1005, 1006 and 1015 excluded), and 3000-4999.
_VALID_CLOSE: Final = frozenset((1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013))

#: Whether a first header byte needs a closer look: an RSV bit, a reserved opcode, or a
#: fragmented control frame (the RSV1 of a compressed data frame is let through there).
_ODD_FIRST_BYTE: Final = tuple(
    bool(b0 & 0x70) or (2 < b0 & 0x0F < 8) or b0 & 0x0F > 10 or (b0 & 0x08 and not b0 & 0x80)
    for b0 in range(256)
)


def _load_c_unmask() -> Callable[[bytes | memoryview, bytes], bytes] | None:
    """The C ``apply_mask(data, mask)`` of ``websockets`` when it is installed, else None."""
    try:
        module = import_module("websockets.speedups")
    except ImportError:  # websockets is not installed, or was installed without its C part
        return None
    function = getattr(module, "apply_mask", None)
    return function if callable(function) else None


#: The C unmasking function in use, or ``None``: the pure-Python one below.
_c_unmask: Final = _load_c_unmask()


def _unmask(data: bytes, mask: bytes) -> bytes:
    """XOR ``data`` with the 4-byte ``mask`` repeated (RFC 6455 5.3), in C if installed.

    Args:
        data: The masked payload (not empty).
        mask: The frame's masking key.

    Returns:
        The unmasked payload.
    """
    if _c_unmask is not None:
        return _c_unmask(data, mask)
    return _unmask_py(data, mask)


def _unmask_py(data: bytes, mask: bytes) -> bytes:
    """XOR ``data`` with the 4-byte ``mask`` repeated (RFC 6455 5.3), in bulk, in Python.

    Args:
        data: The masked payload (not empty).
        mask: The frame's masking key.

    Returns:
        The unmasked payload.
    """
    n = len(data)
    if n <= _INT_XOR_MAX:
        return (
            _from_bytes(data, "little") ^ _from_bytes((mask * ((n >> 2) + 1))[:n], "little")
        ).to_bytes(n, "little")
    out = bytearray(data)
    tables = _XOR_TABLES
    out[0::4] = out[0::4].translate(tables[mask[0]])
    out[1::4] = out[1::4].translate(tables[mask[1]])
    out[2::4] = out[2::4].translate(tables[mask[2]])
    out[3::4] = out[3::4].translate(tables[mask[3]])
    return bytes(out)


def _extended_length(buf: bytes, pos: int, short: int) -> tuple[int, int]:
    """Read a 16- or 64-bit payload length (RFC 6455 5.2: the shortest form, 63 bits).

    Args:
        buf: The buffer.
        pos: Where the frame starts.
        short: The 7-bit length field (126 or 127).

    Returns:
        Where the masking key ends and the payload length, or ``(0, bytes the
        header needs)`` when it is not all there yet.

    Raises:
        RemoteProtocolError: 1002 for a length that did not need this form.
    """
    if short == 126:
        if len(buf) < pos + 8:
            return 0, 8
        n = _unpack_16(buf, pos + 2)[0]
        if n < 126:
            raise _failure("2-byte length for a payload of less than 126 bytes")
        return pos + 8, n
    if len(buf) < pos + 14:
        return 0, 14
    n = _unpack_64(buf, pos + 2)[0]
    if n < 65536 or n >> 63:
        raise _failure("8-byte length too small or with its top bit set")
    return pos + 14, n


def _failure(reason: str, code: int = 1002) -> RemoteProtocolError:
    return RemoteProtocolError(reason, close_code=code)


def _check_utf8(data: bytes) -> None:
    if not data.isascii():
        try:
            data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise _failure(f"invalid UTF-8 in a text message: {exc}", 1007) from None


def parse_close(payload: bytes) -> tuple[int, str]:
    """Validate a close frame's payload (RFC 6455 5.5.1, 7.4).

    Args:
        payload: The unmasked payload (at most 125 bytes).

    Returns:
        The close code (1005 when there was none) and the reason.

    Raises:
        RemoteProtocolError: 1002 for a one-byte payload or a code a peer may
            not send, 1007 for a reason that is not UTF-8.
    """
    if not payload:
        return 1005, ""
    if len(payload) == 1:
        raise _failure("close frame with a one-byte payload")
    code = (payload[0] << 8) | payload[1]
    if not (code in _VALID_CLOSE or 3000 <= code <= 4999):
        raise _failure(f"close frame with invalid code {code}")
    try:
        reason = payload[2:].decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _failure(f"invalid UTF-8 in a close reason: {exc}", 1007) from None
    return code, reason


class FrameReader:
    """Parses a client's frames into whole messages and control frames.

    Args:
        limit: The largest message accepted, in bytes (``None``: no limit).
        inflater: The bounded inflater when permessage-deflate was
            negotiated, else ``None`` (then RSV1 is a protocol error).
    """

    __slots__ = (
        "_buf",
        "_checked",
        "_checked_chunks",
        "_chunks",
        "_compressed",
        "_decoder",
        "_done",
        "_frag",
        "_frag_size",
        "_inflater",
        "_limit",
        "_message_op",
        "_need",
        "_partial",
        "_pending",
        "_pos",
        "_wire_limit",
        "close_code",
        "close_reason",
    )

    def __init__(self, limit: int | None, inflater: _Inflater | None = None) -> None:
        self._limit = limit
        self._inflater = inflater
        # Deflate's worst case is about 5 bytes per 64 KiB stored: a compressed frame of
        # an acceptable message is never much longer than the limit.
        self._wire_limit = None if limit is None else limit + (limit >> 3) + 256
        self._buf = b""  # the bytes being parsed ...
        self._pos = 0  # ... from this offset on
        self._chunks: list[bytes] = []  # later reads, joined once the frame is complete
        self._pending = 0  # their size
        self._need = 0  # bytes from _pos the frame being waited for needs (0: unknown)
        self._message_op = 0  # TEXT or BINARY while a fragmented message is open, else 0
        self._compressed = False  # whether that message is compressed
        self._frag: list[bytes] = []  # its parts so far
        self._frag_size = 0  # their size (inflated)
        self._decoder: codecs.IncrementalDecoder | None = None  # its UTF-8 check
        # Failing fast on invalid UTF-8 in a text frame still arriving: the decoder that
        # checks it (None once the frame is whole), its payload bytes checked so far, and
        # how many of the later reads (all of them this frame's) that covers.
        self._partial: codecs.IncrementalDecoder | None = None
        self._checked = 0
        self._checked_chunks = 0
        self._done = False
        #: The close frame's code and reason, once :meth:`next` returned ``CLOSE``.
        self.close_code = 1005
        self.close_reason = ""

    @property
    def message_size(self) -> int:
        """Bytes of the fragmented message being received (0 between messages)."""
        return self._frag_size

    def feed(self, data: bytes) -> None:
        """Add bytes read from the peer; ignored once a close frame or a failure ended reading.

        Args:
            data: The bytes.
        """
        if self._done:
            return
        if not self._chunks and self._pos >= len(self._buf):
            self._buf = data
            self._pos = 0
        else:
            self._chunks.append(data)
            self._pending += len(data)

    def _gather(self) -> bool:
        """Join the later reads to the unparsed bytes, if that can complete the frame."""
        if not self._chunks or len(self._buf) - self._pos + self._pending < self._need:
            return False
        self._chunks.insert(0, self._buf[self._pos :])
        self._buf = b"".join(self._chunks)
        self._pos = 0
        self._chunks = []
        self._pending = 0
        self._partial = None  # a frame checked in part is whole: it is checked again, whole
        return True

    def next(self) -> tuple[int, bytes] | None:
        """Take the next message or control frame out of the bytes fed so far.

        Returns:
            ``(TEXT or BINARY, payload)`` for a whole message (UTF-8 checked
            for text), ``(PING or PONG, payload)``, ``(CLOSE, payload)`` for a
            valid close frame (then :attr:`close_code` and
            :attr:`close_reason` hold what it says, and nothing more is
            read), or ``None`` when more bytes are needed.

        Raises:
            RemoteProtocolError: The peer broke RFC 6455 or RFC 7692, or a
                message exceeds the limit; the error's ``close_code`` is the
                one to fail the connection with. Nothing more is read.
        """
        limit = self._limit
        odd = _ODD_FIRST_BYTE
        try:
            while True:
                buf = self._buf
                pos = self._pos
                end = len(buf)
                if end - pos < 2:
                    if self._chunks and self._gather():  # (no call when nothing waits)
                        continue
                    return None
                b0 = buf[pos]
                b1 = buf[pos + 1]
                opcode = b0 & 0x0F
                n = b1 & 0x7F
                if odd[b0] or not b1 & 0x80 or (n > 125 and opcode >= CLOSE):
                    self._bad_header(b0, b1)
                if n < 126:
                    head = pos + 6
                else:
                    head, n = _extended_length(buf, pos, n)
                    if not head:  # n is what the header needs
                        self._need = n
                        if self._gather():
                            continue
                        return None
                stop = head + n
                if opcode < CLOSE and (
                    opcode == CONTINUATION
                    or self._message_op
                    or b0 & 0x40
                    or (limit is not None and n > limit)
                ):
                    self._check_data(b0, opcode, n)
                if stop > end:
                    self._need = stop - pos
                    if self._gather():
                        continue
                    if end >= head and (
                        opcode == TEXT or (opcode == CONTINUATION and self._decoder is not None)
                    ):
                        self._fail_fast(buf, head, end, b0)
                    return None
                self._need = 0
                self._pos = stop
                # _unmask inlined, one case per line: nothing to unmask; the C one (from
                # 64 KiB on the read buffer itself); the integer XOR for the short payloads of
                # most frames; the translates.
                payload = (
                    b""
                    if not n
                    else _c_unmask(
                        buf[head:stop] if n < _VIEW_MIN else memoryview(buf)[head:stop],
                        buf[head - 4 : head],
                    )
                    if _c_unmask is not None
                    else (
                        _from_bytes(buf[head:stop], "little")
                        ^ _from_bytes((buf[head - 4 : head] * ((n >> 2) + 1))[:n], "little")
                    ).to_bytes(n, "little")
                    if n <= _INT_XOR_MAX
                    else _unmask_py(buf[head:stop], buf[head - 4 : head])
                )
                if opcode >= CLOSE:
                    if opcode == CLOSE:
                        self.close_code, self.close_reason = parse_close(payload)
                        self._finish()
                    return opcode, payload
                if b0 & 0x80 and not self._message_op and not b0 & 0x40:
                    # The common case: a whole uncompressed message in one frame.
                    if opcode == TEXT:
                        _check_utf8(payload)
                    return opcode, payload
                message = self._fragment(b0, opcode, payload)
                if message is not None:
                    return message
        except RemoteProtocolError:
            self._finish()
            raise

    def _fail_fast(self, buf: bytes, head: int, end: int, b0: int) -> None:
        """Check the part of a text frame that arrived, so invalid UTF-8 fails now (RFC 6455 8.1).

        Only for uncompressed text (compressed text is checked once inflated,
        when its frame is whole): each read is unmasked and fed, once, to a
        decoder that continues the message's.
        """
        if b0 & 0x40 or (b0 & 0x0F == CONTINUATION and self._compressed):
            return
        key = buf[head - 4 : head]
        partial = self._partial
        if partial is None:
            partial = self._partial = _utf8_decoder()
            if b0 & 0x0F == CONTINUATION:
                partial.setstate(self._decoder.getstate())  # type: ignore[union-attr]
            self._checked = 0
            self._checked_chunks = 0
            self._check_part(partial, buf[head:end], key)
        chunks = self._chunks
        while self._checked_chunks < len(chunks):
            self._check_part(partial, chunks[self._checked_chunks], key)
            self._checked_chunks += 1

    def _check_part(self, partial: codecs.IncrementalDecoder, part: bytes, key: bytes) -> None:
        if not part:
            return
        turn = self._checked & 3
        data = _unmask(part, key[turn:] + key[:turn])
        try:
            # ASCII after a whole character leaves the decoder as it was: no str made for it.
            if not data.isascii() or partial.getstate()[0]:
                partial.decode(data, False)
        except UnicodeDecodeError as exc:
            raise _failure(f"invalid UTF-8 in a text message: {exc}", 1007) from None
        self._checked += len(part)

    def _bad_header(self, b0: int, b1: int) -> None:
        """Fail a frame whose first two bytes break a rule, or let an RSV1 data frame through."""
        opcode = b0 & 0x0F
        if opcode > PONG or 2 < opcode < CLOSE:
            raise _failure(f"reserved opcode {opcode:#x}")
        if not b1 & 0x80:
            raise _failure("unmasked client frame")  # RFC 6455 5.1
        if opcode >= CLOSE:
            if not b0 & 0x80:
                raise _failure("fragmented control frame")
            if b1 & 0x7F > 125:
                raise _failure("control frame longer than 125 bytes")
            raise _failure("RSV bits set on a control frame")  # the one reason left
        if b0 & 0x30 or (b0 & 0x40 and self._inflater is None):
            raise _failure("RSV bits set without an extension that defines them")
        if b0 & 0x40 and opcode == CONTINUATION:
            raise _failure("RSV1 set on a continuation frame")  # RFC 7692 6.1

    def _check_data(self, b0: int, opcode: int, n: int) -> None:
        """Check a data frame's place in its message and its size, before its payload."""
        if opcode == CONTINUATION:
            if not self._message_op:
                raise _failure("continuation frame without a message to continue")
        elif self._message_op:
            raise _failure("new data frame inside a fragmented message")
        if self._limit is None:
            return
        if b0 & 0x40 or (opcode == CONTINUATION and self._compressed):
            if n > self._wire_limit:  # type: ignore[operator]
                raise _failure(f"compressed frame of {n} bytes exceeds the limit", 1009)
        elif self._frag_size + n > self._limit:
            raise _failure(f"message of {self._frag_size + n}+ bytes exceeds {self._limit}", 1009)

    def _fragment(self, b0: int, opcode: int, payload: bytes) -> tuple[int, bytes] | None:
        """One frame of a fragmented or compressed message; the message once it is whole."""
        fin = bool(b0 & 0x80)
        if opcode != CONTINUATION:
            self._message_op = opcode
            self._compressed = bool(b0 & 0x40)
            self._decoder = _utf8_decoder() if opcode == TEXT and not fin else None
        if self._compressed:
            payload = self._inflater.inflate(payload, fin)  # type: ignore[union-attr]
        self._frag_size += len(payload)
        decoder = self._decoder
        if decoder is not None:
            try:
                decoder.decode(payload, fin)
            except UnicodeDecodeError as exc:
                raise _failure(f"invalid UTF-8 in a text message: {exc}", 1007) from None
        if not fin:
            self._frag.append(payload)
            return None
        op = self._message_op
        if self._frag:
            self._frag.append(payload)
            payload = b"".join(self._frag)
            self._frag = []
        elif op == TEXT and decoder is None:
            _check_utf8(payload)  # a single compressed frame: checked once, whole
        self._message_op = 0
        self._frag_size = 0
        self._decoder = None
        return op, payload

    def _finish(self) -> None:
        """Nothing more is read: drop what was buffered."""
        self._done = True
        self._buf = b""
        self._pos = 0
        self._chunks = []
        self._pending = 0
        self._frag = []
        self._frag_size = 0
        self._decoder = None
        self._partial = None
