"""Graceful shutdown on SIGTERM or SIGINT: every client gets 1001, then the process exits 0.

Run ``python examples/docs/shutdown.py [PORT]`` and stop it with Ctrl-C.
"""

from __future__ import annotations

import asyncio
import signal
import sys

from ikisocket_adapters.asyncio import start_server
from ikisocket_core import EVENT_CLOSE, EventPayload, Hub, Websocket

hub = Hub()


@hub.websocket("/ws/:name")
def on_open(kws: Websocket) -> None:
    kws.set_attribute("name", kws.params["name"])


@hub.on(EVENT_CLOSE)
def on_close(ep: EventPayload) -> None:
    # Fires for every client the shutdown closes; save what must survive here.
    code = getattr(ep.error, "code", None)
    print(f"closed {ep.socket_attributes['name']} with {code}", flush=True)


async def main(port: int) -> None:
    server = await start_server(hub, "127.0.0.1", port)
    print(f"listening on ws://127.0.0.1:{server.port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    server.close()  # refuse new connections (503) and close every client with 1001
    await server.wait_closed()  # at most close_timeout, then what is left is aborted


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 8000))
