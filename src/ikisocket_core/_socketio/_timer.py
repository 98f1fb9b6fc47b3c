"""The Socket.IO mount's deadlines: a :class:`Timer` on its heap, and the pending ack it times.

They live apart from the session so that the compiled build (docs/howto/compiled.md), which
compiles the session, leaves them pure Python: other modules' timers (remote acks, hand-off
claims) subclass :class:`Timer`, and mypyc lets no interpreted class subclass a compiled one.
See :mod:`ikisocket_core._socketio._session`'s docstring for how a timer is armed in two steps.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ikisocket_core._events import AckCallback

    from ._session import Joined

__all__: list[str] = []


class Timer:
    """One deadline on the mount's heap (armed in two steps, see the session module).

    Attributes:
        due: When it fires, while armed (the heap's own field).
        delay: How long after the stamping tick it fires.
        stamped: Whether the second step is armed.
        fire: What to call when it fires, with the time.
    """

    __slots__ = ("delay", "due", "fire", "stamped")

    def __init__(self, fire: Callable[[float], None]) -> None:
        self.due: float | None = None
        self.delay = 0.0
        self.stamped = False
        self.fire = fire


class PendingAck(Timer):
    """An event sent with ``ack=``: its callback, until the answer, the timeout or the end.

    Attributes:
        callback: The ``ack`` callback.
        timeout: The timeout given.
        joined: The namespace connection it was sent on.
        id: Its ack id.
    """

    __slots__ = ("callback", "id", "joined", "timeout")

    def __init__(self, joined: Joined, ack_id: int, callback: AckCallback, timeout: float) -> None:
        super().__init__(self._expired)
        self.joined = joined
        self.id = ack_id
        self.callback = callback
        self.timeout = timeout

    def _expired(self, now: float) -> None:
        # Armed exactly while pending: an answer or the end disarms it.
        del self.joined.pending[self.id]
        self.joined.session.mount._ack_timed_out(self)
