"""Mobile-line coverage: whether each node's cellular line works, from where it is and when.

A line is up when the node is inside at least one cell, not inside an active outage area,
and not in a scheduled outage of its own. The signal falls from -70 dBm at a cell's centre
to -120 dBm at its edge, reported in 10 dB steps (what a modem's bars show), so that a
moving vehicle does not re-announce its line on every metre.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from mesh.line import LINE_DOWN, LineStatus


@dataclass(frozen=True, slots=True)
class Cell:
    x: float
    y: float
    radius_m: float


@dataclass(frozen=True, slots=True)
class Area:
    """A circle (radius_m > 0) or a rectangle (x0, y0, x1, y1) where lines fail."""

    start_s: float
    end_s: float
    x: float = 0.0
    y: float = 0.0
    radius_m: float = 0.0
    rect: tuple[float, float, float, float] | None = None

    def active(self, t: float) -> bool:
        return self.start_s <= t < self.end_s

    def contains(self, x: float, y: float) -> bool:
        if self.rect is not None:
            x0, y0, x1, y1 = self.rect
            return x0 <= x <= x1 and y0 <= y <= y1
        return math.hypot(x - self.x, y - self.y) <= self.radius_m


@dataclass(frozen=True, slots=True)
class Scheduled:
    """Lines of the listed nodes are down during [start_s, end_s)."""

    nodes: frozenset[int]
    start_s: float
    end_s: float


@dataclass(frozen=True, slots=True)
class Coverage:
    """The coverage model of a scenario. `model`: "all", "none" or "cells"."""

    model: str = "none"
    cells: tuple[Cell, ...] = ()
    outages: tuple[Area, ...] = ()
    scheduled: tuple[Scheduled, ...] = ()
    technology: str = "lte"
    rtt_ms: int = 60
    check_interval_s: float = 1.0

    @property
    def dynamic(self) -> bool:
        """Whether lines can change during a run (else they are set once at the start)."""
        return self.model == "cells" or bool(self.outages) or bool(self.scheduled)

    def change_times(self) -> list[float]:
        """Instants at which outages start or end (checked exactly, besides the period)."""
        times = {t for a in self.outages for t in (a.start_s, a.end_s)}
        times |= {t for s in self.scheduled for t in (s.start_s, s.end_s)}
        return sorted(t for t in times if math.isfinite(t))

    def line(self, node: int, x: float, y: float, t: float) -> LineStatus:
        if self.model == "none":
            return LINE_DOWN
        for s in self.scheduled:
            if node in s.nodes and s.start_s <= t < s.end_s:
                return LINE_DOWN
        for area in self.outages:
            if area.active(t) and area.contains(x, y):
                return LINE_DOWN
        if self.model == "all":
            return LineStatus(True, self.technology, -80, True, self.rtt_ms)
        best = None
        for cell in self.cells:
            d = math.hypot(x - cell.x, y - cell.y)
            if d <= cell.radius_m:
                share = d / cell.radius_m if cell.radius_m > 0 else 0.0
                best = share if best is None else min(best, share)
        if best is None:
            return LINE_DOWN
        signal = -70 - 10 * round(5 * best)
        return LineStatus(True, self.technology, signal, True, self.rtt_ms)
