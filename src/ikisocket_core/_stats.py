"""The engine's counters, in a module of their own: the compiled build compiles it.

The per-message counters (``bytes_in``, ``messages_in``, ``frames_out``) are
raised by the engine's compiled modules on every message; compiled with them,
:class:`ServerStats` is a native class whose fields those modules change
directly, where an interpreted object's would be a generic attribute lookup
and store each time. On the pure-Python build nothing differs.
"""

from __future__ import annotations

from dataclasses import dataclass

# Public through ikisocket_core.protocol, not the package top level.
__all__: list[str] = []


@dataclass(slots=True)
class ServerStats:
    """Counters of a server's connections (read them; they only grow).

    ``rejected`` counts upgrades the hub refused; the refusals of the
    connection limits have their own counters (``over_max_connections``,
    ``over_max_connections_per_ip``, ``over_max_handshakes``), and the hub
    never sees those requests.
    """

    connections: int = 0
    upgrades: int = 0
    rejected: int = 0
    messages_in: int = 0
    bytes_in: int = 0
    frames_out: int = 0
    broadcast_encodes: int = 0
    dropped_messages: int = 0
    overflow_closes: int = 0
    protocol_errors: int = 0
    keepalive_timeouts: int = 0
    handshake_timeouts: int = 0
    close_timeouts: int = 0
    over_max_connections: int = 0
    over_max_connections_per_ip: int = 0
    over_max_handshakes: int = 0
    handler_timeouts: int = 0
