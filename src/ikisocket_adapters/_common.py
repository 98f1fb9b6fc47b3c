"""What every socket adapter shares: options, logging names and the shutdown sequence."""

from __future__ import annotations

import logging
import ssl
from dataclasses import fields
from typing import Any

from ikisocket_core import Hub
from ikisocket_core.protocol import Server, ServerConfig

__all__ = ["SHUTDOWN_CODE", "TICK_RESOLUTION", "begin_shutdown", "logger", "make_server"]

logger = logging.getLogger("ikisocket")

#: Timers fire at most this often: each tick scans every connection.
TICK_RESOLUTION = 0.25
#: The close code sent to every client when the server shuts down (RFC 6455 7.4.1).
SHUTDOWN_CODE = 1001


def make_server(hub: Hub, limits: dict[str, Any]) -> Server:
    """Build the protocol engine for an adapter from its keyword limits.

    Args:
        hub: The application.
        limits: :class:`ServerConfig` fields (unknown names raise ``TypeError``).

    Returns:
        The engine.
    """
    known = {f.name for f in fields(ServerConfig)}
    unknown = set(limits) - known
    if unknown:
        raise TypeError(f"unknown server option(s): {', '.join(sorted(unknown))}")
    return Server(hub, ServerConfig(**limits))


def begin_shutdown(server: Server) -> None:
    """Refuse new connections and close every open one with 1001 "going away".

    The caller then drains actions and waits (at most ``close_timeout``) for
    the connections to finish their closing handshakes.

    Args:
        server: The engine to shut down.
    """
    hub = server.hub
    hub.stop_accepting()
    hub.close_all(SHUTDOWN_CODE, "server shutting down")


def scheme_of(ssl_context: ssl.SSLContext | None) -> str:
    """``"wss"`` behind TLS, else ``"ws"``."""
    return "ws" if ssl_context is None else "wss"
