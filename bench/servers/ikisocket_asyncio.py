"""ikisocket on its asyncio adapter (``--loop asyncio`` or ``--loop uvloop``).

Echo uses ``ep.kws.emit(ep.data, ep.kind)``; fan-out uses
``ep.kws.broadcast(ep.data, except_self=True)``, the public API a user writes.
"""

from __future__ import annotations

import asyncio

from _common import HOST, OURS, PATH, announce, parse_args, run_asyncio

from ikisocket_adapters.asyncio import start_server
from ikisocket_core import EVENT_MESSAGE, EventPayload, Hub, Websocket


def make_hub(mode: str) -> Hub:
    hub = Hub()

    @hub.websocket(PATH)
    def on_open(kws: Websocket) -> None:
        pass

    if mode == "echo":

        @hub.on(EVENT_MESSAGE)
        def echo(ep: EventPayload) -> None:
            ep.kws.emit(ep.data, ep.kind)

    else:

        @hub.on(EVENT_MESSAGE)
        def fan_out(ep: EventPayload) -> None:
            ep.kws.broadcast(ep.data, except_self=True, kind=ep.kind)

    return hub


async def main(mode: str) -> None:
    server = await start_server(
        make_hub(mode),
        HOST,
        0,
        **OURS,
    )
    announce(server.port)
    await asyncio.Event().wait()


if __name__ == "__main__":
    args = parse_args()
    run_asyncio(lambda: main(args.mode), args.loop)
