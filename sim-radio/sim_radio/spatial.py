"""Spatial hashing of node positions, rebuilt only every `refresh_s` of virtual time.

Cells are `reach + 2 * max_speed * refresh_s` wide, so a node found in the 3x3 cells around
a point at build time is still a candidate at any moment of the window, however it moved;
callers then check the exact distance at the exact time. Static scenarios build once.
"""

from __future__ import annotations

from collections.abc import Callable


class SpatialHash:
    """Candidates for "who is within `reach` of node i at time t"."""

    def __init__(self, count: int, position: Callable[[int, float], tuple[float, float]],
                 reach_m: float, max_speed_mps: float, refresh_s: float = 1.0) -> None:
        self.count = count
        self._position = position
        self.refresh_s = refresh_s if max_speed_mps > 0 else float("inf")
        slack = 2.0 * max_speed_mps * refresh_s if max_speed_mps > 0 else 0.0
        self.cell_m = max(reach_m + slack, 1.0)
        self._built_at = float("-inf")
        self._cells: dict[tuple[int, int], list[int]] = {}
        self._cell_of: list[tuple[int, int]] = []
        self.rebuilds = 0

    def _build(self, t: float) -> None:
        cell = self.cell_m
        cells: dict[tuple[int, int], list[int]] = {}
        cell_of = []
        for i in range(self.count):
            x, y = self._position(i, t)
            key = (int(x // cell), int(y // cell))
            cell_of.append(key)
            cells.setdefault(key, []).append(i)
        self._cells = cells
        self._cell_of = cell_of
        self._built_at = t
        self.rebuilds += 1

    def near(self, i: int, t: float) -> list[int]:
        """Nodes (i included) that may be within reach of node i at time t, in index order."""
        if t - self._built_at >= self.refresh_s or t < self._built_at:
            self._build(t)
        cx, cy = self._cell_of[i]
        cells = self._cells
        found: list[int] = []
        for dx in (-1, 0, 1):
            for dy in (-1, 0, 1):
                members = cells.get((cx + dx, cy + dy))
                if members:
                    found.extend(members)
        found.sort()
        return found

    def invalidate(self) -> None:
        """Rebuild at the next query (a node jumped: its old cell is wrong)."""
        self._built_at = float("-inf")
