"""Fuzz target: any bytes into the engine's byte entry; only documented outcomes may come out.

Run it with atheris for N seconds (``make fuzz SECONDS=N``)::

    .venv/bin/python tests/fuzz/fuzz_engine.py tests/fuzz/corpus tests/fuzz/seeds -max_total_time=N

The same property runs under Hypothesis in ``test_fuzz_engine.py`` (part of
``make test``), which also replays every input of :func:`seeds`. An input
that breaks it (libFuzzer writes it to ``tests/fuzz/corpus/crash-*``) becomes
a named entry there, then the committed seeds are regenerated with
``python tests/fuzz/fuzz_engine.py --write-seeds tests/fuzz/seeds``.

An input is two header bytes, then the bytes the peer sends::

    byte 0  flags (see ``F_*``): prepend a valid handshake, offer permessage-deflate,
            a second, never-reading connection, backpressure "close", an ``async def``
            listener, a clock step between chunks, and how the input ends
    byte 1  chunk size in the low 7 bits (0: the whole input at once); the high bit sends
            every other chunk to the second connection instead (with its flag)

What is checked is what the engine documents (``protocol.py``, ``_connection.py``,
docs/explanation/errors.md and docs/howto/backpressure.md):

* no input call and no ``drain_actions`` raises;
* every accepted connection gets exactly one terminal event (``disconnect`` or
  ``close``) once the peer is gone, and no event after it; a refused one gets none;
* afterwards the server holds no connection and the hub none;
* a delivered message, and a fragmented message being reassembled, never exceed
  ``max_message_size``; ``conn.buffered`` stays within ``max_queue`` plus one
  frame (a message always fits an empty buffer), plus the control frames that
  answer the chunk just read (the driver stops reading past ``max_queue``);
* nothing is logged at ERROR: whatever a peer sends is its fault, not the application's.
"""

from __future__ import annotations

import base64
import importlib
import logging
import struct
import sys
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ikisocket_core import (
    EVENT_CLOSE,
    EVENT_CONNECT,
    EVENT_DISCONNECT,
    EVENT_ERROR,
    EVENT_MESSAGE,
    EVENT_PING,
    EVENT_PONG,
    EventPayload,
    Hub,
    MessageKind,
)
from ikisocket_core.protocol import CloseTransport, Flush, RunHandler, Server, ServerConnection

MAX_MESSAGE = 200
MAX_QUEUE = 600
MAX_REQUEST = 1024
#: A frame's header (at most 10 bytes) and what deflate may add to a small payload.
FRAME_SLACK = 64
#: The 101 answer and one close frame, which may also sit in the buffer.
CONTROL_SLACK = 512

F_HANDSHAKE = 0x01
F_DEFLATE = 0x02
F_SLOW_PEER = 0x04
F_BACKPRESSURE_CLOSE = 0x08
F_ASYNC = 0x10
F_CLOCK = 0x20
END_EOF, END_LOST, END_TIMEOUT, END_SHUTDOWN = range(4)

KEY = base64.b64encode(b"0123456789abcdef").decode()


