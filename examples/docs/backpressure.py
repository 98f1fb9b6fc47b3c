"""Limits and the slow-consumer policy, and how the application hears about them."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from ikisocket_adapters.asyncio import serve
from ikisocket_core import (
    EVENT_DISCONNECT,
    EVENT_ERROR,
    ConnectionClosed,
    EventPayload,
    Hub,
    SlowConsumer,
    Websocket,
)

log = logging.getLogger("feed")

#: ``ServerConfig`` fields; every socket adapter takes them as keywords.
LIMITS: dict[str, Any] = {
    "max_queue": 256 * 1024,  # bytes waiting for one slow reader before the policy applies
    "backpressure": "close",  # "drop" (the default) skips messages for that reader instead
    "max_message_size": 64 * 1024,  # a bigger incoming message closes with 1009
    "ping_interval": 20.0,  # keepalive ping every 20 s ...
    "ping_timeout": 20.0,  # ... and 20 s to answer it, or the connection ends (1011)
}

hub = Hub()
slow_readers: list[str] = []


@hub.websocket("/feed")
def on_open(kws: Websocket) -> None:
    pass  # the feed is broadcast to everyone by the application's own job


@hub.on(EVENT_ERROR)
def on_error(ep: EventPayload) -> None:
    if isinstance(ep.error, SlowConsumer):
        # Reported once per overflow; with "close" the connection is then closed.
        slow_readers.append(ep.socket_uuid)
        log.warning("%s reads too slowly: %s", ep.socket_uuid, ep.error)


@hub.on(EVENT_DISCONNECT)
def on_disconnect(ep: EventPayload) -> None:
    closed = ep.error
    if isinstance(closed, ConnectionClosed) and isinstance(closed.cause, SlowConsumer):
        log.info("%s was closed with %d for reading too slowly", ep.socket_uuid, closed.code)


if __name__ == "__main__":
    asyncio.run(serve(hub, "127.0.0.1", 8000, **LIMITS))
