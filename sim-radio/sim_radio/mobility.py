"""Mobility models as lazily extended piecewise-linear trajectories.

Every model produces, per node, a list of waypoints (time, x, y); between two waypoints a
node moves in a straight line at constant speed, and two waypoints at the same place are a
pause. Random models append the next leg only when a query asks for a time beyond the last
waypoint, so positions are computed per event, never by stepping every node every tick.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from random import Random

Extender = Callable[["Trajectory"], None]


class Trajectory:
    """One node's path: waypoint times and coordinates, extended on demand."""

    __slots__ = ("_extend", "_k", "ts", "xs", "ys")

    def __init__(self, t0: float, x: float, y: float, extend: Extender | None = None) -> None:
        self.ts = [t0]
        self.xs = [x]
        self.ys = [y]
        self._extend = extend
        self._k = 0

    def add(self, t: float, x: float, y: float) -> None:
        """Append a waypoint reached at time `t` (not before the last one)."""
        self.ts.append(t)
        self.xs.append(x)
        self.ys.append(y)

    def position(self, t: float) -> tuple[float, float]:
        ts = self.ts
        if self._extend is not None:
            while ts[-1] <= t:
                self._extend(self)
        last = len(ts) - 1
        k = self._k
        if not (ts[k] <= t and (k == last or t < ts[k + 1])):
            k = bisect_right(ts, t) - 1
            if k < 0:
                return self.xs[0], self.ys[0]
            self._k = k
        if k >= last:
            return self.xs[last], self.ys[last]
        t0 = ts[k]
        span = ts[k + 1] - t0
        x0, y0 = self.xs[k], self.ys[k]
        if span <= 0.0:
            return self.xs[k + 1], self.ys[k + 1]
        f = (t - t0) / span
        return x0 + (self.xs[k + 1] - x0) * f, y0 + (self.ys[k + 1] - y0) * f


@dataclass(slots=True)
class Mobility:
    """All nodes' trajectories, the area they move in, and the fastest speed among them."""

    trajectories: list[Trajectory]
    width_m: float
    height_m: float
    max_speed_mps: float

    def position(self, i: int, t: float) -> tuple[float, float]:
        return self.trajectories[i].position(t)

    def __len__(self) -> int:
        return len(self.trajectories)


def static(positions: Sequence[tuple[float, float]], width_m: float,
           height_m: float) -> Mobility:
    """Nodes that never move."""
    return Mobility([Trajectory(0.0, x, y) for x, y in positions], width_m, height_m, 0.0)


def uniform_positions(n: int, width_m: float, height_m: float,
                      rng: Random) -> list[tuple[float, float]]:
    return [(rng.uniform(0.0, width_m), rng.uniform(0.0, height_m)) for _ in range(n)]


def random_waypoint(n: int, width_m: float, height_m: float, *, min_speed_mps: float,
                    max_speed_mps: float, pause_s: float, rng: Random) -> Mobility:
    """Random waypoint as in ns-2's setdest: pause, pick a point and a speed, go, repeat.

    Speeds are drawn uniformly in [min, max]; a draw below 0.1 m/s is raised to 0.1 m/s so
    that no node is stuck for ever on one leg (the known speed-decay flaw of the model).
    """
    trajectories = []
    for i in range(n):
        node_rng = Random(rng.getrandbits(64) ^ i)

        def extend(tr: Trajectory, r: Random = node_rng) -> None:
            t, x, y = tr.ts[-1], tr.xs[-1], tr.ys[-1]
            nx, ny = r.uniform(0.0, width_m), r.uniform(0.0, height_m)
            speed = max(0.1, r.uniform(min_speed_mps, max_speed_mps))
            arrive = t + math.hypot(nx - x, ny - y) / speed
            tr.add(arrive, nx, ny)
            tr.add(arrive + pause_s, nx, ny)

        x0, y0 = node_rng.uniform(0.0, width_m), node_rng.uniform(0.0, height_m)
        tr = Trajectory(0.0, x0, y0, extend)
        tr.add(pause_s, x0, y0)
        trajectories.append(tr)
    return Mobility(trajectories, width_m, height_m, max(0.1, max_speed_mps))


_DIRECTIONS = ((1, 0), (0, 1), (-1, 0), (0, -1))


def manhattan(n: int, width_m: float, height_m: float, *, block_m: float,
              min_speed_mps: float, max_speed_mps: float, pause_s: float,
              turn_probability: float, rng: Random) -> Mobility:
    """Vehicles on a street grid: drive intersection to intersection, maybe wait, maybe turn.

    Streets run every `block_m` in both directions. At each intersection a vehicle waits up
    to `pause_s` (a traffic light), then goes straight, or turns left or right with
    `turn_probability` shared between the two; it turns back only at the edge of the grid.
    """
    cols = max(1, int(width_m // block_m))
    rows = max(1, int(height_m // block_m))
    trajectories = []
    for i in range(n):
        node_rng = Random(rng.getrandbits(64) ^ i)
        state = {"dir": node_rng.randrange(4)}

        def extend(tr: Trajectory, r: Random = node_rng, st: dict[str, int] = state) -> None:
            t, x, y = tr.ts[-1], tr.xs[-1], tr.ys[-1]
            cx, cy = round(x / block_m), round(y / block_m)
            d = st["dir"]
            roll = r.random()
            if roll < turn_probability / 2:
                d = (d + 1) % 4
            elif roll < turn_probability:
                d = (d + 3) % 4
            choices = [d, (d + 1) % 4, (d + 3) % 4, (d + 2) % 4]
            for cand in choices:
                dx, dy = _DIRECTIONS[cand]
                if 0 <= cx + dx <= cols and 0 <= cy + dy <= rows:
                    d = cand
                    break
            dx, dy = _DIRECTIONS[d]
            st["dir"] = d
            speed = max(0.1, r.uniform(min_speed_mps, max_speed_mps))
            nx, ny = (cx + dx) * block_m, (cy + dy) * block_m
            arrive = t + block_m / speed
            tr.add(arrive, nx, ny)
            wait = r.uniform(0.0, pause_s) if pause_s > 0 else 0.0
            if wait > 0:
                tr.add(arrive + wait, nx, ny)

        x0 = node_rng.randrange(cols + 1) * block_m
        y0 = node_rng.randrange(rows + 1) * block_m
        trajectories.append(Trajectory(0.0, x0, y0, extend))
    return Mobility(trajectories, cols * block_m, rows * block_m, max(0.1, max_speed_mps))


def from_waypoints(paths: Sequence[Sequence[tuple[float, float, float]]],
                   width_m: float | None = None, height_m: float | None = None) -> Mobility:
    """Trace replay: per node, waypoints (t, x, y) sorted by time."""
    trajectories = []
    fastest = 0.0
    max_x = max_y = 0.0
    for path in paths:
        t0, x0, y0 = path[0]
        tr = Trajectory(t0, x0, y0)
        max_x, max_y = max(max_x, x0), max(max_y, y0)
        for t, x, y in path[1:]:
            pt, px, py = tr.ts[-1], tr.xs[-1], tr.ys[-1]
            if t > pt:
                fastest = max(fastest, math.hypot(x - px, y - py) / (t - pt))
            tr.add(t, x, y)
            max_x, max_y = max(max_x, x), max(max_y, y)
        trajectories.append(tr)
    return Mobility(trajectories, width_m if width_m is not None else max_x,
                    height_m if height_m is not None else max_y, fastest)
