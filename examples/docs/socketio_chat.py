"""Socket.IO clients on a hub: an event with an ack, rooms, and a guarded namespace."""

from __future__ import annotations

from ikisocket_core import ConnectRefused, EventPayload, Hub, Websocket

hub = Hub()
sio = hub.socketio(namespaces=["/admin"])  # "/" is always there


@hub.on("chat")  # a client's socket.emit("chat", room, text, ack)
def chat(ep: EventPayload) -> str:
    room, text = ep.args
    ep.kws.join(room)
    ep.kws.to(room).emit_event("chat", text)  # Socket.IO and plain members alike
    return "delivered"  # answers the client's ack


@sio.before_connect(namespace="/admin")
def admins_only(kws: Websocket) -> None:
    if kws.auth.get("token") != "s3cret":  # socket.io-client's `auth` option
        raise ConnectRefused("not an admin")  # its connect_error event
