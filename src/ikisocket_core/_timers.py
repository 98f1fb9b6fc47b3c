"""Deadlines: one heap for every connection's next timer, so a tick costs what expired.

Each connection has at most one armed deadline at a time (its handshake,
its next keepalive ping, its pong, its closing handshake: whichever its state
needs). Re-arming does not search the heap: the old entry stays and is
skipped when it surfaces, because it no longer matches the connection's
``due`` (lazy deletion, as asyncio's scheduler cancels timers). The heap is
rebuilt when stale entries outnumber live ones, so it stays O(connections).
"""

from __future__ import annotations

import heapq
import itertools
from typing import Generic, Protocol, TypeVar

__all__: list[str] = []

#: How many deadlines were armed so far in this process (every :class:`Deadlines`, and the
#: hub's idle timer): while it stays the same, no deadline anywhere moved earlier, so a
#: driver's timer needs no new look at ``next_deadline`` (see ``Server.deadlines_armed``).
ARMED = [0]


class _Timed(Protocol):
    due: float | None


T = TypeVar("T", bound=_Timed)


class Deadlines(Generic[T]):
    """A min-heap of ``(when, order, item)``; an entry counts while ``item.due == when``."""

    __slots__ = ("_heap", "_live", "_order")

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, T]] = []
        self._order = itertools.count()
        self._live = 0

    def __len__(self) -> int:
        return self._live

    def arm(self, item: T, when: float) -> None:
        """Make ``when`` the item's one deadline (replacing any other)."""
        if item.due is None:
            self._live += 1
        item.due = when
        ARMED[0] += 1
        heapq.heappush(self._heap, (when, next(self._order), item))
        if len(self._heap) > 2 * self._live + 64:
            self._compact()

    def disarm(self, item: T) -> None:
        """Forget the item's deadline, if it has one."""
        if item.due is not None:
            item.due = None
            self._live -= 1

    def next(self) -> float | None:
        """The earliest live deadline, or ``None``."""
        heap = self._heap
        while heap:
            when, _, item = heap[0]
            if item.due == when:
                return when
            heapq.heappop(heap)
        return None

    def expired(self, now: float) -> list[T]:
        """Take every item whose deadline is ``now`` or earlier (each is disarmed).

        Args:
            now: The current time.

        Returns:
            The items, earliest deadline first.
        """
        heap = self._heap
        out: list[T] = []
        while heap and heap[0][0] <= now:
            when, _, item = heapq.heappop(heap)
            if item.due == when:
                item.due = None
                self._live -= 1
                out.append(item)
        return out

    def _compact(self) -> None:
        self._heap = [entry for entry in self._heap if entry[2].due == entry[0]]
        heapq.heapify(self._heap)
