"""The seed's chat example ported to ikisocket for Python, plus rooms and presence.

Run it with ``ikisocket demo`` (or ``make demo``, or ``python examples/chat/app.py``)
and open http://127.0.0.1:3000 in a few browser tabs. The wire format is
described in README.md next to this file; in short, every message either way
is a JSON object ``{"from", "to", "event", "data"}``, as in the seed.
"""

from __future__ import annotations

import json
import logging
import os
import re
import uuid
from pathlib import Path
from typing import Any

from ikisocket_core import (
    EVENT_CLOSE,
    EVENT_CONNECT,
    EVENT_DISCONNECT,
    EVENT_ERROR,
    EVENT_MESSAGE,
    RESERVED_EVENTS,
    ConnectRefused,
    DuplicateUUID,
    EventPayload,
    Hub,
    UnknownConnection,
    Websocket,
)

log = logging.getLogger("chat")

hub = Hub()

# The key for the map is message.to: user id -> connection UUID (as in the seed).
clients: dict[str, str] = {}

#: The "from" of every message the server writes itself.
SERVER = "server"
#: What a user id or a room name may look like.
NAME = re.compile(r"[A-Za-z0-9_.-]{1,32}\Z")
#: Close codes 4000-4999 are the application's own (RFC 6455 section 7.4.2).
NAME_TAKEN = 4000
BAD_NAME = 4001
#: Events only the server sends; a client may not send (or fire) them.
SERVER_EVENTS = frozenset({"system", "presence", "room", "error"})
#: Custom events that are commands to the server, never delivered to anyone.
COMMANDS = frozenset({"join", "leave"})
#: The namespace of the connections' UUIDs (see ``uuid_of``).
USERS = uuid.UUID("6f1c2a8e-4a7d-5b3e-9c61-2f0e8d4b7a15")


# [start:helpers]
def envelope(event: str, data: Any, *, sender: str = SERVER, to: str = "") -> str:
    """One wire message: the seed's ``MessageObject`` as compact JSON."""
    return json.dumps(
        {"from": sender, "to": to, "event": event, "data": data},
        separators=(",", ":"),
        ensure_ascii=False,
    )


def uuid_of(user_id: str) -> str:
    """The UUID of a user's connection: the same on every node, so a direct message finds
    the user on whichever node they are (``ikisocket demo --redis``)."""
    return str(uuid.uuid5(USERS, user_id))


def user_of(kws: Websocket) -> str:
    """The user id stored on a connection by ``on_open``."""
    return str(kws.get_attribute("user_id", ""))


def reply_error(kws: Websocket, text: str) -> None:
    """Tell only this connection that its last message was refused."""
    kws.emit(envelope("error", text, to=user_of(kws)))


def presence() -> str:
    """The ``presence`` message: who is online, sorted."""
    return envelope("presence", sorted(clients))


def room_members(room: str) -> str:
    """The ``room`` message: who is in ``room``, sorted."""
    members = sorted(user_of(hub.get(uuid)) for uuid in hub.to(room).uuids)
    return envelope("room", members, to=f"#{room}")


# [end:helpers]


# [start:open]
@hub.websocket("/ws/:id")
def on_open(kws: Websocket) -> None:
    # Retrieve the user id from the endpoint.
    user_id = kws.params["id"]
    if not NAME.match(user_id):
        kws.close(BAD_NAME, "a user id is 1-32 letters, digits, '_', '.' or '-'")
        return
    if user_id in clients:
        kws.close(NAME_TAKEN, f"{user_id} is already connected")
        return
    try:
        kws.uuid = uuid_of(user_id)  # found by direct messages from any node
    except DuplicateUUID:  # connected to another node of the same chat
        kws.close(NAME_TAKEN, f"{user_id} is already connected")
        return

    welcome(kws, user_id)


def welcome(kws: Websocket, user_id: str) -> None:
    """Sign ``user_id`` in on ``kws`` (a plain WebSocket or a Socket.IO connection)."""
    # Add the connection to the map of connected clients. The UUID is what
    # ikisocket routes emit_to / broadcast with.
    clients[user_id] = kws.uuid

    # Every connection has an attribute store.
    kws.set_attribute("user_id", user_id)

    # Tell everyone else about the newcomer, then greet the newcomer.
    kws.broadcast(envelope("system", f"New user connected: {user_id} and UUID: {kws.uuid}"))
    kws.emit(envelope("system", f"Hello user: {user_id} with UUID: {kws.uuid}", to=user_id))

    # Everyone (the newcomer too) gets the new list of who is online.
    hub.broadcast(presence())


