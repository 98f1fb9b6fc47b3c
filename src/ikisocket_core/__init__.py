"""ikisocket's sans-IO core: realtime events over WebSocket, with no I/O inside.

Build an application on a :class:`Hub` (or on the module-level functions,
which use a default hub, as the Go library's package functions do), then run it
with an adapter from ``ikisocket_adapters`` or test it with
:class:`ikisocket_core.testing.TestClient`.
"""

from __future__ import annotations

from ._actions import Accept, Action, Close, Reject, Relay, RunHandler, Send
from ._errors import (
    ConnectionClosed,
    DuplicateUUID,
    IdleTimeout,
    IkisocketError,
    LocalProtocolError,
    RemoteProtocolError,
    SlowConsumer,
    UnknownConnection,
)
from ._events import (
    BINARY,
    EVENT_CLOSE,
    EVENT_CONNECT,
    EVENT_DISCONNECT,
    EVENT_ERROR,
    EVENT_MESSAGE,
    EVENT_PING,
    EVENT_PONG,
    RESERVED_EVENTS,
    TEXT,
    EventPayload,
    MessageKind,
)
from ._hub import BeforeUpgrade, Hub, Listener, Room, RouteCallback
from ._routing import Headers, Match, Request, Route, Router
from ._state import TRANSITIONS, ConnectionState, StateInput, transition
from ._websocket import Websocket

__version__ = "0.1.0.dev0"

#: The hub behind the module-level functions (``ikisocket_core.on`` ...).
default_hub = Hub()

#: ``ikisocket.On``: add a listener on the default hub.
on = default_hub.on
#: Remove a listener from the default hub.
off = default_hub.off
#: ``ikisocket.New``: mount a route callback on the default hub.
new = default_hub.websocket
#: ``ikisocket.EmitTo`` on the default hub.
emit_to = default_hub.emit_to
#: ``ikisocket.EmitToList`` on the default hub.
emit_to_list = default_hub.emit_to_list
#: ``ikisocket.Broadcast`` on the default hub.
broadcast = default_hub.broadcast
#: ``ikisocket.Fire`` on the default hub.
fire = default_hub.fire

__all__ = [
    "BINARY",
    "EVENT_CLOSE",
    "EVENT_CONNECT",
    "EVENT_DISCONNECT",
    "EVENT_ERROR",
    "EVENT_MESSAGE",
    "EVENT_PING",
    "EVENT_PONG",
    "RESERVED_EVENTS",
    "TEXT",
    "TRANSITIONS",
    "Accept",
    "Action",
    "BeforeUpgrade",
    "Close",
    "ConnectionClosed",
    "ConnectionState",
    "DuplicateUUID",
    "EventPayload",
    "Headers",
    "Hub",
    "IdleTimeout",
    "IkisocketError",
    "Listener",
    "LocalProtocolError",
    "Match",
    "MessageKind",
    "Reject",
    "Relay",
    "RemoteProtocolError",
    "Request",
    "Room",
    "Route",
    "RouteCallback",
    "Router",
    "RunHandler",
    "Send",
    "SlowConsumer",
    "StateInput",
    "UnknownConnection",
    "Websocket",
    "broadcast",
    "default_hub",
    "emit_to",
    "emit_to_list",
    "fire",
    "new",
    "off",
    "on",
    "transition",
]
