"""Socket.IO on the hub: Engine.IO v4 and Socket.IO v5 over the WebSocket transport.

The codecs (``_packets``) are pure; a session (``_session``) is the state of
one Engine.IO connection and its namespaces; the mount (``_mount``) is what
:meth:`~ikisocket_core.Hub.socketio` returns and what the hub calls into.
"""

from __future__ import annotations

from ._mount import ConnectHook, SocketIO

__all__ = ["ConnectHook", "SocketIO"]