# [end:open]


# [start:socketio]
# The page speaks Socket.IO when socket.io-client is served (see static()): the
# same messages, each one the client's "message" event, so Socket.IO and plain
# WebSocket users share rooms. With connection-state recovery, a page whose
# connection drops gets it back (same UUID, rooms) with the messages it missed.
sio = hub.socketio(recovery=120.0)


@sio.before_connect
def check_name(kws: Websocket) -> None:
    """Refuse a Socket.IO client whose ``auth`` has no usable ``name`` (its connect_error)."""
    user_id = kws.auth.get("name")
    if not isinstance(user_id, str) or not NAME.match(user_id):
        raise ConnectRefused("a user id is 1-32 letters, digits, '_', '.' or '-'")
    if user_id in clients:
        raise ConnectRefused(f"{user_id} is already connected")
    kws.uuid = uuid_of(user_id)  # as on_open does: direct messages find it from any node
    kws.set_attribute("user_id", user_id)


@hub.on(EVENT_CONNECT)
def on_socketio_connect(ep: EventPayload) -> None:
    if ep.kws.transport is not None:  # a Socket.IO connection: check_name accepted it
        welcome(ep.kws, user_of(ep.kws))


# [end:socketio]


# [start:connect]
@hub.on(EVENT_CONNECT)
def on_connect(ep: EventPayload) -> None:
    log.info("Connection event 1 - User: %s", user_of(ep.kws))


# [end:connect]


# [start:message]
@hub.on(EVENT_MESSAGE)
def on_message(ep: EventPayload) -> None:
    kws = ep.kws
    user_id = user_of(kws)
    log.info("Message event - User: %s - Message: %r", user_id, ep.data[:200])

    # {"from": "<user-id>", "to": "<recipient>", "event": "CUSTOM_EVENT", "data": "hello"}
    try:
        message = parse(ep.data)
    except ValueError as exc:
        reply_error(kws, str(exc))
        return
    event, to, data = message["event"], message["to"], message["data"]

    # Fire a custom event for any other event name (the seed's kws.Fire).
    if event != EVENT_MESSAGE:
        kws.fire(event, data)
    if event in COMMANDS:
        return

    # Deliver it: "from" is always the sender's id, whatever the client wrote.
    deliver(kws, to, envelope(event, data, sender=user_id, to=to))


# [end:message]


# [start:parse]
def parse(raw: bytes) -> dict[str, str]:
    """Check a client's message and normalise it.

    Returns:
        ``event``, ``to`` and ``data`` as strings; an empty event is ``"message"``.

    Raises:
        ValueError: The message is not one the chat accepts (the text says why).
    """
    try:
        message = json.loads(raw)
    except ValueError:
        raise ValueError('messages are JSON: {"to": ..., "event": ..., "data": ...}') from None
    if not isinstance(message, dict):
        raise ValueError('messages are JSON objects: {"to": ..., "event": ..., "data": ...}')
    fields = {key: message.get(key, "") for key in ("event", "to", "data")}
    for key, value in fields.items():
        if not isinstance(value, str):
            raise ValueError(f'"{key}" must be a string')
    event = fields["event"] or EVENT_MESSAGE
    if event in SERVER_EVENTS or (event in RESERVED_EVENTS and event != EVENT_MESSAGE):
        raise ValueError(f"the event name {event!r} is reserved")
    fields["event"] = event
    return fields


# [end:parse]


# [start:deliver]
def deliver(kws: Websocket, to: str, frame: str) -> None:
    """Send ``frame`` to one user, a room or everyone else, as ``to`` says."""
    if to in ("", "*"):
        kws.broadcast(frame)  # everyone but the sender
    elif to.startswith("#"):
        room = to[1:]
        if room not in kws.rooms:
            reply_error(kws, f"join #{room} before sending to it")
            return
        kws.to(room).emit(frame)  # the room's members but the sender
    else:
        # Emit the message directly to the specified user, on this node or another one.
        try:
            kws.emit_to(uuid_of(to), frame)
        except UnknownConnection:
            reply_error(kws, f"{to} is not online")


