"""A spatial grid index over facilities, with per-facility columns in numpy arrays.

Facilities are bucketed in cells of `cell_deg` degrees and stored sorted by cell, so a query
reads one contiguous slice per cell row of its bounding box (a `searchsorted` each) and then
works on whole arrays: distances, plug compatibility, rough time and cost. Only a short list
is then evaluated exactly (charge curve, tariff), which is what keeps a query among 100,000
facilities in milliseconds on a small CPU.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from agent.modules.charging.ocpi import ENERGY_SOURCES, USABLE_STATUSES, Location

PLUGS = ("type1", "type2", "ccs", "chademo", "tesla")
SOURCES = tuple(sorted(ENERGY_SOURCES))
EARTH_RADIUS_KM = 6371.0088

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


def haversine_km(lat1: float, lon1: float, lat2: FloatArray, lon2: FloatArray) -> FloatArray:
    """Great-circle distances from one point to arrays of points (degrees in, km out)."""
    p1, p2 = math.radians(lat1), np.radians(lat2)
    dphi = p2 - p1
    dlmb = np.radians(lon2) - math.radians(lon1)
    a = np.sin(dphi / 2) ** 2 + math.cos(p1) * np.cos(p2) * np.sin(dlmb / 2) ** 2
    return np.asarray(2 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.clip(a, 0.0, 1.0))),
                      dtype=np.float64)


@dataclass(frozen=True, slots=True)
class _Tariff0:
    flat: float
    per_kwh: float
    per_hour: float


def _rough_tariff(loc: Location) -> _Tariff0 | None:
    """First price of each kind, restrictions ignored: only for ordering the short list."""
    tariff = next(iter(loc.tariffs.values()), None)
    if tariff is None:
        return None
    found: dict[str, float] = {}
    for el in tariff.elements:
        for c in el.components:
            found.setdefault(c.type, float(c.price))
    return _Tariff0(found.get("FLAT", 0.0), found.get("ENERGY", 0.0), found.get("TIME", 0.0))


class FacilityIndex:
    """Read-only after construction; safe to share between queries."""

    def __init__(self, locations: Sequence[Location], *, cell_deg: float = 0.25) -> None:
        n = len(locations)
        self.cell_deg = cell_deg
        lat = np.array([loc.latitude for loc in locations], dtype=np.float64)
        lon = np.array([loc.longitude for loc in locations], dtype=np.float64)
        rows = np.floor((lat + 90.0) / cell_deg).astype(np.int64)
        cols = np.floor((lon + 180.0) / cell_deg).astype(np.int64)
        self._ncols = math.ceil(360.0 / cell_deg) + 1
        keys = rows * self._ncols + cols
        order = np.argsort(keys, kind="stable")
        self.locations: list[Location] = [locations[i] for i in order]
        self.keys: IntArray = keys[order]
        self.lat: FloatArray = lat[order]
        self.lon: FloatArray = lon[order]
        # Max power per plug kind over usable connectors, and over all connectors.
        self.ac_usable = np.zeros((n, len(PLUGS)))
        self.dc_usable = np.zeros((n, len(PLUGS)))
        self.any_plug = np.zeros((n, len(PLUGS)), dtype=bool)
        self.mix = np.zeros((n, len(SOURCES)))
        self.mix_known = np.zeros(n, dtype=bool)
        self.green_flag = np.zeros(n, dtype=bool)
        self.co2 = np.full(n, np.nan)
        self.public = np.ones(n, dtype=bool)
        self.open_now = np.ones(n, dtype=bool)
        self.flat = np.full(n, np.nan)
        self.per_kwh = np.full(n, np.nan)
        self.per_hour = np.full(n, np.nan)
        for i, loc in enumerate(self.locations):
            for evse in loc.evses:
                usable = evse.status in USABLE_STATUSES
                for c in evse.connectors:
                    plug = c.plug
                    if plug is None:
                        continue
                    k = PLUGS.index(plug)
                    self.any_plug[i, k] = True
                    if usable:
                        table = self.dc_usable if c.is_dc else self.ac_usable
                        table[i, k] = max(table[i, k], c.max_power_w)
            mix = loc.energy_mix
            if mix is not None:
                self.green_flag[i] = mix.is_green_energy
                for s, pct in mix.sources.items():
                    self.mix[i, SOURCES.index(s)] = pct / 100.0
                self.mix_known[i] = bool(mix.sources)
                if mix.co2_g_per_kwh is not None:
                    self.co2[i] = mix.co2_g_per_kwh
            self.public[i] = loc.public
            self.open_now[i] = loc.open_now
            rough = _rough_tariff(loc)
            if rough is not None:
                self.flat[i], self.per_kwh[i], self.per_hour[i] = (
                    rough.flat, rough.per_kwh, rough.per_hour)

    def __len__(self) -> int:
        return len(self.locations)

    def within(self, lat: float, lon: float, radius_km: float) -> IntArray:
        """Indices of facilities in the cells that cover a circle (a superset of the circle)."""
        if len(self.locations) == 0:
            return np.zeros(0, dtype=np.int64)
        dlat = radius_km / 111.0
        coslat = max(math.cos(math.radians(min(abs(lat) + dlat, 89.9))), 1e-6)
        dlon = min(radius_km / (111.320 * coslat), 180.0)
        r0 = math.floor((max(lat - dlat, -90.0) + 90.0) / self.cell_deg)
        r1 = math.floor((min(lat + dlat, 90.0) + 90.0) / self.cell_deg)
        spans: list[tuple[int, int]] = []
        lo_lon, hi_lon = lon - dlon, lon + dlon
        if dlon >= 180.0:
            spans.append((0, self._ncols - 1))
        else:
            for a, b in ((lo_lon, hi_lon),) if lo_lon >= -180 and hi_lon < 180 else (
                    (max(lo_lon, -180.0), min(hi_lon, 180.0)),
                    ((lo_lon + 360.0) if lo_lon < -180 else -180.0,
                     (hi_lon - 360.0) if hi_lon >= 180 else -180.0)):
                if b >= a:
                    spans.append((math.floor((a + 180.0) / self.cell_deg),
                                  math.floor((b + 180.0) / self.cell_deg)))
        parts = []
        for row in range(r0, r1 + 1):
            base = row * self._ncols
            for c0, c1 in spans:
                lo = int(np.searchsorted(self.keys, base + c0, side="left"))
                hi = int(np.searchsorted(self.keys, base + c1, side="right"))
                if hi > lo:
                    parts.append(np.arange(lo, hi, dtype=np.int64))
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
