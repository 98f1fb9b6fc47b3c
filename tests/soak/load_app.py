"""The load application of the soak and the shutdown-under-load tests: chat in rooms.

A client sends ``join:<room>`` to enter a room (leaving the one it was in),
``say:<text>`` to send ``text`` to everyone in its room, and ``echo:<text>``
to get ``text`` back. Anything else is ignored.

It also keeps the books the tests check, in :data:`BOOKS`:

- ``connects`` and ``terminals``: every connection that got ``connect`` must
  end with exactly one ``disconnect`` or ``close``;
- ``late``: a listener (sync, or an ``async def`` one starting) that ran for a
  connection after its terminal event; must stay 0;
- ``double``: a second terminal event for one connection; must stay 0.

The per-connection mark lives on the connection (an attribute), so the books
stay the same size however many connections come and go.
"""

from __future__ import annotations

from collections import Counter

import anyio

from ikisocket_core import (
    EVENT_CLOSE,
    EVENT_CONNECT,
    EVENT_DISCONNECT,
    EVENT_MESSAGE,
    EventPayload,
    Hub,
)

__all__ = ["BOOKS", "hub"]

#: The counters the tests read (see the module docstring).
BOOKS: Counter[str] = Counter()

hub = Hub()


@hub.websocket("/")
def _route(kws: object) -> None:
    """Every path-``/`` upgrade is accepted."""


def _ended(ep: EventPayload, where: str) -> bool:
    if ep.kws.get_attribute("ended"):
        BOOKS["late"] += 1
        BOOKS[f"late_{where}"] += 1
        return True
    return False


@hub.on(EVENT_CONNECT)
def _connected(ep: EventPayload) -> None:
    if not _ended(ep, "connect"):
        BOOKS["connects"] += 1


@hub.on(EVENT_MESSAGE)
def _message(ep: EventPayload) -> None:
    if _ended(ep, "message"):
        return
    BOOKS["messages"] += 1
    verb, _, rest = ep.data.decode("utf-8", "replace").partition(":")
    kws = ep.kws
    if verb == "join":
        room = kws.get_attribute("room")
        if room is not None:
            kws.leave(room)
        kws.join(rest)
        kws.set_attribute("room", rest)
    elif verb == "say":
        room = kws.get_attribute("room")
        if room is not None:
            hub.to(room).emit(rest)
    elif verb == "echo":
        kws.emit(rest)


@hub.on(EVENT_MESSAGE)
async def _message_later(ep: EventPayload) -> None:
    """An ``async def`` listener too, so shutdown meets runners in flight."""
    if _ended(ep, "async_message"):
        return
    await anyio.sleep(0)
    BOOKS["async_messages"] += 1


def _terminal(ep: EventPayload) -> None:
    if ep.kws.get_attribute("ended"):
        BOOKS["double"] += 1
        return
    ep.kws.set_attribute("ended", True)
    BOOKS["terminals"] += 1
    BOOKS[f"terminal_{ep.name}"] += 1


hub.on(EVENT_DISCONNECT, _terminal)
hub.on(EVENT_CLOSE, _terminal)
