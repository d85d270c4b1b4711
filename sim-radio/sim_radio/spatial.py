"""Spatial hashing of node positions, rebuilt only every `refresh_s` of virtual time.

Cells are `reach + 2 * max_speed * refresh_s` wide, so a node found in the 3x3 cells around
another at build time may be within reach of it at any moment of the window, however both
moved, and no node outside them can be. `in_reach` goes further: from the positions at build
time, two nodes closer than `reach - slack` are surely in reach now and two farther than
`reach + slack` surely not (slack = 2 * max_speed * elapsed), so exact positions are
computed only for the few pairs near the edge. Static scenarios build once.
"""

from __future__ import annotations

from collections.abc import Callable


class SpatialHash:
    """Who is within `reach_m` of node i at time t, without looking at every node."""

    def __init__(self, count: int, position: Callable[[int, float], tuple[float, float]],
                 reach_m: float, max_speed_mps: float, refresh_s: float = 1.0) -> None:
        self.count = count
        self._position = position
        self.reach_m = reach_m
        self.max_speed = max_speed_mps
        self.refresh_s = refresh_s if max_speed_mps > 0 else float("inf")
        slack = 2.0 * max_speed_mps * refresh_s if max_speed_mps > 0 else 0.0
        self.cell_m = max(reach_m + slack, 1.0)
        self._built_at = float("-inf")
        self._cells: dict[tuple[int, int], list[int]] = {}
        self._cell_of: list[tuple[int, int]] = []
        self._near: dict[int, list[int]] = {}
        self.xs: list[float] = []
        self.ys: list[float] = []
        self.rebuilds = 0

    def _build(self, t: float) -> None:
        cell = self.cell_m
        cells: dict[tuple[int, int], list[int]] = {}
        cell_of = []
        xs, ys = [], []
        for i in range(self.count):
            x, y = self._position(i, t)
            xs.append(x)
            ys.append(y)
            key = (int(x // cell), int(y // cell))
            cell_of.append(key)
            cells.setdefault(key, []).append(i)
        self._cells = cells
        self._cell_of = cell_of
        self._near = {}
        self.xs, self.ys = xs, ys
        self._built_at = t
        self.rebuilds += 1

    def invalidate(self) -> None:
        """Rebuild at the next query (a node jumped: its old cell is wrong)."""
        self._built_at = float("-inf")

    def near(self, i: int, t: float) -> list[int]:
        """Nodes (i included) that may be within reach of node i at time t, in index order."""
        if t - self._built_at >= self.refresh_s or t < self._built_at:
            self._build(t)
        found = self._near.get(i)
        if found is None:
            cx, cy = self._cell_of[i]
            cells = self._cells
            found = []
            for dx in (-1, 0, 1):
                for dy in (-1, 0, 1):
                    members = cells.get((cx + dx, cy + dy))
                    if members:
                        found.extend(members)
            found.sort()
            self._near[i] = found
        return found

    def in_reach(self, i: int, t: float, xi: float, yi: float) -> list[int]:
        """Nodes other than i within reach of node i (at xi, yi) at time t, in index order."""
        candidates = self.near(i, t)
        xs, ys = self.xs, self.ys
        reach = self.reach_m
        slack = 2.0 * self.max_speed * (t - self._built_at) if self.max_speed > 0 else 0.0
        sure2 = (reach - slack) ** 2 if reach > slack else -1.0
        maybe2 = (reach + slack) ** 2
        reach2 = reach * reach
        bx, by = xs[i], ys[i]
        position = self._position
        found = []
        for j in candidates:
            dx, dy = xs[j] - bx, ys[j] - by
            d2 = dx * dx + dy * dy
            if d2 <= sure2:
                if j != i:
                    found.append(j)
            elif d2 <= maybe2:
                jx, jy = position(j, t)
                dx, dy = jx - xi, jy - yi
                if dx * dx + dy * dy <= reach2:
                    found.append(j)
        return found
