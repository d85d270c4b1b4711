"""The virtual clock: a heap of (time, priority, sequence, action, argument).

The increasing sequence number breaks ties, so two runs with the same seed fire the same
actions in the same order (as in SimPy's core). Time jumps from one event to the next;
nothing is stepped per tick.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from typing import Any

Action = Callable[[Any], None]

# Priorities at equal times: deliveries first, then timers, then traffic, then sampling.
PRIO_RADIO = 0
PRIO_TIMER = 1
PRIO_CONTROL = 2
PRIO_TRAFFIC = 3
PRIO_SAMPLE = 4


class ClockError(ValueError):
    """An action was scheduled in the past (a bug in the caller)."""


class Clock:
    """Virtual time and the queue of what happens next."""

    def __init__(self, start: float = 0.0) -> None:
        self.now = start
        self._heap: list[tuple[float, int, int, Action, Any]] = []
        self._seq = 0
        self.fired = 0

    def at(self, when: float, priority: int, action: Action, arg: Any = None) -> None:
        """Run `action(arg)` at virtual time `when`."""
        if when < self.now:
            raise ClockError(f"cannot schedule at {when} before now={self.now}")
        self._seq += 1
        heapq.heappush(self._heap, (when, priority, self._seq, action, arg))

    def peek(self) -> float | None:
        """Time of the next event, or None when nothing is left."""
        return self._heap[0][0] if self._heap else None

    def step(self) -> None:
        """Fire the next event."""
        when, _, _, action, arg = heapq.heappop(self._heap)
        self.now = when
        self.fired += 1
        action(arg)

    def run(self, until: float, progress: Callable[[float], None] | None = None,
            progress_every: float = 1.0) -> None:
        """Fire events up to and including `until`, then set the clock to `until`."""
        heap = self._heap
        pop = heapq.heappop
        next_report = self.now + progress_every
        fired = 0
        while heap and heap[0][0] <= until:
            when, _, _, action, arg = pop(heap)
            self.now = when
            fired += 1
            action(arg)
            if progress is not None and when >= next_report:
                progress(when)
                next_report = when + progress_every
        self.fired += fired
        self.now = until
        if progress is not None:
            progress(until)

    def __len__(self) -> int:
        return len(self._heap)
