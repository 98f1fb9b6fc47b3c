"""Rooms: join, leave, talk to one room, and see who is in it.

Every message is JSON: ``{"join": ROOM}``, ``{"leave": ROOM}`` or
``{"room": ROOM, "text": TEXT}``.
"""

from __future__ import annotations

from ikisocket_core import EVENT_MESSAGE, EventPayload, Hub, Websocket

hub = Hub()


@hub.websocket("/chat/:user")
def on_open(kws: Websocket) -> None:
    kws.set_attribute("user", kws.params["user"])


@hub.on(EVENT_MESSAGE)
def on_message(ep: EventPayload) -> None:
    kws, request = ep.kws, ep.json()
    user = ep.socket_attributes["user"]
    if "join" in request:
        room = request["join"]
        kws.join(room)
        kws.to(room).emit(f"{user} joined #{room}")  # everyone in the room but the sender
        kws.emit(f"in #{room}: {', '.join(members(room))}")
    elif "leave" in request:
        room = request["leave"]
        kws.leave(room)
        hub.to(room).emit(f"{user} left #{room}")
    elif "room" in request:
        room = request["room"]
        if room not in kws.rooms:
            kws.emit(f"join #{room} first")
            return
        hub.to(room).emit(f"#{room} {user}: {request['text']}")  # the sender too


def members(room: str) -> list[str]:
    """The users in ``room``, in joining order."""
    return [hub.get(uuid).get_attribute("user") for uuid in hub.to(room).uuids]