def request_head(*, deflate: bool, path: str = "/ws/room") -> bytes:
    """A valid opening handshake (RFC 6455 4.1) with a fixed key."""
    lines = [
        f"GET {path} HTTP/1.1",
        "Host: localhost",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {KEY}",
        "Sec-WebSocket-Version: 13",
    ]
    if deflate:
        lines.append("Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


HEADS = {False: request_head(deflate=False), True: request_head(deflate=True)}
TERMINAL = (EVENT_DISCONNECT, EVENT_CLOSE)


class Failure(AssertionError):
    """A documented outcome did not hold."""


def check(condition: bool, what: str) -> None:
    """Like ``assert``, but kept under ``python -O`` too."""
    if not condition:
        raise Failure(what)


class _ErrorRecords(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


_logger = logging.getLogger("ikisocket")


def _run_awaitable(awaitable: Any) -> None:
    """Run a handler's awaitable; ours never suspend."""
    try:
        awaitable.__await__().send(None)
    except StopIteration:
        return
    raise Failure("a handler suspended")  # pragma: no cover - our listeners never await


class Session:
    """One hub and one server driven like an adapter, recording what the hub reports."""

    def __init__(self, flags: int) -> None:
        self.flags = flags
        self.events: list[tuple[str, str, bytes]] = []
        hub = Hub(uuid_factory=self._next_uuid)
        self._uuids = 0
        hub.websocket("/ws/:room", self._joined)
        for name in (EVENT_CONNECT, EVENT_ERROR, EVENT_PING, EVENT_PONG, *TERMINAL):
            hub.on(name, self._record)
        hub.on(EVENT_MESSAGE, self._async_message if flags & F_ASYNC else self._message)
        self.hub = hub
        self.server = Server(
            hub,
            max_message_size=MAX_MESSAGE,
            max_queue=MAX_QUEUE,
            max_request_size=MAX_REQUEST,
            backpressure="close" if flags & F_BACKPRESSURE_CLOSE else "drop",
            ping_interval=2.0,
            ping_timeout=2.0,
            handshake_timeout=5.0,
            close_timeout=3.0,
            static={"/": ("text/plain", b"hello")},
        )
        self.now = 0.0
        self.readers: set[ServerConnection] = set()  # connections whose output we take
        self.handlers: list[RunHandler] = []

    def _next_uuid(self) -> str:
        self._uuids += 1
        return f"c{self._uuids}"

    def _joined(self, kws: Any) -> None:
        kws.join(kws.params["room"])

    def _record(self, ep: EventPayload) -> None:
        self.events.append((ep.name, ep.kws.uuid, ep.data))
        check(len(ep.data) <= MAX_MESSAGE, f"{len(ep.data)} bytes delivered on {ep.name}")

    def _message(self, ep: EventPayload) -> None:
        self._record(ep)
        kws = ep.kws
        if ep.data.startswith(b"close"):
            kws.close(4000, "asked")
            return
        kws.emit(ep.data, ep.kind)  # echo: output on the connection that sent it
        kws.to(kws.params["room"]).emit(b"seen", MessageKind.BINARY)  # fan-out to the others

    def _async_message(self, ep: EventPayload) -> Any:
        # Recorded when the hub calls it; its body runs when the driver awaits it,
        # maybe after the connection ended (emitting is then a no-op).
        self._record(ep)
        return self._later(ep)

    async def _later(self, ep: EventPayload) -> None:
        kws = ep.kws
        if ep.data.startswith(b"close"):
            kws.close(4000, "asked")
            return
        kws.emit(ep.data, ep.kind)
        kws.to(kws.params["room"]).emit(b"seen", MessageKind.BINARY)

    # -- the driver ----------------------------------------------------------------------

    def connect(self, *, reads: bool) -> ServerConnection:
        conn = self.server.connect(now=self.now, client=("192.0.2.1", 1000 + len(self.readers)))
        if reads:
            self.readers.add(conn)
        return conn

    def drain(self) -> None:
        for _ in range(1000):
            actions = self.server.drain_actions()
            if not actions:
                return
            for action in actions:
                if isinstance(action, Flush):
                    for conn in action.connections:
                        if conn in self.readers:
                            conn.take()  # the peer reads what we wrote
                elif isinstance(action, CloseTransport):
                    action.connection.take()
                else:
                    self.handlers.append(action)
            self.check_bounds(0)
        raise Failure("drain_actions never ran dry")  # pragma: no cover

    def run_handlers(self) -> None:
        while self.handlers:
            handler = self.handlers.pop(0)
            _run_awaitable(handler.awaitable)
            self.server.handler_done(handler.connection)
            self.drain()

    def feed(self, conn: ServerConnection, chunk: bytes) -> None:
        if self.flags & F_CLOCK:  # time passes, even while handlers run
            self.now += 1.0
            self.server.tick(self.now)
            self.drain()
        # A driver stops reading while can_read is False: run the handlers, let the peer read.
        self.run_handlers()
        if not conn.can_read:
            if conn not in self.readers:
                return  # it does not read: the driver stops reading it too (and drops this)
            conn.take()
        self.server.receive_data(conn, chunk, self.now)
        self.check_bounds(len(chunk))
        self.drain()

    def check_bounds(self, read: int) -> None:
        limit = MAX_QUEUE + MAX_MESSAGE + FRAME_SLACK + CONTROL_SLACK + read
        for conn in self.server.connections:
            check(conn.buffered <= limit, f"{conn.buffered} bytes buffered (bound {limit})")
            reader = conn._reader
            frag = reader.message_size if reader is not None else 0
            check(frag <= MAX_MESSAGE, f"{frag} bytes reassembled past max_message_size")

    def end(self, how: int) -> None:
        if how != END_LOST:  # a transport may also break while handlers run
            self.run_handlers()
        if how == END_TIMEOUT:
            for _ in range(4):  # every deadline (handshake, ping, pong, close) runs out
                self.now += 10.0
                self.server.tick(self.now)
                self.drain()
                self.run_handlers()
        elif how == END_SHUTDOWN:
            self.server.shutdown()
            self.drain()
            self.run_handlers()
        for conn in self.server.connections:
            if how == END_LOST:
                self.server.connection_lost(conn)
            else:
                self.server.receive_eof(conn)
            self.drain()
        self.run_handlers()

    def verify(self, logged: list[logging.LogRecord]) -> None:
        check(self.server.connections == (), "the server still holds connections")
        check(len(self.hub) == 0, "the hub still holds connections")
        connected = {uuid for name, uuid, _ in self.events if name == EVENT_CONNECT}
        ended: dict[str, int] = {}
        for position, (name, uuid, _) in enumerate(self.events):
            if name in TERMINAL:
                ended[uuid] = ended.get(uuid, 0) + 1
                later = [e for e in self.events[position + 1 :] if e[1] == uuid]
                check(not later, f"{uuid}: {later} after its terminal event")
        check(set(ended) == connected, f"ended {sorted(ended)}, connected {sorted(connected)}")
        check(all(n == 1 for n in ended.values()), f"terminal events per connection: {ended}")
        errors = [r.getMessage() for r in logged]
        check(not errors, f"logged at ERROR: {errors}")


def chunks(data: bytes, size: int) -> Iterator[bytes]:
    """``data`` in pieces of ``size`` bytes (0: whole)."""
    if not size:
        if data:
            yield data
        return
    for start in range(0, len(data), size):
        yield data[start : start + size]


def run_one(data: bytes) -> None:
    """Drive one session with ``data``; raise if anything undocumented happens.

    Args:
        data: Two header bytes (flags, chunk size), then the peer's bytes.
    """
    if len(data) < 2:
        return
    flags, body = data[0], data[2:]
    errors = _ErrorRecords()
    _logger.addHandler(errors)
    try:
        _run(Session(flags), data[1], body, errors.records)
    finally:
        _logger.removeHandler(errors)


def _run(session: Session, chunking: int, body: bytes, logged: list[logging.LogRecord]) -> None:
    flags, size = session.flags, chunking & 0x7F
    deflate = bool(flags & F_DEFLATE)
    conn = session.connect(reads=True)
    targets = [conn]
    if flags & F_SLOW_PEER:
        # A valid peer in the same room that never reads: it gets the fan-out.
        slow = session.connect(reads=False)
        session.feed(slow, HEADS[not deflate])
        if chunking & 0x80:
            targets.append(slow)
    if flags & F_HANDSHAKE:
        body = HEADS[deflate] + body
    for number, piece in enumerate(chunks(body, size)):
        session.feed(targets[number % len(targets)], piece)
    session.end(flags >> 6)
    session.verify(logged)


# -- seeds ---------------------------------------------------------------------------------


def frame(opcode: int, payload: bytes, *, fin: bool = True, rsv: int = 0) -> bytes:
    """A masked client frame (RFC 6455 5.2), with a fixed mask."""
    mask = b"\x01\x02\x03\x04"
    n = len(payload)
    head = bytes([(0x80 if fin else 0) | rsv << 4 | opcode])
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 65536:
        head += struct.pack("!BH", 0x80 | 126, n)
    else:
        head += struct.pack("!BQ", 0x80 | 127, n)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def deflated(payload: bytes) -> bytes:
    """``payload`` compressed as a permessage-deflate message (RFC 7692 7.2.1)."""
    compressor = zlib.compressobj(wbits=-15)
    data = compressor.compress(payload) + compressor.flush(zlib.Z_SYNC_FLUSH)
    return data[:-4]


def seeds() -> dict[str, bytes]:
    """A few inputs that reach deep: handshakes, valid and invalid frames, odd closes."""
    text, binary, close, ping, pong, cont = 1, 2, 8, 9, 10, 0
    plain = F_HANDSHAKE
    packed = F_HANDSHAKE | F_DEFLATE
    everyone = F_SLOW_PEER | F_ASYNC | F_CLOCK
    return {
        "garbage-head": bytes([0, 0]) + b"GET / HTTP/1.1\r\nHost: x\r\n\x00\r\n\r\n",
        "static-page": bytes([0, 7]) + b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        "handshake-split": bytes([0, 3]) + HEADS[True] + frame(text, b"hi"),
        "bad-key": bytes([0, 0]) + HEADS[False].replace(KEY.encode(), b"short"),
        "chat": bytes([plain, 0])
        + frame(text, b"hello")
        + frame(binary, b"\x00\xff")
        + frame(ping, b"p")
        + frame(pong, b"q")
        + frame(text, b"close me"),
        "fragments": bytes([plain | F_ASYNC, 5])
        + frame(text, b"hel", fin=False)
        + frame(ping, b"")
        + frame(cont, b"lo"),
        "too-big": bytes([plain | F_SLOW_PEER, 0]) + frame(binary, b"x" * (MAX_MESSAGE + 1)),
        "too-big-fragments": bytes([plain, 0])
        + b"".join(frame(cont if i else binary, b"y" * 60, fin=False) for i in range(5)),
        "bad-utf8": bytes([plain, 0]) + frame(text, b"\xc3\x28"),
        "unmasked": bytes([plain, 0]) + b"\x81\x02hi",
        "close-codes": bytes([plain, 0]) + frame(close, struct.pack("!H", 1000) + b"bye"),
        "close-1005": bytes([plain, 0]) + frame(close, b""),
        "close-one-byte": bytes([plain, 0]) + frame(close, b"\x03"),
        "close-bad-code": bytes([plain, 0]) + frame(close, struct.pack("!H", 999)),
        "close-bad-reason": bytes([plain, 0]) + frame(close, struct.pack("!H", 4000) + b"\xff"),
        "deflate": bytes([packed | everyone, 0])
        + frame(text, deflated(b"hello hello hello"), rsv=4)
        + frame(binary, b"raw"),
        "deflate-bomb": bytes([packed, 0]) + frame(binary, deflated(b"\x00" * 100_000), rsv=4),
        "deflate-fragments": bytes([packed, 9])
        + frame(text, deflated(b"abcabcabc")[:3], fin=False, rsv=4)
        + frame(cont, deflated(b"abcabcabc")[3:]),
        "deflate-garbage": bytes([packed, 0]) + frame(binary, b"\xff\xfe\xfd", rsv=4),
        "rsv-unnegotiated": bytes([plain, 0]) + frame(binary, b"x", rsv=4),
        "slow-close": bytes([plain | F_SLOW_PEER | F_BACKPRESSURE_CLOSE | 0x80, 0])
        + b"".join(frame(binary, b"z" * 150) for _ in range(8)),
        "pings-flood": bytes([plain | 0x40, 1]) + frame(ping, b"p" * 125) * 10,
        "shutdown": bytes([plain | 0xC0, 0]) + frame(text, b"hi"),
    }


def main(argv: list[str]) -> None:
    """Run atheris (libFuzzer) on :func:`run_one`; ``argv`` takes libFuzzer's options.

    ``--write-seeds DIR`` writes :func:`seeds` there instead.
    """
    if argv[1:2] == ["--write-seeds"]:
        out = Path(argv[2])
        out.mkdir(parents=True, exist_ok=True)
        for name, data in seeds().items():
            (out / name).write_bytes(data)
        return
    _logger.propagate = False  # the peer's faults are logged at INFO: keep the output clean
    atheris: Any = importlib.import_module("atheris")
    atheris.instrument_all()
    atheris.Setup(argv, run_one)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