# [end:deliver]


# [start:rooms]
@hub.on("join")
def on_join(ep: EventPayload) -> None:
    room = ep.data.decode()
    if not NAME.match(room):
        reply_error(ep.kws, "a room name is 1-32 letters, digits, '_', '.' or '-'")
        return
    if room in ep.kws.rooms:  # already a member: just repeat who is there
        ep.kws.emit(room_members(room))
        return
    ep.kws.join(room)
    hub.to(room).emit(envelope("system", f"{user_of(ep.kws)} joined #{room}", to=f"#{room}"))
    hub.to(room).emit(room_members(room))


@hub.on("leave")
def on_leave(ep: EventPayload) -> None:
    room = ep.data.decode()
    if room not in ep.kws.rooms:
        reply_error(ep.kws, f"you are not in #{room}")
        return
    hub.to(room).emit(envelope("system", f"{user_of(ep.kws)} left #{room}", to=f"#{room}"))
    ep.kws.leave(room)
    hub.to(room).emit(room_members(room))


# [end:rooms]


# [start:custom]
@hub.on("CUSTOM_EVENT")
def on_custom_event(ep: EventPayload) -> None:
    log.info("Custom event - User: %s - Data: %r", user_of(ep.kws), ep.data)
    # ---> DO YOUR BUSINESS HERE <---


# [end:custom]


# [start:leaving]
def user_left(ep: EventPayload) -> None:
    """Forget a user whose connection ended and tell the others."""
    user_id = ep.socket_attributes.get("user_id")
    if user_id is None:  # refused by on_open: it never had the name, so it frees nothing
        return
    del clients[user_id]
    if not hub.accepting:  # the server is shutting down: everyone is leaving
        return
    # The connection has already left routing: these reach only the others.
    hub.broadcast(envelope("system", f"User left: {user_id}"))
    hub.broadcast(presence())
    for room in ep.kws.rooms:
        hub.to(room).emit(room_members(room))


@hub.on(EVENT_DISCONNECT)
def on_disconnect(ep: EventPayload) -> None:
    log.info("Disconnection event - User: %s", ep.socket_attributes.get("user_id"))
    user_left(ep)


# This event is fired when the server closes the connection with kws.close().
@hub.on(EVENT_CLOSE)
def on_close(ep: EventPayload) -> None:
    log.info("Close event - User: %s", ep.socket_attributes.get("user_id"))
    user_left(ep)


@hub.on(EVENT_ERROR)
def on_error(ep: EventPayload) -> None:
    log.warning("Error event - User: %s - %s", ep.socket_attributes.get("user_id"), ep.error)


# [end:leaving]


# [start:static]
PAGE = Path(__file__).resolve().parent / "static" / "index.html"
#: socket.io-client's browser build, installed from npm by ``make demo`` (never committed);
#: the environment variable ``IKISOCKET_CHAT_CLIENT`` names another copy (an installed demo's
#: folder has none).
SOCKETIO_CLIENT = (
    Path(__file__).resolve().parent / "node_modules/socket.io-client/dist/socket.io.min.js"
)
#: Where the page loads it from; without it the page uses a plain WebSocket.
SOCKETIO_CLIENT_URL = "/js/socket.io.min.js"


def static() -> dict[str, tuple[str, bytes]]:
    """The plain HTTP responses the demo serves next to its WebSocket route."""
    page = ("text/html; charset=utf-8", PAGE.read_bytes())
    responses = {"/": page, "/index.html": page}
    client = Path(os.environ.get("IKISOCKET_CHAT_CLIENT") or SOCKETIO_CLIENT)
    if client.is_file():
        script = client.read_bytes()
        responses[SOCKETIO_CLIENT_URL] = ("text/javascript; charset=utf-8", script)
    return responses


# [end:static]


if __name__ == "__main__":
    # `python examples/chat/app.py`: the same as `ikisocket demo`, spelled out.
    import asyncio
    import contextlib

    from ikisocket_adapters.asyncio import serve

    logging.basicConfig(level=logging.INFO)
    print("chat: open http://127.0.0.1:3000")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(hub, "127.0.0.1", 3000, static=static()))
