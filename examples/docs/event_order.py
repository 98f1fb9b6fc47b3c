"""Which listeners run, in which order, over one connection's life."""

from __future__ import annotations

from ikisocket_core import (
    EVENT_CLOSE,
    EVENT_CONNECT,
    EVENT_DISCONNECT,
    EVENT_ERROR,
    EVENT_MESSAGE,
    EventPayload,
    Hub,
    Websocket,
)

hub = Hub()
#: What happened, in order: the tests of this example read it.
seen: list[str] = []


@hub.websocket("/ws")
def on_open(kws: Websocket) -> None:
    seen.append(f"route callback (alive={kws.is_alive})")


def record(ep: EventPayload) -> None:
    detail = f" {ep.text}" if ep.name == EVENT_MESSAGE else ""
    if ep.error is not None:
        detail = f" {type(ep.error).__name__}: {ep.error}"
    seen.append(f"{ep.name}{detail} (routable={ep.socket_uuid in hub})")


for name in (EVENT_CONNECT, EVENT_MESSAGE, EVENT_ERROR, EVENT_CLOSE, EVENT_DISCONNECT):
    hub.on(name, record)


@hub.on(EVENT_MESSAGE)
def commands(ep: EventPayload) -> None:
    if ep.text == "kick":
        ep.kws.close(4000, "kicked")  # the server closes it: ``close`` fires
    elif ep.text == "boom":
        raise RuntimeError("a listener failed")  # ``error`` fires; the connection stays
