"""The Socket.IO chat of the tutorial: names, rooms, acks, and a page on socket.io-client."""

from __future__ import annotations

import re
from pathlib import Path

from ikisocket_core import ConnectRefused, EventPayload, Hub, Websocket

# [start:hub]
hub = Hub()
sio = hub.socketio(recovery=120.0)  # the last step of the tutorial turns recovery on
# [end:hub]

# [start:auth]
NAME = re.compile(r"[A-Za-z0-9_-]{1,32}")


@sio.before_connect
def who_are_you(kws: Websocket) -> None:
    """Accept a client only with a name in its ``auth`` (``io({auth: {name}})``)."""
    name = kws.auth.get("name")
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise ConnectRefused("pick a name: 1 to 32 letters, digits, '-' or '_'")
    kws.set_attribute("name", name)


# [end:auth]


# [start:lobby]
@hub.on("connect")
def enter_the_lobby(ep: EventPayload) -> None:
    """Put every new connection in the lobby and tell the others."""
    ep.kws.join("lobby")
    ep.kws.set_attribute("room", "lobby")
    ep.kws.to("lobby").emit_event("joined", ep.kws.get_attribute("name"), "lobby")


# [end:lobby]


# [start:chat]
@hub.on("chat")  # socket.emit("chat", text, (delivered) => ...)
def chat(ep: EventPayload) -> int:
    """Send a line to the sender's room; the ack answers how many others got it."""
    text = ep.args[0] if ep.args else None  # ep.data would be its UTF-8 bytes
    if not isinstance(text, str) or not text.strip():
        return 0
    room = ep.kws.to(ep.kws.get_attribute("room"))
    room.emit_event("chat", ep.kws.get_attribute("name"), text[:500])
    return len(room.uuids) - 1  # room.uuids counts the sender too


# [end:chat]


# [start:join]
@hub.on("join")  # socket.emit("join", "python", (names) => ...)
def join(ep: EventPayload) -> list[str]:
    """Move the sender to another room; the ack answers who is in it."""
    room = ep.args[0] if ep.args else None
    if not isinstance(room, str) or not NAME.fullmatch(room):
        return []
    kws = ep.kws
    kws.leave(kws.get_attribute("room"))
    kws.join(room)
    kws.set_attribute("room", room)
    kws.to(room).emit_event("joined", kws.get_attribute("name"), room)
    return sorted(hub.get(uuid).get_attribute("name") for uuid in hub.to(room).uuids)


# [end:join]


# [start:static]
PAGE = Path(__file__).resolve().parent / "static" / "index.html"


def static() -> dict[str, tuple[str, bytes]]:
    """The page, served next to Socket.IO by the socket adapters."""
    page = ("text/html; charset=utf-8", PAGE.read_bytes())
    return {"/": page, "/index.html": page}


# [end:static]
