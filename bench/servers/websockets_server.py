"""``websockets`` (its asyncio implementation), the way its documentation writes it.

Fan-out uses ``websockets.asyncio.server.broadcast`` over the other connections.
"""

from __future__ import annotations

import asyncio

from _common import BACKLOG, HOST, MAX_SIZE, announce, parse_args, run_asyncio
from websockets.asyncio.server import ServerConnection, broadcast, serve

CLIENTS: set[ServerConnection] = set()


async def echo(ws: ServerConnection) -> None:
    async for message in ws:
        await ws.send(message)


async def fan_out(ws: ServerConnection) -> None:
    CLIENTS.add(ws)
    try:
        async for message in ws:
            broadcast((c for c in CLIENTS if c is not ws), message)
    finally:
        CLIENTS.discard(ws)


async def main(mode: str) -> None:
    handler = echo if mode == "echo" else fan_out
    async with serve(
        handler,
        HOST,
        0,
        compression=None,
        ping_interval=None,
        max_size=MAX_SIZE,
        backlog=BACKLOG,
    ) as server:
        announce(server.sockets[0].getsockname()[1])
        await asyncio.Event().wait()


if __name__ == "__main__":
    args = parse_args()
    run_asyncio(lambda: main(args.mode), args.loop)
