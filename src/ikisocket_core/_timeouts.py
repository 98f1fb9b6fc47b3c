"""A connection's deadlines: what happens when the one it has armed passes.

A :class:`~._connection.ServerConnection` arms at most one deadline at a time
with its node (``_arm``): the HTTP request's, the next keepalive ping's, the
pong's, or the closing handshake's. :func:`on_deadline` is what the node calls
when the clock reaches it; the codes below say which one it was.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Final

from ._config import KeepaliveTimeout
from ._frames import _frame
from ._log import logger, peer_name
from ._reader import PING

if TYPE_CHECKING:
    from ._connection import ServerConnection

# Public through ikisocket_core.protocol's use of it, not the package top level.
__all__: list[str] = []

# What a connection's one armed deadline is for.
_HANDSHAKE: Final = 0  # the request must be complete by then
_SCHEDULE_PING: Final = 1  # stamp the next ping with a fresh clock reading
_PING: Final = 2  # send a keepalive ping
_PONG: Final = 3  # the pong is due
_STAMP_CLOSE: Final = 4  # stamp the closing handshake's deadline with a fresh clock reading
_CLOSE: Final = 5  # the peer's close frame is due

_pack_ping: Final = struct.Struct("!I").pack


def on_deadline(conn: ServerConnection, now: float) -> None:
    """The node's clock reached ``conn``'s deadline: time out, or ping, or stamp the next one.

    Args:
        conn: The connection whose deadline passed.
        now: The current time.
    """
    node = conn._node
    config = node.config
    timer = conn._timer
    if timer == _HANDSHAKE:
        exchange = conn._exchange
        if exchange is None or exchange.busy:  # else an idle keep-alive connection
            node.stats.handshake_timeouts += 1
            logger.info("failed %s: handshake timeout", peer_name(conn.client))
        conn._http = None
        conn._end(1006, "handshake timeout", None)
        conn._close_transport(linger=False)
    elif timer == _SCHEDULE_PING:
        conn._arm(_PING, now + config.ping_interval)  # type: ignore[operator]
    elif timer == _PING:
        conn._ping = _pack_ping(node._next_ping_number())
        conn._write_control(_frame(PING, conn._ping))
        conn._arm(_PONG, now + config.ping_timeout)
    elif timer == _PONG:
        node.stats.keepalive_timeouts += 1
        conn._fail(KeepaliveTimeout(config.ping_timeout))
    elif timer == _STAMP_CLOSE:
        conn._arm(_CLOSE, now + config.close_timeout)
    else:  # _CLOSE
        node.stats.close_timeouts += 1
        conn._end(1006, "close timeout", None)
        conn._close_transport(linger=False)
