"""Socket.IO on the hub: Engine.IO v4 and Socket.IO v5 over the WebSocket transport.

The codecs (``_packets``) are pure; a session (``_session``) is the state of
one Engine.IO connection and its namespaces; the mount (``_mount``) is what
:meth:`~ikisocket_core.Hub.socketio` returns and what the hub calls into, with
ack answers and event checks in ``_acks``; ``_layer`` is the hub's Socket.IO
layer (``socketio``, ``emit_event``) and ``_testclient`` the virtual clients of
:mod:`ikisocket_core.testing`.
"""

from __future__ import annotations

from ._mount import ConnectHook, SocketIO
from ._namespace import AcksCallback, Namespace, NamespaceRoom
from ._recovery import Recovery

__all__ = ["AcksCallback", "ConnectHook", "Namespace", "NamespaceRoom", "Recovery", "SocketIO"]
