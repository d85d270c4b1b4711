"""Vehicle models (open-ev-data format) and charging along the vehicle's charge curve.

Time to charge comes from integrating dt = dE / P(E) exactly: the DC curve is linear between
its points (open-ev-data gives power in kW at state-of-charge percentages), capped by the
charger's and the vehicle's maximum, so every piece is either constant or linear in energy,
and a linear piece integrates to a logarithm. AC charging is flat at the lesser of the
on-board charger and the connector (scaled down when the car uses fewer phases).
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.modules.charging.errors import VehicleError

AC_PLUGS = frozenset({"type1", "type2"})
DC_PLUGS = frozenset({"ccs", "chademo", "tesla"})
_PORT_TO_PLUGS: Mapping[str, frozenset[str]] = {
    "type1": frozenset({"type1"}),
    "type2": frozenset({"type2"}),
    "ccs": frozenset({"ccs"}),
    "chademo": frozenset({"chademo"}),
    "tesla_suc": frozenset({"tesla"}),
    "tesla_ccs": frozenset({"tesla", "ccs"}),
}


@dataclass(frozen=True, slots=True)
class CurvePoint:
    """Vehicle-side DC power limit at a state of charge (percent 0..100, watts)."""

    soc_pct: float
    power_w: int


@dataclass(frozen=True, slots=True)
class Vehicle:
    """One EV model: what the planner needs to know about its battery and inlets."""

    id: str
    name: str
    capacity_wh: int
    consumption_wh_per_km: int
    ac_max_w: int
    ac_phases: int
    dc_max_w: int
    dc_curve: tuple[CurvePoint, ...]
    plugs: frozenset[str]

    def with_plugs(self, plugs: Iterable[str]) -> Vehicle:
        """The same vehicle with another set of usable plugs (adapters, user override)."""
        chosen = frozenset(p.strip().lower() for p in plugs if p.strip())
        unknown = chosen - AC_PLUGS - DC_PLUGS
        if unknown or not chosen:
            raise VehicleError(
                f"unknown plug types {sorted(unknown)}; use {sorted(AC_PLUGS | DC_PLUGS)}")
        return Vehicle(self.id, self.name, self.capacity_wh, self.consumption_wh_per_km,
                       self.ac_max_w, self.ac_phases, self.dc_max_w, self.dc_curve, chosen)

    def to_record(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "capacity_wh": self.capacity_wh,
                "consumption_wh_per_km": self.consumption_wh_per_km,
                "plugs": sorted(self.plugs)}


def _kw_to_w(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise VehicleError(f"{what} is not a number: {value!r}")
    if value < 0:
        raise VehicleError(f"{what} is negative: {value!r}")
    return round(value * 1000)


def vehicle_from_json(entry: Mapping[str, Any]) -> Vehicle:
    """One open-ev-data entry; raises VehicleError naming the field that is wrong."""
    try:
        vid = str(entry["id"])
        name = " ".join(str(entry.get(k) or "").strip()
                        for k in ("brand", "model", "variant")).strip()
        name = " ".join(name.split())
        capacity = _kw_to_w(entry["usable_battery_size"], "usable_battery_size")
        consumption = entry["energy_consumption"]["average_consumption"]
        cons = round(_kw_to_w(consumption, "average_consumption") / 100)  # kWh/100km -> Wh/km
        ac = entry.get("ac_charger") or {}
        dc = entry.get("dc_charger") or {}
        plugs: set[str] = set()
        for port in list(ac.get("ports") or []) + list(dc.get("ports") or []):
            plugs |= _PORT_TO_PLUGS.get(str(port), frozenset())
        ac_max = _kw_to_w(ac.get("max_power") or 0, "ac_charger.max_power")
        phases = int(ac.get("usable_phases") or 1)
        dc_max = _kw_to_w(dc.get("max_power") or 0, "dc_charger.max_power")
        curve = tuple(
            CurvePoint(float(p["percentage"]), _kw_to_w(p["power"], "charging_curve.power"))
            for p in (dc.get("charging_curve") or []))
    except (KeyError, TypeError, ValueError) as exc:
        raise VehicleError(f"vehicle entry {entry.get('id')!r} is malformed: {exc!r}") from exc
    if capacity <= 0 or cons <= 0:
        raise VehicleError(f"vehicle {name!r}: capacity and consumption must be positive")
    if any(b.soc_pct <= a.soc_pct for a, b in itertools.pairwise(curve)):
        raise VehicleError(f"vehicle {name!r}: charging curve percentages must increase")
    if dc_max and not curve:
        curve = (CurvePoint(0.0, dc_max), CurvePoint(100.0, dc_max))
    return Vehicle(vid, name, capacity, cons, ac_max, max(1, min(3, phases)), dc_max, curve,
                   frozenset(plugs))


def load_vehicles(path: str | Path) -> list[Vehicle]:
    """All models of an open-ev-data file; a malformed entry raises (the file is curated)."""
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise VehicleError(f"cannot read vehicle data {path}: {exc}") from exc
    entries = doc.get("data") if isinstance(doc, dict) else doc
    if not isinstance(entries, list):
        raise VehicleError(f"{path}: expected a list of vehicles or {{'data': [...]}}")
    return [vehicle_from_json(e) for e in entries]


def find_vehicle(vehicles: Iterable[Vehicle], query: str) -> Vehicle:
    """By id, exact name, or a unique case-insensitive substring of the name."""
    q = " ".join(query.lower().split())
    pool = list(vehicles)
    for v in pool:
        if v.id == query:
            return v
    exact = [v for v in pool if v.name.lower() == q]
    if exact:
        return exact[0]
    hits = [v for v in pool if q in v.name.lower()]
    names = sorted({v.name for v in hits})
    if len(names) == 1:
        return hits[0]
    if not hits:
        raise VehicleError(f"no vehicle model matches {query!r}")
    shown = ", ".join(names[:8]) + (" ..." if len(names) > 8 else "")
    raise VehicleError(f"{query!r} matches {len(names)} models: {shown}; be more specific")


@dataclass(frozen=True, slots=True)
class ChargeSegment:
    """A stretch of a charging session at roughly constant power (for tariff pricing)."""

    start_s: float
    duration_s: float
    energy_wh: float

    @property
    def power_w(self) -> float:
        return self.energy_wh * 3600.0 / self.duration_s if self.duration_s > 0 else 0.0


def _dc_power_points(vehicle: Vehicle, cap_w: float) -> list[tuple[float, float]]:
    """(energy Wh, power W) breakpoints of min(curve, cap) over the whole battery."""
    cap = min(cap_w, float(vehicle.dc_max_w))
    pts = [(p.soc_pct / 100.0 * vehicle.capacity_wh, float(p.power_w)) for p in vehicle.dc_curve]
    if pts[0][0] > 0:
        pts.insert(0, (0.0, pts[0][1]))
    if pts[-1][0] < vehicle.capacity_wh:
        pts.append((float(vehicle.capacity_wh), pts[-1][1]))
    out: list[tuple[float, float]] = []
    for (e0, p0), (e1, p1) in itertools.pairwise(pts):
        out.append((e0, min(p0, cap)))
        if (p0 - cap) * (p1 - cap) < 0:  # the curve crosses the cap inside this piece
            e_cross = e0 + (cap - p0) * (e1 - e0) / (p1 - p0)
            out.append((e_cross, cap))
    out.append((pts[-1][0], min(pts[-1][1], cap)))
    return out


def _piece_time_h(e0: float, p0: float, e1: float, p1: float) -> float:
    """Hours to go from e0 to e1 Wh when power is linear from p0 to p1 W over that span."""
    if e1 <= e0:
        return 0.0
    if p0 <= 0 or p1 <= 0:
        return math.inf
    if abs(p1 - p0) < 1e-9:
        return (e1 - e0) / p0
    k = (p1 - p0) / (e1 - e0)
    return math.log(p1 / p0) / k


def _lerp(x: float, x0: float, y0: float, x1: float, y1: float) -> float:
    return y0 if x1 == x0 else y0 + (y1 - y0) * (x - x0) / (x1 - x0)


def charge_segments(vehicle: Vehicle, start_wh: float, target_wh: float, *, dc: bool,
                    charger_w: float, charger_phases: int = 3) -> list[ChargeSegment]:
    """The session from start_wh to target_wh battery energy as constant/linear pieces."""
    if not 0 <= start_wh <= vehicle.capacity_wh or not 0 <= target_wh <= vehicle.capacity_wh:
        raise VehicleError(f"energies {start_wh}..{target_wh} Wh outside the battery "
                           f"(0..{vehicle.capacity_wh} Wh)")
    if target_wh <= start_wh:
        return []
    if not dc:
        phases = min(vehicle.ac_phases, charger_phases)
        power = min(float(vehicle.ac_max_w), charger_w * phases / max(charger_phases, 1))
        if power <= 0:
            raise VehicleError(f"{vehicle.name} cannot charge on AC here")
        return [ChargeSegment(0.0, (target_wh - start_wh) / power * 3600.0, target_wh - start_wh)]
    if not vehicle.dc_curve or charger_w <= 0:
        raise VehicleError(f"{vehicle.name} cannot charge on DC")
    segments: list[ChargeSegment] = []
    t = 0.0
    pts = _dc_power_points(vehicle, charger_w)
    for (e0, p0), (e1, p1) in itertools.pairwise(pts):
        lo, hi = max(e0, start_wh), min(e1, target_wh)
        if hi <= lo:
            continue
        pl, ph = _lerp(lo, e0, p0, e1, p1), _lerp(hi, e0, p0, e1, p1)
        hours = _piece_time_h(lo, pl, hi, ph)
        if math.isinf(hours):
            raise VehicleError(f"{vehicle.name}: charge curve reaches zero power")
        segments.append(ChargeSegment(t, hours * 3600.0, hi - lo))
        t += hours * 3600.0
    return segments


def charge_time_s(vehicle: Vehicle, start_wh: float, target_wh: float, *, dc: bool,
                  charger_w: float, charger_phases: int = 3) -> float:
    """Seconds to charge from start_wh to target_wh (see charge_segments)."""
    segs = charge_segments(vehicle, start_wh, target_wh, dc=dc, charger_w=charger_w,
                           charger_phases=charger_phases)
    return sum(s.duration_s for s in segs)
