"""Hostile input cannot grow the server's memory: its peak RSS stays within a bound.

The server is ``proof_app.py`` in a subprocess (asyncio and trio adapters,
default limits); the test reads the server process's peak resident set size
(``VmHWM`` in ``/proc/<pid>/status``) once it has started and served a
warm-up client, then again after the abuse. The abuse may not raise it by
:data:`BOUND` or more, and a well-behaved client must still get its echo
while the abuser is connected.

* A client completes the handshake, then writes masked 125-byte pings as fast
  as it can and never reads: the pongs must not pile up (they count against
  ``max_queue`` and the server stops reading the flooder).
* Ten clients each send one permessage-deflate "bomb" (64 MiB of zeros,
  about 64 KiB on the wire) against the 1 MiB ``max_message_size``: each gets
  1009, and inflating never produces much more than the limit.
"""

from __future__ import annotations

import os
import select
import struct
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from proof_peers import LIMIT, RawPeer, Served, missing, require, serve, vm_hwm
from websockets.sync.client import connect
from wsproto.events import Ping

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

MIB = 1024 * 1024
#: How far above its warmed-up peak the server's peak RSS may go.
BOUND = 16 * MIB
#: The ping flood stops after this many bytes, or after FLOOD_SECONDS.
FLOOD_BYTES = 64 * MIB
FLOOD_SECONDS = 3.0
#: What a deflate bomb inflates to, and how many clients send one.
BOMB_SIZE = 64 * MIB
BOMBERS = 10


@pytest.fixture(params=["asyncio", "trio"])
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Served]:
    """A fresh server process per test (its peak RSS starts clean), warmed up."""
    if not Path("/proc/self/status").exists():
        missing("no /proc/<pid>/status here (Linux only)")
    if request.param == "trio":
        require("trio")
    with serve(request.param, "memory", tmp_path) as served:
        # Warm-up: a handshake, compression, a message in and out of each size class.
        echo(served, "warm-up", b"w" * (256 * 1024))
        yield served


def echo(served: Served, name: str, data: bytes = b"still there?") -> None:
    """A well-behaved client (compression on) gets its message echoed."""
    with connect(
        served.url(f"/chat/{name}"), open_timeout=LIMIT, close_timeout=LIMIT, ping_interval=None
    ) as ws:
        ws.send(data)
        assert ws.recv(LIMIT) == b"echo:" + data


def report(served: Served, what: str, start: int, peak: int) -> str:
    """The figures the proof is about: printed (see them with ``-s``) and returned."""
    text = (
        f"{served.driver} {what}: VmHWM start {start / MIB:.1f} MiB, "
        f"peak {peak / MIB:.1f} MiB, delta {(peak - start) / MIB:.1f} MiB"
    )
    print("\n" + text)
    return text


def test_ping_flood_that_never_reads(server: Served) -> None:
    start = vm_hwm(server.pid)
    flooder = RawPeer(server.port, "/chat/flooder")
    frame = flooder.ws.send(Ping(payload=b"p" * 125))  # masked, 131 bytes
    chunk = memoryview(frame * 500)
    sock = flooder.sock
    sock.setblocking(False)
    sent = offset = 0
    deadline = time.monotonic() + FLOOD_SECONDS
    while sent < FLOOD_BYTES and time.monotonic() < deadline:
        try:
            count = sock.send(chunk[offset:])
        except BlockingIOError:
            select.select([], [sock], [], 0.05)  # the server stopped reading: fine
            continue
        sent += count
        offset = (offset + count) % len(chunk)
    echo(server, "bystander-1")  # served while the flooder is connected and unread
    peak = vm_hwm(server.pid)
    flooder.abort()
    echo(server, "bystander-2")
    figures = report(server, f"ping flood ({sent / MIB:.0f} MiB of pings sent)", start, peak)
    assert peak - start < BOUND, figures


def deflate_bomb() -> bytes:
    """One masked, compressed binary frame whose payload inflates to BOMB_SIZE zeros."""
    deflate = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    zeros = bytes(MIB)
    parts = [deflate.compress(zeros) for _ in range(BOMB_SIZE // MIB)]
    parts.append(deflate.flush(zlib.Z_SYNC_FLUSH))
    payload = b"".join(parts)
    assert payload.endswith(b"\x00\x00\xff\xff")
    payload = payload[:-4]  # RFC 7692 7.2.1: the sender removes the sync flush tail
    key = os.urandom(4)
    size = len(payload)
    mask = (key * (size // 4 + 1))[:size]
    masked = (int.from_bytes(payload, "big") ^ int.from_bytes(mask, "big")).to_bytes(size, "big")
    # FIN, RSV1 (compressed), binary; masked; the shortest length encoding (RFC 6455 5.2).
    first = 0x80 | 0x40 | 0x2
    if size < 126:
        head = struct.pack("!BB", first, 0x80 | size)
    elif size < 1 << 16:
        head = struct.pack("!BBH", first, 0x80 | 126, size)
    else:
        head = struct.pack("!BBQ", first, 0x80 | 127, size)
    return head + key + masked


def test_deflate_bombs_against_the_message_limit(server: Served) -> None:
    bomb = deflate_bomb()
    assert len(bomb) < 100 * 1024  # a few tens of KiB on the wire
    start = vm_hwm(server.pid)
    bombers = [RawPeer(server.port, f"/chat/bomber-{i}", compression=True) for i in range(BOMBERS)]
    for bomber in bombers:
        assert bomber.extensions == ["permessage-deflate"]
    for bomber in bombers:
        bomber.sock.sendall(bomb)
    echo(server, "bystander-1")
    codes = []
    for bomber in bombers:
        close = bomber.read_until_closed()
        codes.append(None if close is None else int(close.code))
        bomber.abort()
    peak = vm_hwm(server.pid)
    echo(server, "bystander-2")
    figures = report(server, f"{BOMBERS} deflate bombs of {len(bomb) // 1024} KiB", start, peak)
    assert codes == [1009] * BOMBERS
    assert peak - start < BOUND, figures
