"""Reassembly of fragmented frames, with a hard bound on the memory it holds."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass, field

from mesh.frames import Fragment


@dataclass(slots=True)
class _Partial:
    count: int
    deadline: float
    parts: dict[int, bytes] = field(default_factory=dict)
    size: int = 0


class Reassembler:
    """Collects fragments per (interface, link source, fragment id).

    Holds at most `max_bytes` of partial frames: the oldest partial frames are evicted to make
    room, and partial frames older than `timeout_s` are dropped. `evicted` and `expired`
    count what was lost, so that floods show up in the counters instead of in memory.
    """

    def __init__(self, max_bytes: int, timeout_s: float, max_frame_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s
        self.max_frame_bytes = max_frame_bytes
        self._partials: OrderedDict[tuple[str, Hashable, int], _Partial] = OrderedDict()
        self._held = 0
        self.evicted = 0
        self.expired = 0
        self.oversized = 0

    @property
    def held_bytes(self) -> int:
        return self._held

    def add(self, iface: str, link: Hashable, frag: Fragment, now: float) -> bytes | None:
        """Add a fragment; return the whole frame once its last fragment is in."""
        self._expire(now)
        key = (iface, link, frag.frag_id)
        partial = self._partials.get(key)
        if partial is None or partial.count != frag.count:
            if partial is not None:
                self._drop(key)
            partial = _Partial(frag.count, now + self.timeout_s)
            self._partials[key] = partial
        if frag.index in partial.parts:
            return None
        if partial.size + len(frag.chunk) > self.max_frame_bytes:
            self.oversized += 1
            self._drop(key)
            return None
        while self._held + len(frag.chunk) > self.max_bytes and self._partials:
            oldest = next(iter(self._partials))
            if oldest == key and len(self._partials) == 1:
                break
            self.evicted += 1
            self._drop(oldest if oldest != key else list(self._partials)[1])
        partial.parts[frag.index] = frag.chunk
        partial.size += len(frag.chunk)
        self._held += len(frag.chunk)
        if len(partial.parts) < partial.count:
            return None
        self._drop(key)
        return b"".join(partial.parts[i] for i in range(partial.count))

    def _drop(self, key: tuple[str, Hashable, int]) -> None:
        partial = self._partials.pop(key)
        self._held -= partial.size

    def _expire(self, now: float) -> None:
        while self._partials:
            key, partial = next(iter(self._partials.items()))
            if partial.deadline > now:
                return
            self.expired += 1
            self._drop(key)
