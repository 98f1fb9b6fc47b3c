"""ikisocket's sans-IO core: realtime events over WebSocket, with no I/O inside.

Build an application on a :class:`Hub` (or on the module-level functions,
which use a default hub, as the Go library's package functions do), then run it
with an adapter from ``ikisocket_adapters`` or test it with
:class:`ikisocket_core.testing.TestClient`.
"""

from __future__ import annotations

import warnings
from typing import Any

from ._ack_relays import AckAnswerRelay, AckRequestRelay, AckTargetsRelay
from ._actions import Accept, Action, Close, Reject, RunHandler, Send
from ._build import build_info, compiled, native_unmask
from ._dispatch import RouteCallback
from ._errors import (
    AckTimeout,
    ConnectionClosed,
    ConnectRefused,
    DuplicateUUID,
    HandlerTimeout,
    IdleTimeout,
    IkisocketError,
    LocalProtocolError,
    RelayTooLarge,
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
    AckCallback,
    EventPayload,
    Listener,
    MessageKind,
)
from ._handoff_relays import ClaimRelay, HandoffRelay
from ._hub import BeforeUpgrade, Hub
from ._registry import Room
from ._relays import (
    AbsenceRelay,
    BroadcastRelay,
    EmitRelay,
    EventRelay,
    FireRelay,
    HelloRelay,
    PresenceRelay,
    Relay,
    RoomRelay,
)
from ._routing import Headers, Request, Route
from ._socketio import (
    AcksCallback,
    ConnectHook,
    Namespace,
    NamespaceRoom,
    Recovery,
    SocketIO,
)
from ._state import ConnectionState
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
    "AbsenceRelay",
    "Accept",
    "AckAnswerRelay",
    "AckCallback",
    "AckRequestRelay",
    "AckTargetsRelay",
    "AckTimeout",
    "AcksCallback",
    "Action",
    "BeforeUpgrade",
    "BroadcastRelay",
    "ClaimRelay",
    "Close",
    "ConnectHook",
    "ConnectRefused",
    "ConnectionClosed",
    "ConnectionState",
    "DuplicateUUID",
    "EmitRelay",
    "EventRelay",
    "EventPayload",
    "FireRelay",
    "HandlerTimeout",
    "Headers",
    "HandoffRelay",
    "HelloRelay",
    "Hub",
    "IdleTimeout",
    "IkisocketError",
    "Listener",
    "LocalProtocolError",
    "MessageKind",
    "Namespace",
    "NamespaceRoom",
    "PresenceRelay",
    "Recovery",
    "Reject",
    "Relay",
    "RelayTooLarge",
    "RemoteProtocolError",
    "Request",
    "Room",
    "RoomRelay",
    "Route",
    "RouteCallback",
    "RunHandler",
    "Send",
    "SlowConsumer",
    "SocketIO",
    "UnknownConnection",
    "Websocket",
    "broadcast",
    "build_info",
    "compiled",
    "default_hub",
    "emit_to",
    "emit_to_list",
    "fire",
    "native_unmask",
    "new",
    "off",
    "on",
]

#: Names the package exported before they became internals: still importable, with a warning.
_MOVED = {
    "TRANSITIONS": "ikisocket_core._state",
    "transition": "ikisocket_core._state",
    "StateInput": "ikisocket_core._state",
    "Router": "ikisocket_core._routing",
    "Match": "ikisocket_core._routing",
}


def __getattr__(name: str) -> Any:
    """``ikisocket_core.TRANSITIONS`` and the other former exports, with a DeprecationWarning.

    Args:
        name: The attribute asked for.

    Returns:
        The internal object.

    Raises:
        AttributeError: ``name`` is not one of them.
    """
    module = _MOVED.get(name)
    if module is None:
        raise AttributeError(f"module 'ikisocket_core' has no attribute {name!r}")
    warnings.warn(
        f"ikisocket_core.{name} is internal and no longer exported; "
        f"import it from {module} if you must (it may change without notice)",
        DeprecationWarning,
        stacklevel=2,
    )
    from importlib import import_module  # noqa: PLC0415 (only on this deprecated path)

    return getattr(import_module(module), name)
