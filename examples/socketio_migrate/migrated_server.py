"""A python-socketio server's usual parts, written for ikisocket (the how-to's listings)."""

from __future__ import annotations

import asyncio
from typing import Any

from ikisocket_core import AckTimeout, ConnectRefused, EventPayload, Hub, Websocket

# [start:server]
# sio = socketio.AsyncServer(async_mode="asgi", cors_allowed_origins=[...])
hub = Hub()
sio = hub.socketio(cors_allowed_origins=["https://chat.example.com"], namespaces=["/admin"])
# [end:server]

USERS = {"t0ken-ann": "ann", "t0ken-bob": "bob"}  # stands for your user store


async def find_user(token: object) -> str | None:
    """Look a token up (a database or an HTTP call in a real application)."""
    await asyncio.sleep(0)
    return USERS.get(token) if isinstance(token, str) else None


# [start:connect]
# @sio.event
# async def connect(sid, environ, auth):
#     user = await find_user(auth.get("token"))
#     if user is None:
#         raise ConnectionRefusedError("authentication failed")
#     await sio.save_session(sid, {"user": user})
@sio.before_connect
async def authenticate(kws: Websocket) -> None:
    """Refuse a client without a known token; remember who it is."""
    user = await find_user(kws.auth.get("token"))
    if user is None:
        raise ConnectRefused("authentication failed", {"retry": False})
    kws.set_attribute("user", user)  # instead of save_session


@hub.on("connect")  # runs once the connection is accepted and registered
def welcome(ep: EventPayload) -> None:
    """Greet the new connection by name."""
    ep.kws.emit_event("welcome", ep.kws.get_attribute("user"))


# [end:connect]


# [start:events]
# @sio.event
# async def add(sid, a, b):
#     return a + b
@hub.on("add")
def add(ep: EventPayload) -> Any:
    """Answer the client's ack with the sum of its two arguments."""
    a, b = ep.args
    return a + b


# @sio.on("my event")
# async def whoami(sid):
#     session = await sio.get_session(sid)
#     return session["user"], sid
@hub.on("my event")
async def whoami(ep: EventPayload) -> tuple[str, str]:
    """Answer with two values: a tuple is several ack arguments."""
    return ep.kws.get_attribute("user"), ep.kws.uuid


# [end:events]


# [start:rooms]
# @sio.event
# async def enter(sid, room):
#     await sio.enter_room(sid, room)
#     await sio.emit("entered", user, room=room, skip_sid=sid)
@hub.on("enter")
def enter(ep: EventPayload) -> None:
    """Join a room and tell its other members."""
    (room,) = ep.args
    ep.kws.join(room)
    ep.kws.to(room).emit_event("entered", ep.kws.get_attribute("user"))  # skip_sid


@hub.on("leave")
def leave(ep: EventPayload) -> None:
    """Leave a room (sio.leave_room)."""
    (room,) = ep.args
    ep.kws.leave(room)


@hub.on("shout")
def shout(ep: EventPayload) -> None:
    """Send to a whole room, the sender too (sio.emit("shouted", text, to=room))."""
    room, text = ep.args
    hub.to(room).emit_event("shouted", text)


# [end:rooms]


# [start:namespace]
# @sio.on("stats", namespace="/admin")
# async def stats(sid):
#     return {"online": ...}
@hub.on("stats", namespace="/admin")
def stats(ep: EventPayload) -> dict[str, int]:
    """Only clients of the /admin namespace reach this listener."""
    return {"online": len(sio.of("/").uuids)}


# [end:namespace]


# [start:call]
# answer = await sio.call("confirm", "delete?", to=sid, timeout=5)
async def call(kws: Websocket, event: str, *args: Any, timeout: float) -> tuple[Any, ...]:
    """Ask one client and wait for its answer, as python-socketio's ``call`` does.

    Raises:
        AckTimeout: No answer within ``timeout`` seconds.
        ConnectionClosed: The connection ended first.
    """
    answer: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    kws.emit_event(event, *args, ack=answer.set_result, timeout=timeout)
    result = await answer
    if isinstance(result, BaseException):  # AckTimeout or ConnectionClosed
        raise result
    return tuple(result)


CONFIRM_TIMEOUT = 5.0


@hub.on("delete")
async def delete(ep: EventPayload) -> str:
    """Ask the client to confirm before answering its own ack."""
    try:
        answer = await call(ep.kws, "confirm", "delete?", timeout=CONFIRM_TIMEOUT)
    except AckTimeout:
        return "not deleted: no answer"
    return "deleted" if answer and answer[0] is True else "kept"


# [end:call]
