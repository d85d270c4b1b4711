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


class ReplayGuard:
    def __init__(self, window: int = 256, capacity: int = 4096) -> None:
        self.window = window
        self.capacity = capacity
        self._mask = (1 << window) - 1
        self._state: OrderedDict[bytes, tuple[int, int]] = OrderedDict()  # highest, bitmap

    def check(self, origin: bytes, counter: int) -> Freshness:
        state = self._state.get(origin)
        if state is None:
            return Freshness.FRESH
        highest, bitmap = state
        if counter > highest:
            return Freshness.FRESH
        offset = highest - counter
        if offset >= self.window:
            return Freshness.STALE
        return Freshness.DUPLICATE if bitmap >> offset & 1 else Freshness.FRESH

    def accept(self, origin: bytes, counter: int) -> None:
        state = self._state.get(origin)
        if state is None:
            self._state[origin] = (counter, 1)
            if len(self._state) > self.capacity:
                self._state.popitem(last=False)
            return
        highest, bitmap = state
        if counter > highest:
            bitmap = ((bitmap << (counter - highest)) | 1) & self._mask
            highest = counter
        else:
            bitmap |= 1 << (highest - counter)
        self._state[origin] = (highest, bitmap)
        self._state.move_to_end(origin)

    def __len__(self) -> int:
        return len(self._state)
