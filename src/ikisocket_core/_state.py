"""Connection states and the one table of transitions between them.

Theory of operation
-------------------
A connection has one state, whoever reads it: the engine's
:class:`~ikisocket_core.protocol.ServerConnection` (``conn.state``) and the
hub's :class:`~ikisocket_core.Websocket` (``kws.state``) report the same
value, because the connection keeps its own state only while it has no
``kws`` yet and reads the ``kws``'s from then on.

A connection is born in the HTTP phase (``CONNECTING``). There the engine
either answers the request with a plain HTTP response (``REJECT``: 4xx, a
static page) or the peer goes away or times out (``PEER_GONE``); both end it.
Once the hub accepts it (``ACCEPT``) it is ``OPEN``: it is in the hub's
registry and rooms, it receives messages and it can be emitted to. It
leaves ``OPEN`` in one of two ways, and which one decides its terminal event:

* the peer goes away (close frame, dropped transport, keepalive timeout, a
  protocol violation, a message over the limit, a slow consumer):
  ``OPEN -> CLOSED`` and ``disconnect`` fires;
* the server closes it (``kws.close()``, ``hub.close_all()``, a policy):
  ``OPEN -> CLOSING`` and ``close`` fires; the engine writes the close frame,
  waits for the peer's (at most ``close_timeout``) and reports the end,
  ``CLOSING -> CLOSED``.

Either way the connection has left routing *before* its terminal listeners
run, and nothing of it is left in the hub afterwards. ``CLOSED`` is sticky:
every later input is ignored, as h11 keeps ``ERROR``.

Everything that changes a state goes through :func:`transition`, and every
allowed move is a row of :data:`TRANSITIONS`, so this table *is* the state
machine (the docs draw their diagram from it).
"""

from __future__ import annotations

import enum

from ._errors import LocalProtocolError

__all__ = ["ConnectionState", "StateInput", "TRANSITIONS", "transition"]


class ConnectionState(enum.Enum):
    """Where a connection is in its life."""

    CONNECTING = "connecting"
    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"


class StateInput(enum.Enum):
    """What can happen to a connection."""

    ACCEPT = "accept"
    REJECT = "reject"
    SERVER_CLOSE = "server_close"
    PEER_GONE = "peer_gone"


S = ConnectionState
I = StateInput  # noqa: E741

#: (state, input) -> next state. A pair that is missing is not allowed.
TRANSITIONS: dict[tuple[ConnectionState, StateInput], ConnectionState] = {
    (S.CONNECTING, I.ACCEPT): S.OPEN,
    (S.CONNECTING, I.REJECT): S.CLOSED,
    (S.CONNECTING, I.PEER_GONE): S.CLOSED,
    (S.OPEN, I.SERVER_CLOSE): S.CLOSING,
    (S.OPEN, I.PEER_GONE): S.CLOSED,
    (S.CLOSING, I.PEER_GONE): S.CLOSED,
}

del S, I


def transition(state: ConnectionState, event: StateInput) -> ConnectionState:
    """Return the state ``event`` leads to from ``state``.

    Args:
        state: The current state.
        event: What happened.

    Returns:
        The next state.

    Raises:
        LocalProtocolError: The table has no such move.
    """
    try:
        return TRANSITIONS[state, event]
    except KeyError:
        raise LocalProtocolError(
            f"cannot {event.value} a connection that is {state.value}"
        ) from None
