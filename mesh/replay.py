"""Anti-replay windows over originators' message counters (as IPsec does for sequence numbers).

Every signed frame carries its originator's monotonically increasing counter. A counter seen
before is a duplicate (a flooded RREQ arriving again, or a replay); one older than the window
is stale. Checking comes before the signature check (cheap first) and accepting after it
(so a forged frame cannot move the window). Memory is bounded: at most `capacity`
originators are remembered, least recently heard first out.
"""

from __future__ import annotations

from collections import OrderedDict
from enum import Enum


class Freshness(Enum):
    FRESH = "fresh"
    DUPLICATE = "duplicate"
    STALE = "stale"


class _Window:
    """One originator's highest counter and the bitmap of the `window` below it."""

    __slots__ = ("bitmap", "highest")

    def __init__(self, highest: int, bitmap: int) -> None:
        self.highest = highest
        self.bitmap = bitmap


class ReplayGuard:
    def __init__(self, window: int = 256, capacity: int = 4096) -> None:
        self.window = window
        self.capacity = capacity
        self._mask = (1 << window) - 1
        self._state: OrderedDict[bytes, _Window] = OrderedDict()
        self._checked: bytes | None = None
        """The origin of the last `check` and its window: `accept` follows `check` for the
        same origin, and need not look it up again (updated in place, not replaced)."""
        self._checked_window: _Window | None = None

    def check(self, origin: bytes, counter: int) -> Freshness:
        state = self._state.get(origin)
        self._checked, self._checked_window = origin, state
        if state is None:
            return Freshness.FRESH
        highest = state.highest
        if counter > highest:
            return Freshness.FRESH
        offset = highest - counter
        if offset >= self.window:
            return Freshness.STALE
        return Freshness.DUPLICATE if state.bitmap >> offset & 1 else Freshness.FRESH

    def accept(self, origin: bytes, counter: int) -> None:
        if origin is self._checked and self._checked_window is not None:
            state: _Window | None = self._checked_window
        else:
            state = self._state.get(origin)
        self._checked = self._checked_window = None
        if state is None:
            self._state[origin] = _Window(counter, 1)
            if len(self._state) > self.capacity:
                self._state.popitem(last=False)
            return
        highest = state.highest
        if counter > highest:
            state.bitmap = ((state.bitmap << (counter - highest)) | 1) & self._mask
            state.highest = counter
        else:
            state.bitmap |= 1 << (highest - counter)
        self._state.move_to_end(origin)

    def __len__(self) -> int:
        return len(self._state)
