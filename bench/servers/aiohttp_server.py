"""``aiohttp`` with ``web.WebSocketResponse``; fan-out awaits ``send_str`` for each other peer."""

from __future__ import annotations

import asyncio

from _common import BACKLOG, HOST, MAX_SIZE, PATH, announce, parse_args, run_asyncio
from aiohttp import WSMsgType, web

CLIENTS: set[web.WebSocketResponse] = set()


def make_app(mode: str) -> web.Application:
    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(compress=False, heartbeat=None, max_msg_size=MAX_SIZE)
        await ws.prepare(request)
        if mode == "echo":
            async for msg in ws:
                if msg.type is WSMsgType.TEXT:
                    await ws.send_str(msg.data)
            return ws
        CLIENTS.add(ws)
        try:
            async for msg in ws:
                if msg.type is WSMsgType.TEXT:
                    for peer in tuple(CLIENTS):
                        if peer is not ws and not peer.closed:
                            await peer.send_str(msg.data)
        finally:
            CLIENTS.discard(ws)
        return ws

    app = web.Application()
    app.router.add_get(PATH, handler)
    return app


async def main(mode: str) -> None:
    runner = web.AppRunner(make_app(mode), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, HOST, 0, backlog=BACKLOG)
    await site.start()
    announce(runner.addresses[0][1])
    await asyncio.Event().wait()


if __name__ == "__main__":
    args = parse_args()
    run_asyncio(lambda: main(args.mode), args.loop)
