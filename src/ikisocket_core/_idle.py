"""The hub's idle timer: one lazy heap of deadlines for ``idle_timeout``.

A connection is armed when it opens, at its last activity plus the timeout.
Activity does not touch the heap: when a deadline passes, the connection is
re-armed from its latest activity, and closed (1001, a ``disconnect`` with an
:class:`~ikisocket_core.IdleTimeout`) only if it really was idle that long.
The state (``_deadlines``, ``_armed``, ``_idle_timeout``) is the hub's.
"""

from __future__ import annotations

import heapq

from ._errors import IdleTimeout
from ._socketio._layer import _SocketIOLayer
from ._state import ConnectionState
from ._timers import ARMED
from ._websocket import Websocket

__all__: list[str] = []

_OPEN = ConnectionState.OPEN


class _IdleTimers(_SocketIOLayer):
    """The hub's layer that arms and expires idle deadlines."""

    _deadlines: list[tuple[float, int, Websocket]]
    _armed: int
    _idle_timeout: float | None

    def _arm_idle(self, kws: Websocket) -> None:
        if self._idle_timeout is not None:
            self._arm(kws, kws.last_activity + self._idle_timeout)

    def _arm(self, kws: Websocket, deadline: float) -> None:
        deadlines = self._deadlines
        if len(deadlines) > 2 * len(self._conns) + 64:
            # Mostly ended connections: drop them (amortised O(1) per connection).
            deadlines[:] = [entry for entry in deadlines if entry[2].state is _OPEN]
            heapq.heapify(deadlines)
        self._armed += 1
        ARMED[0] += 1
        heapq.heappush(deadlines, (deadline, self._armed, kws))

    def _expire(self, now: float) -> None:
        deadlines = self._deadlines
        timeout = self._idle_timeout
        assert timeout is not None  # only then is anything armed
        self._depth += 1
        try:
            while deadlines and deadlines[0][0] <= now:
                kws = heapq.heappop(deadlines)[2]
                if kws.state is not _OPEN:
                    continue
                # Lazy re-arming: activity since the deadline was armed moves it (never early).
                due = kws.last_activity + timeout
                if due <= now:
                    self._server_close(kws, 1001, "idle timeout", IdleTimeout(timeout))
                else:
                    self._arm(kws, due)
        finally:
            self._depth -= 1
