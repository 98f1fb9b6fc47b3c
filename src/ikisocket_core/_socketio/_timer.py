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

    Each kind of timer says what happens when it fires (:meth:`fire`); none
    refers to itself (a bound method of its own kept in a field would make
    every timer a reference cycle, left for the garbage collector to find once
    it is dropped).

    Attributes:
        due: When it fires, while armed (the heap's own field).
        delay: How long after the stamping tick it fires.
        stamped: Whether the second step is armed.
    """

    __slots__ = ("delay", "due", "stamped")

    def __init__(self) -> None:
        self.due: float | None = None
        self.delay = 0.0
        self.stamped = False

    def fire(self, now: float) -> None:
        """It is due: what each kind of timer does then.

        Args:
            now: The hub's time.
        """
        raise NotImplementedError  # pragma: no cover (every kind of timer has its own)


def _nothing(now: float) -> None:
    """What a :class:`Callback` whose owner ended calls (it is never armed again)."""


class Callback(Timer):
    """A timer that calls a function when it fires.

    Attributes:
        callback: What it calls, with the time.
    """

    __slots__ = ("callback",)

    def __init__(self, callback: Callable[[float], None]) -> None:
        super().__init__()
        self.callback = callback

    def fire(self, now: float) -> None:
        """Call the callback.

        Args:
            now: The hub's time.
        """
        self.callback(now)

    def release(self) -> None:
        """Let go of the callback (and what it refers to): its owner ended, it fires no more."""
        self.callback = _nothing


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
        super().__init__()
        self.joined = joined
        self.id = ack_id
        self.callback = callback
        self.timeout = timeout

    def fire(self, now: float) -> None:
        """The answer did not come in time: the callback gets an :class:`AckTimeout`.

        Args:
            now: The hub's time.
        """
        # Armed exactly while pending: an answer or the end disarms it.
        del self.joined.pending[self.id]
        self.joined.session.mount._ack_timed_out(self)
