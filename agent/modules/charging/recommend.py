"""Recommend charging facilities for a vehicle, following its user's preferences.

Two stages. First, on whole arrays: which facilities are within reach with the safety margin,
which have a plug the car takes and an EVSE free, which meet a hard renewable minimum; a
rough score orders them. Then the best `shortlist` are evaluated exactly: charge time along
the car's curve at the connector's power, the session priced with the OCPI tariff, energy
mix and CO2. The final rank is a weighted sum of min-max normalised criteria among those
evaluated, and each recommendation says why it ranks where it does.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

import numpy as np

from agent.modules.charging.errors import PreferenceError, VehicleError
from agent.modules.charging.index import PLUGS, SOURCES, FacilityIndex, haversine_km
from agent.modules.charging.ocpi import RENEWABLE_SOURCES, USABLE_STATUSES, Connector, Location
from agent.modules.charging.tariff import price_session
from agent.modules.charging.vehicle import AC_PLUGS, Vehicle, charge_segments

CRITERIA = ("cost", "time", "renewable", "co2", "distance")
PRESETS: Mapping[str, Mapping[str, float]] = {
    "renewable": {"renewable": 0.6, "time": 0.2, "distance": 0.2},
    "greenest": {"co2": 0.6, "renewable": 0.2, "distance": 0.2},
    "cheapest": {"cost": 0.7, "distance": 0.3},
    "fastest": {"time": 0.8, "distance": 0.2},
    "nearest": {"distance": 1.0},
    "balanced": {"cost": 0.3, "time": 0.3, "renewable": 0.2, "distance": 0.2},
}
SOURCE_NAMES: Mapping[str, str] = {"solar": "SOLAR", "wind": "WIND", "water": "WATER",
                                   "hydro": "WATER", "green": "GENERAL_GREEN"}
EXPLAIN_LIMIT = 200  # excluded facilities listed on request, nearest first
EXCLUSION_REASONS = ("beyond range", "private", "not open", "no compatible connector",
                     "no free EVSE with a compatible connector", "below minimum renewable share")


@dataclass(frozen=True, slots=True, kw_only=True)
class Preferences:
    """What the user wants; every field has a default that a driver would expect."""

    weights: Mapping[str, float] = field(default_factory=lambda: dict(PRESETS["balanced"]))
    sources: frozenset[str] = RENEWABLE_SOURCES  # the desired power sources
    min_renewable: float = 0.0  # hard minimum share (0..1) of the desired sources
    min_arrival_soc: float = 10.0  # percent kept as a safety margin on arrival
    target_soc: float = 80.0  # percent to charge to
    road_factor: float = 1.3  # road km per straight-line km
    speed_kmh: float = 50.0  # for the drive time
    default_co2_g_per_kwh: float = 400.0  # when a facility publishes no energy mix
    ac_efficiency: float = 0.90  # battery energy / metered energy
    dc_efficiency: float = 0.95
    top: int = 5
    shortlist: int = 20

    def __post_init__(self) -> None:
        bad = [k for k in self.weights if k not in CRITERIA]
        if bad or any(w < 0 or not math.isfinite(w) for w in self.weights.values()):
            raise PreferenceError(f"weights must be non-negative numbers for {CRITERIA}, "
                                  f"got {dict(self.weights)}")
        if sum(self.weights.values()) <= 0:
            raise PreferenceError("at least one weight must be positive")
        if not 0 <= self.min_arrival_soc < self.target_soc <= 100:
            raise PreferenceError("need 0 <= min arrival SoC < target SoC <= 100")
        if not 0 <= self.min_renewable <= 1:
            raise PreferenceError("min_renewable is a share between 0 and 1")
        if not (self.road_factor >= 1 and self.speed_kmh > 0 and self.top > 0
                and self.shortlist >= self.top and 0 < self.ac_efficiency <= 1
                and 0 < self.dc_efficiency <= 1):
            raise PreferenceError("road_factor >= 1, speed > 0, 0 < efficiency <= 1, "
                                  "0 < top <= shortlist")
        unknown = self.sources - set(SOURCES)
        if unknown or not self.sources:
            raise PreferenceError(f"unknown energy sources {sorted(unknown)}")


def parse_prefer(text: str) -> tuple[dict[str, float], frozenset[str]]:
    """`--prefer`: a preset (renewable, greenest, cheapest, fastest, nearest, balanced), named
    sources (solar, wind, solar+wind: renewable weight on those sources only), or weights
    (cost=0.5,renewable=0.3,distance=0.2)."""
    t = text.strip().lower()
    if t in PRESETS:
        return dict(PRESETS[t]), RENEWABLE_SOURCES
    if "=" in t:
        weights: dict[str, float] = {}
        for part in t.split(","):
            key, _, value = part.partition("=")
            try:
                weights[key.strip()] = float(value)
            except ValueError as exc:
                raise PreferenceError(f"bad weight {part!r} in --prefer") from exc
        return weights, RENEWABLE_SOURCES
    names = [p.strip() for p in t.replace("+", ",").split(",") if p.strip()]
    if names and all(n in SOURCE_NAMES for n in names):
        return dict(PRESETS["renewable"]), frozenset(SOURCE_NAMES[n] for n in names)
    raise PreferenceError(f"unknown preference {text!r}: use one of {sorted(PRESETS)}, "
                          f"sources like solar+wind, or weights like cost=0.6,time=0.4")


@dataclass(frozen=True, slots=True)
class Recommendation:
    rank: int
    location_id: str
    name: str
    latitude: float
    longitude: float
    distance_km: float  # by road (straight line x road_factor)
    arrival_soc: float  # percent
    connector: str  # OCPI standard
    dc: bool
    power_w: int  # the connector's rating
    energy_wh: int  # into the battery
    metered_wh: int  # from the charger (losses included)
    drive_s: int
    charge_s: int
    cost_milli: int | None  # None when the price is unknown
    currency: str
    renewable_share: float | None  # of the desired sources, None when not published
    co2_g: int
    co2_estimated: bool
    score: float
    reasons: tuple[str, ...]

    def to_record(self) -> dict[str, Any]:
        """CBOR-friendly: integers for energy, money (milli-units), grams, micro-degrees."""
        return {"rank": self.rank, "location": self.location_id, "name": self.name,
                "lat_e6": round(self.latitude * 1e6), "lon_e6": round(self.longitude * 1e6),
                "distance_m": round(self.distance_km * 1000),
                "arrival_soc_permille": round(self.arrival_soc * 10),
                "connector": self.connector, "dc": self.dc, "power_w": self.power_w,
                "energy_wh": self.energy_wh, "metered_wh": self.metered_wh,
                "drive_s": self.drive_s, "charge_s": self.charge_s,
                "cost_milli": self.cost_milli, "currency": self.currency,
                "renewable_permille": None if self.renewable_share is None
                else round(self.renewable_share * 1000),
                "co2_g": self.co2_g, "co2_estimated": self.co2_estimated,
                "reasons": list(self.reasons)}


@dataclass(frozen=True, slots=True)
class Exclusion:
    location_id: str
    name: str
    distance_km: float
    reason: str


@dataclass(frozen=True, slots=True)
class RecommendResult:
    vehicle: Vehicle
    soc: float
    latitude: float
    longitude: float
    range_km: float  # road km drivable before the safety margin
    recommendations: tuple[Recommendation, ...]
    excluded: Mapping[str, int]  # reason -> count (all facilities in the index)
    exclusions: tuple[Exclusion, ...]  # nearest EXPLAIN_LIMIT, when asked (explain=True)
    considered: int  # facilities that passed the filters

    def plan_id(self) -> str:
        """A short stable id for the chosen plan (the top recommendation)."""
        top = self.recommendations[0].location_id if self.recommendations else ""
        text = f"{self.vehicle.id}|{self.soc}|{self.latitude}|{self.longitude}|{top}"
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def to_record(self) -> dict[str, Any]:
        return {"type": "charging.plan", "plan_id": self.plan_id(),
                "vehicle": self.vehicle.to_record(), "soc_permille": round(self.soc * 10),
                "lat_e6": round(self.latitude * 1e6), "lon_e6": round(self.longitude * 1e6),
                "range_m": round(self.range_km * 1000),
                "recommendations": [r.to_record() for r in self.recommendations],
                "excluded": dict(sorted(self.excluded.items())),
                "considered": self.considered}


@dataclass(frozen=True, slots=True)
class _Option:
    loc: Location
    conn: Connector
    distance_km: float
    arrival_wh: float
    energy_wh: float
    metered_wh: float
    charge_s: float
    cost: float | None
    cost_milli: int | None
    currency: str
    renewable: float | None
    co2_g: float
    co2_estimated: bool


def _shares(index: FacilityIndex, idx: np.ndarray, wanted: frozenset[str]
            ) -> tuple[np.ndarray, np.ndarray]:
    """(share of wanted sources, known?) per facility; a bare green flag counts as GENERAL_GREEN."""
    cols = [SOURCES.index(s) for s in sorted(wanted)]
    share = index.mix[idx][:, cols].sum(axis=1)
    known = index.mix_known[idx].copy()
    flag_only = index.green_flag[idx] & ~known
    if "GENERAL_GREEN" in wanted:
        share = np.where(flag_only, 1.0, share)
        known |= flag_only
    return share, known


def _normalise(values: list[float]) -> list[float]:
    lo, hi = min(values), max(values)
    return [0.0 if hi - lo < 1e-12 else (v - lo) / (hi - lo) for v in values]


def _metrics(o: _Option, p: Preferences) -> dict[str, float]:
    return {"cost": math.inf if o.cost is None else o.cost,
            "time": o.distance_km / p.speed_kmh * 3600 + o.charge_s,
            "renewable": -(o.renewable or 0.0),
            "co2": o.co2_g, "distance": o.distance_km}


def _evaluate(loc: Location, vehicle: Vehicle, plugs: frozenset[str], distance_km: float,
              arrival_wh: float, target_wh: float, p: Preferences, when: datetime
              ) -> _Option | None:
    """The best connector of one location for this car, evaluated exactly."""
    best: _Option | None = None
    seen: set[tuple[bool, int, str]] = set()
    for evse in loc.evses:
        if evse.status not in USABLE_STATUSES:
            continue
        for conn in evse.connectors:
            if conn.plug not in plugs:
                continue
            tariff = loc.tariff_for(conn)
            key = (conn.is_dc, conn.max_power_w, tariff.id if tariff else "")
            if key in seen or (conn.is_dc and not vehicle.dc_curve) or (
                    not conn.is_dc and vehicle.ac_max_w <= 0):
                continue
            seen.add(key)
            segs = charge_segments(vehicle, arrival_wh, target_wh, dc=conn.is_dc,
                                   charger_w=conn.max_power_w, charger_phases=conn.phases)
            eff = p.dc_efficiency if conn.is_dc else p.ac_efficiency
            metered = [replace(s, energy_wh=s.energy_wh / eff) for s in segs]
            cost = milli = None
            currency = ""
            if tariff is not None:
                sc = price_session(tariff, metered, when, volts=conn.max_voltage or 230,
                                   phases=conn.phases)
                cost, milli, currency = float(sc.incl_vat), sc.milli, sc.currency
            mix = loc.energy_mix
            share = mix.share_of(p.sources) if mix is not None else None
            metered_wh = (target_wh - arrival_wh) / eff
            if mix is not None and mix.co2_g_per_kwh is not None:
                co2, estimated = mix.co2_g_per_kwh * metered_wh / 1000, False
            else:
                green = mix.share_of(RENEWABLE_SOURCES) if mix is not None else None
                co2 = p.default_co2_g_per_kwh * (1 - (green or 0.0)) * metered_wh / 1000
                estimated = True
            opt = _Option(loc, conn, distance_km, arrival_wh, target_wh - arrival_wh,
                          metered_wh, sum(s.duration_s for s in segs), cost, milli, currency,
                          share, co2, estimated)
            if best is None or _option_key(opt, p) < _option_key(best, p):
                best = opt
    return best


def _option_key(o: _Option, p: Preferences) -> tuple[float, float]:
    """Orders a location's own connectors: by the user's cost weight vs time weight."""
    w_cost, w_time = p.weights.get("cost", 0.0), p.weights.get("time", 0.0)
    cost = math.inf if o.cost is None else o.cost
    return (cost, o.charge_s) if w_cost > w_time else (o.charge_s, cost)


def recommend(index: FacilityIndex, vehicle: Vehicle, *, soc: float, latitude: float,
              longitude: float, when: datetime, prefs: Preferences = Preferences(),
              plugs: frozenset[str] | None = None, explain: bool = False) -> RecommendResult:
    """Rank the facilities of `index` for `vehicle` at `soc` percent, at a position, at `when`
    (the local time used for tariff restrictions)."""
    if not 0 <= soc <= 100 or not math.isfinite(soc):
        raise VehicleError(f"state of charge {soc} is not a percentage")
    if not (-90 <= latitude <= 90 and -180 <= longitude <= 180):
        raise VehicleError(f"position {latitude}, {longitude} is not a latitude, longitude")
    usable_plugs = vehicle.plugs if plugs is None else plugs
    cap = vehicle.capacity_wh
    now_wh = soc / 100 * cap
    spare_wh = now_wh - prefs.min_arrival_soc / 100 * cap
    range_km = max(spare_wh, 0.0) / vehicle.consumption_wh_per_km
    target_wh = prefs.target_soc / 100 * cap
    counts: Counter[str] = Counter()
    details: list[Exclusion] = []
    idx = index.within(latitude, longitude, range_km / prefs.road_factor)
    counts["beyond range"] += len(index) - len(idx)
    dist = haversine_km(latitude, longitude, index.lat[idx], index.lon[idx]) * prefs.road_factor
    plug_cols = [PLUGS.index(q) for q in sorted(usable_plugs) if q in PLUGS]
    ac_cols = [PLUGS.index(q) for q in sorted(usable_plugs & AC_PLUGS)]
    dc_cols = [c for c in plug_cols if c not in ac_cols]
    ac_w = index.ac_usable[idx][:, ac_cols].max(axis=1) if ac_cols and vehicle.ac_max_w \
        else np.zeros(len(idx))
    dc_w = index.dc_usable[idx][:, dc_cols].max(axis=1) if dc_cols and vehicle.dc_curve \
        else np.zeros(len(idx))
    any_plug = index.any_plug[idx][:, plug_cols].any(axis=1) if plug_cols \
        else np.zeros(len(idx), dtype=bool)
    share, known = _shares(index, idx, prefs.sources)
    reason = np.full(len(idx), -1)
    conditions = [dist > range_km, ~index.public[idx], ~index.open_now[idx], ~any_plug,
                  (ac_w <= 0) & (dc_w <= 0),
                  (share < prefs.min_renewable) if prefs.min_renewable > 0
                  else np.zeros(len(idx), dtype=bool)]
    for code, cond in enumerate(conditions):
        reason = np.where((reason < 0) & cond, code, reason)
    for code, name in enumerate(EXCLUSION_REASONS):
        counts[name] += int((reason == code).sum())
    if explain:
        for j in np.flatnonzero(reason >= 0):
            loc = index.locations[idx[j]]
            details.append(Exclusion(loc.id, loc.name, float(dist[j]),
                                     EXCLUSION_REASONS[reason[j]]))
        outside = np.setdiff1d(np.arange(len(index)), idx, assume_unique=True)
        far = haversine_km(latitude, longitude, index.lat[outside], index.lon[outside]) \
            * prefs.road_factor
        for j in np.argsort(far)[:EXPLAIN_LIMIT]:
            loc = index.locations[outside[j]]
            details.append(Exclusion(loc.id, loc.name, float(far[j]), "beyond range"))
        details.sort(key=lambda e: e.distance_km)
        del details[EXPLAIN_LIMIT:]
    ok = np.flatnonzero(reason < 0)
    recs: list[Recommendation] = []
    if len(ok):
        # Rough score on arrays, to pick the short list.
        arrival = now_wh - dist[ok] * vehicle.consumption_wh_per_km
        need = np.maximum(target_wh - arrival, 0.0)
        power = np.maximum(np.minimum(ac_w[ok], vehicle.ac_max_w),
                           np.minimum(dc_w[ok], vehicle.dc_max_w))
        hours = need / np.maximum(power, 1.0) + dist[ok] / prefs.speed_kmh
        cost = (index.flat[idx[ok]] + index.per_kwh[idx[ok]] * need / 1000
                + index.per_hour[idx[ok]] * need / np.maximum(power, 1.0))
        worst = np.nanmax(cost) if np.isfinite(cost).any() else 0.0
        cost = np.where(np.isnan(cost), worst, cost)
        co2 = np.where(np.isnan(index.co2[idx[ok]]),
                       prefs.default_co2_g_per_kwh * (1 - np.where(known[ok], share[ok], 0)),
                       index.co2[idx[ok]])
        rough = np.zeros(len(ok))
        for name, arr in (("cost", cost), ("time", hours), ("renewable", -share[ok]),
                          ("co2", co2), ("distance", dist[ok])):
            w = prefs.weights.get(name, 0.0)
            if w:
                span = float(arr.max() - arr.min())
                rough += w * ((arr - arr.min()) / span if span > 0 else 0.0)
        keep = min(prefs.shortlist, len(ok))
        short = ok[np.argpartition(rough, keep - 1)[:keep]] if keep < len(ok) else ok
        options = []
        for j in short:
            arrival_wh = now_wh - float(dist[j]) * vehicle.consumption_wh_per_km
            if arrival_wh >= target_wh:
                continue
            opt = _evaluate(index.locations[idx[j]], vehicle, usable_plugs, float(dist[j]),
                            arrival_wh, target_wh, prefs, when)
            if opt is not None:
                options.append(opt)
        recs = _rank(options, vehicle, prefs)
    return RecommendResult(vehicle, soc, latitude, longitude, range_km, tuple(recs),
                           dict(counts), tuple(details), len(ok))


def _rank(options: list[_Option], vehicle: Vehicle, p: Preferences) -> list[Recommendation]:
    if not options:
        return []
    metrics = [_metrics(o, p) for o in options]
    norm = {c: _normalise([m[c] for m in metrics]) for c in CRITERIA if c != "cost"}
    known = [i for i, m in enumerate(metrics) if math.isfinite(m["cost"])]
    known_norm = dict(zip(known, _normalise([metrics[i]["cost"] for i in known]), strict=True)) \
        if known else {}
    norm["cost"] = [known_norm.get(i, 1.0) for i in range(len(options))]  # unknown = worst
    total_w = sum(p.weights.values())
    scores = [sum(p.weights.get(c, 0.0) / total_w * norm[c][i] for c in CRITERIA)
              for i in range(len(options))]
    order = sorted(range(len(options)), key=lambda i: (scores[i], options[i].loc.id))
    out = []
    for rank, i in enumerate(order[:p.top], start=1):
        o = options[i]
        out.append(Recommendation(
            rank, o.loc.id, o.loc.name, o.loc.latitude, o.loc.longitude, o.distance_km,
            o.arrival_wh / vehicle.capacity_wh * 100, o.conn.standard, o.conn.is_dc,
            o.conn.max_power_w, round(o.energy_wh), round(o.metered_wh),
            round(o.distance_km / p.speed_kmh * 3600), round(o.charge_s), o.cost_milli,
            o.currency, o.renewable, round(o.co2_g), o.co2_estimated, scores[i],
            _reasons(i, options, metrics, norm, p)))
    return out


def _reasons(i: int, options: list[_Option], metrics: list[dict[str, float]],
             norm: Mapping[str, list[float]], p: Preferences) -> tuple[str, ...]:
    """Say, for each weighted criterion, where this option stands among those evaluated."""
    n = len(options)
    o = options[i]
    labels = {"cost": "cost", "time": "total time", "renewable": "renewable share",
              "co2": "CO2", "distance": "distance"}
    out = []
    for c in sorted(CRITERIA, key=lambda c: -p.weights.get(c, 0.0)):
        w = p.weights.get(c, 0.0)
        if w <= 0:
            continue
        if c == "cost" and o.cost is None:
            out.append(f"cost: not published (weight {w:g}, penalty 1.00)")
            continue
        if c == "renewable" and o.renewable is None:
            out.append(f"renewable share: not published, counted as 0% (weight {w:g}, "
                       f"penalty {norm[c][i]:.2f})")
            continue
        place = 1 + sum(1 for m in metrics if m[c] < metrics[i][c])
        out.append(f"{labels[c]}: #{place} of {n} (weight {w:g}, penalty {norm[c][i]:.2f})")
    if o.co2_estimated:
        out.append("CO2 estimated from the default grid intensity")
    return tuple(out)
