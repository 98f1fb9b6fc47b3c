"""Telling the errors apart in ``error`` and ``disconnect`` listeners."""

from __future__ import annotations

import logging
from collections import Counter

from ikisocket_core import (
    EVENT_DISCONNECT,
    EVENT_ERROR,
    EVENT_MESSAGE,
    ConnectionClosed,
    EventPayload,
    Hub,
    RemoteProtocolError,
    SlowConsumer,
    Websocket,
)

log = logging.getLogger("app")
hub = Hub()
#: What happened, by kind; a real application would export these as metrics.
counts: Counter[str] = Counter()


@hub.websocket("/ws")
def on_open(kws: Websocket) -> None:
    pass


@hub.on(EVENT_MESSAGE)
def on_message(ep: EventPayload) -> None:
    int(ep.text)  # a bug for anything but digits: ValueError


@hub.on(EVENT_ERROR)
def on_error(ep: EventPayload) -> None:
    if isinstance(ep.error, SlowConsumer):
        counts["slow consumer"] += 1
    elif isinstance(ep.error, RemoteProtocolError):
        counts["protocol error"] += 1
        log.info("%s broke the protocol: %s", ep.socket_uuid, ep.error)
    else:  # one of our own listeners failed
        counts["listener failed"] += 1
        log.error("listener failed on %s", ep.socket_uuid, exc_info=ep.error)


@hub.on(EVENT_DISCONNECT)
def on_disconnect(ep: EventPayload) -> None:
    closed = ep.error
    assert isinstance(closed, ConnectionClosed)  # always, on disconnect and close
    if closed.code == 1006:
        counts["vanished"] += 1
    elif closed.cause is not None:
        counts[f"failed with {closed.code}"] += 1  # the peer was at fault
    else:
        counts[f"left with {closed.code}"] += 1
