"""The clients of the soak and the shutdown-under-load tests, on the ``websockets`` client.

A *chatter* joins a room of ``load_app.py`` and says something there about
once per ``interval`` while it reads everything it is sent; when the server
closes it, :class:`Tally` records the close code it received.

:func:`churn` keeps ``actors`` clients coming and going for a while, each
cycle one of :data:`BEHAVIOURS`: chat and leave cleanly, chat and vanish with
a TCP reset, send a text frame that is not UTF-8 (1007), send a message over
the server's limit (1009), or open a TCP connection and send half a request.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import struct
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

__all__ = ["BEHAVIOURS", "LIMIT", "Tally", "chat", "churn", "open_chatter"]

#: No single wait of a client takes longer than this many seconds.
LIMIT = 10.0
#: The message size the soak server is given as ``max_message_size`` (the 1009 behaviour).
SOAK_MAX_MESSAGE = 16 * 1024


@dataclass
class Tally:
    """What the clients saw.

    Attributes:
        opened: Handshakes that succeeded.
        sent: Messages sent.
        received: Messages received.
        codes: Close codes received from the server (``None``: no close frame).
        behaviours: Cycles of each :data:`BEHAVIOURS` entry that ran.
        errors: Failures a client met, by exception class name.
    """

    opened: int = 0
    sent: int = 0
    received: int = 0
    codes: Counter[int | None] = field(default_factory=Counter)
    behaviours: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)


async def open_chatter(
    url: str, room: str, tally: Tally, *, deflate: bool = False, timeout: float = LIMIT
) -> ClientConnection:
    """Connect to ``url`` (with permessage-deflate or not) and join ``room``."""
    ws = await connect(
        url,
        open_timeout=timeout,
        close_timeout=LIMIT,
        ping_interval=None,
        compression="deflate" if deflate else None,
    )
    tally.opened += 1
    await ws.send(f"join:{room}")
    return ws


async def _read(ws: ClientConnection, tally: Tally) -> None:
    try:
        async for _ in ws:
            tally.received += 1
    except ConnectionClosed:
        pass
    close = ws.protocol.close_rcvd
    tally.codes[None if close is None else close.code] += 1


async def chat(
    ws: ClientConnection,
    tally: Tally,
    rng: random.Random,
    *,
    interval: float,
    seconds: float | None = None,
) -> None:
    """Say something about every ``interval`` for ``seconds`` (``None``: until closed).

    Returns once the connection is closed (by the server), or when the time is
    up (the connection still open).
    """
    reader = asyncio.ensure_future(_read(ws, tally))
    loop = asyncio.get_running_loop()
    until = None if seconds is None else loop.time() + seconds
    try:
        while until is None or loop.time() < until:
            done, _ = await asyncio.wait({reader}, timeout=rng.uniform(0.5, 1.5) * interval)
            if done:
                return
            try:
                await ws.send(f"say:{tally.sent}")
            except ConnectionClosed:
                await reader
                return
            tally.sent += 1
    finally:
        if until is not None and not reader.done():
            reader.cancel()


# -- the churn ---------------------------------------------------------------------------


def _reset(ws: ClientConnection) -> None:
    """Vanish: close the socket with a TCP reset, no close frame."""
    sock = ws.transport.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    ws.transport.abort()


def _masked_frame(opcode: int, payload: bytes) -> bytes:
    """A client frame by hand (FIN set, zero mask), for what ``websockets`` will not send."""
    length = len(payload)
    if length < 126:
        head = struct.pack("!BB", 0x80 | opcode, 0x80 | length)
    else:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, length)
    return head + b"\0\0\0\0" + payload


async def _chat_then_leave(url: str, tally: Tally, rng: random.Random, rooms: int) -> None:
    ws = await open_chatter(url, f"room{rng.randrange(rooms)}", tally, deflate=rng.random() < 0.3)
    await chat(ws, tally, rng, interval=1.0, seconds=rng.uniform(1.0, 8.0))
    await ws.close()


async def _chat_then_reset(url: str, tally: Tally, rng: random.Random, rooms: int) -> None:
    ws = await open_chatter(url, f"room{rng.randrange(rooms)}", tally, deflate=rng.random() < 0.3)
    await chat(ws, tally, rng, interval=1.0, seconds=rng.uniform(1.0, 8.0))
    _reset(ws)


async def _bad_utf8(url: str, tally: Tally, rng: random.Random, rooms: int) -> None:
    ws = await open_chatter(url, f"room{rng.randrange(rooms)}", tally)
    ws.transport.write(_masked_frame(0x1, b"say:\xff\xfe"))
    await _read(ws, tally)  # the server closes it with 1007


async def _oversized(url: str, tally: Tally, rng: random.Random, rooms: int) -> None:
    ws = await open_chatter(url, f"room{rng.randrange(rooms)}", tally)
    with contextlib.suppress(ConnectionClosed):
        await ws.send(b"x" * (SOAK_MAX_MESSAGE + 1))
    await _read(ws, tally)  # the server closes it with 1009


async def _half_request(url: str, tally: Tally, rng: random.Random, rooms: int) -> None:
    host, port = url.removeprefix("ws://").split("/", 1)[0].split(":")
    _, writer = await asyncio.wait_for(asyncio.open_connection(host, int(port)), LIMIT)
    writer.write(b"GET / HTTP/1.1\r\nHost: soak\r\nUpgrade: websocket\r\n")
    await asyncio.sleep(rng.uniform(0.1, 1.0))
    writer.close()
    await writer.wait_closed()


Behaviour = Callable[[str, Tally, random.Random, int], Awaitable[None]]

#: What a churning client does in one cycle, with its weight.
BEHAVIOURS: dict[str, tuple[Behaviour, int]] = {
    "chat-leave": (_chat_then_leave, 60),
    "chat-reset": (_chat_then_reset, 25),
    "bad-utf8": (_bad_utf8, 5),
    "oversized": (_oversized, 5),
    "half-request": (_half_request, 5),
}


async def _actor(
    url: str, tally: Tally, rng: random.Random, rooms: int, stop: asyncio.Event
) -> None:
    names = list(BEHAVIOURS)
    weights = [BEHAVIOURS[n][1] for n in names]
    while not stop.is_set():
        name = rng.choices(names, weights)[0]
        tally.behaviours[name] += 1
        try:
            await asyncio.wait_for(BEHAVIOURS[name][0](url, tally, rng, rooms), 4 * LIMIT)
        except (OSError, ConnectionClosed, InvalidHandshake, asyncio.TimeoutError) as exc:
            tally.errors[type(exc).__name__] += 1
            await asyncio.sleep(rng.uniform(0.1, 0.5))  # a refused client backs off


async def churn(url: str, *, actors: int, seconds: float, seed: int = 0) -> Tally:
    """Keep ``actors`` clients churning against ``url`` for ``seconds``.

    Each actor starts after a random delay of up to 5 s (so connections do not
    all arrive at once) and finishes its current cycle after the time is up.

    Returns:
        What the clients saw.
    """
    tally = Tally()
    rooms = max(1, actors // 10)
    stop = asyncio.Event()

    async def actor(index: int) -> None:
        rng = random.Random(seed * 1_000_003 + index)
        await asyncio.sleep(rng.uniform(0.0, 5.0))
        await _actor(url, tally, rng, rooms, stop)

    tasks = [asyncio.ensure_future(actor(i)) for i in range(actors)]
    await asyncio.sleep(seconds)
    stop.set()
    await asyncio.gather(*tasks)
    return tally
