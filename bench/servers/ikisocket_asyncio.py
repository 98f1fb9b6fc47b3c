"""ikisocket on its asyncio adapter (``--loop asyncio`` or ``--loop uvloop``).

Echo uses ``ep.kws.emit(ep.data, ep.kind)``; fan-out uses
``ep.kws.broadcast(ep.data, except_self=True)``, the public API a user writes.
"""

from __future__ import annotations

import asyncio
import os
import sys

from _common import HOST, PATH, announce, parse_args, run_asyncio

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
        make_hub(mode), HOST, 0, backlog=1024, compression=False, ping_interval=None
    )
    announce(server.port)
    await asyncio.Event().wait()


def uvloop_needs_o() -> bool:
    """Whether the adapter's ``isinstance(transport, asyncio.Transport)`` assert trips on uvloop.

    uvloop's transports do not derive from ``asyncio.Transport``; until the
    adapter stops asserting that, the uvloop server runs with ``python -O``.
    """
    import uvloop.loop  # noqa: PLC0415 (optional)

    transport: type = uvloop.loop.TCPTransport  # type: ignore[attr-defined]
    return __debug__ and not issubclass(transport, asyncio.Transport)


if __name__ == "__main__":
    args = parse_args()
    if args.loop == "uvloop" and uvloop_needs_o():
        print("re-running with python -O (asyncio adapter assert vs uvloop)", file=sys.stderr)
        os.execv(sys.executable, [sys.executable, "-O", *sys.argv])
    run_asyncio(lambda: main(args.mode), args.loop)
