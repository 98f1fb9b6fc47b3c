"""The terminal event stays the last: it waits for the connection's ``async def`` listeners.

A connection can end (the server closes it, the peer vanishes) while an
``async def`` listener of an earlier event is queued or suspended. The
connection leaves routing at once, but its ``close``/``disconnect`` fires only
once the last such listener has finished, been discarded or been cancelled:
no listener of a connection ever runs after its terminal event.
"""

from __future__ import annotations

import asyncio
from collections.abc import Generator
from typing import Any

import pytest

from ikisocket_core import (
    EVENT_CLOSE,
    EVENT_DISCONNECT,
    EVENT_MESSAGE,
    EventPayload,
    Hub,
    Request,
    RunHandler,
    Send,
    Websocket,
)


class _Suspend:
    """An awaitable that suspends once (what a listener awaiting I/O looks like)."""

    def __await__(self) -> Generator[None, None, None]:
        yield


def opened(hub: Hub) -> Websocket:
    kws = hub.open(Request.from_target("/ws"))
    assert isinstance(kws, Websocket)
    return kws


def make_hub(log: list[str]) -> Hub:
    hub = Hub()
    hub.websocket("/ws", lambda kws: None)

    @hub.on(EVENT_MESSAGE)
    async def slow(ep: EventPayload) -> None:
        log.append(f"message {ep.text} starts")
        await _Suspend()
        log.append(f"message {ep.text} ends")

    def terminal(ep: EventPayload) -> None:
        log.append(ep.name)

    hub.on(EVENT_CLOSE, terminal)
    hub.on(EVENT_DISCONNECT, terminal)
    return hub


def handler_of(hub: Hub) -> Any:
    (action,) = hub.drain_actions()
    assert isinstance(action, RunHandler)
    return action.awaitable


def step(awaitable: Any) -> Generator[None, None, None]:
    it = awaitable.__await__()
    it.send(None)  # runs to the suspension
    return it  # type: ignore[no-any-return]


def test_a_server_close_waits_for_a_queued_listener() -> None:
    log: list[str] = []
    hub = make_hub(log)
    kws = opened(hub)
    hub.receive_message(kws, "a")
    queued = handler_of(hub)
    hub.close(kws.uuid, 4000, "bye")
    assert kws.uuid not in hub  # out of routing at once ...
    assert log == []  # ... but its close event waits for the listener it overtook
    it = step(queued)
    with pytest.raises(StopIteration):
        it.send(None)
    assert log == ["message a starts", "message a ends", "close"]


def test_a_vanished_peer_waits_for_a_suspended_listener() -> None:
    log: list[str] = []
    hub = make_hub(log)
    kws = opened(hub)
    hub.receive_message(kws, "a")
    it = step(handler_of(hub))
    hub.receive_disconnect(kws, 1006)
    assert kws.uuid not in hub
    assert log == ["message a starts"]
    with pytest.raises(StopIteration):
        it.send(None)
    assert log == ["message a starts", "message a ends", "disconnect"]


def test_the_terminal_event_waits_for_the_last_of_several() -> None:
    log: list[str] = []
    hub = make_hub(log)
    kws = opened(hub)
    hub.receive_message(kws, "a")
    first = handler_of(hub)
    hub.receive_message(kws, "b")
    second = handler_of(hub)
    hub.receive_disconnect(kws)
    with pytest.raises(StopIteration):
        step(first).send(None)
    assert log[-1] == "message a ends"
    with pytest.raises(StopIteration):
        step(second).send(None)
    assert log[-2:] == ["message b ends", "disconnect"]


def test_a_discarded_listener_releases_the_terminal_event() -> None:
    log: list[str] = []
    hub = make_hub(log)
    kws = opened(hub)
    hub.receive_message(kws, "a")
    queued = handler_of(hub)
    hub.close(kws.uuid)
    queued.close()  # a driver shutting down discards what never started
    assert log == ["close"]
    queued.close()  # twice is harmless
    assert log == ["close"]


def test_a_cancelled_listener_releases_the_terminal_event() -> None:
    log: list[str] = []
    hub = make_hub(log)
    kws = opened(hub)
    hub.receive_message(kws, "a")
    it = step(handler_of(hub))
    hub.receive_disconnect(kws)
    with pytest.raises(asyncio.CancelledError):
        it.throw(asyncio.CancelledError())
    assert log == ["message a starts", "disconnect"]


def test_without_listeners_in_flight_the_terminal_event_is_immediate() -> None:
    log: list[str] = []
    hub = make_hub(log)
    kws = opened(hub)
    hub.receive_message(kws, "a")
    with pytest.raises(StopIteration):
        step(handler_of(hub)).send(None)
    hub.close(kws.uuid)
    assert log[-1] == "close"


def test_what_a_late_terminal_listener_queues_wakes_the_driver() -> None:
    log: list[str] = []
    hub = make_hub(log)
    wakeups: list[int] = []
    hub.set_wakeup(lambda: wakeups.append(1))
    kws, other = opened(hub), opened(hub)
    hub.on(EVENT_CLOSE, lambda ep: hub.emit_to(other.uuid, f"{ep.socket_uuid} left"))
    hub.receive_message(kws, "a")
    it = step(handler_of(hub))
    hub.close(kws.uuid)
    assert hub.drain_actions()  # the close frame
    wakeups.clear()
    with pytest.raises(StopIteration):
        it.send(None)  # outside any input: the terminal listener's emit needs a drain
    assert wakeups == [1]
    (send,) = hub.drain_actions()
    assert isinstance(send, Send)
    assert send.data == f"{kws.uuid} left".encode()
