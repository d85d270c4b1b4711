"""The interchange problem: sites (consumers) with generation and load per slot, their prices
and aggregator, vehicles with their batteries and windows, and travel between sites."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field


class InterchangeError(Exception):
    """Bad scenario or plan input; the message names the field and the value."""


@dataclass(frozen=True, slots=True)
class Site:
    """A consumer: `generation_wh`/`load_wh` per slot; prices in milli-units per kWh."""

    id: str
    aggregator: str
    latitude: float
    longitude: float
    generation_wh: tuple[int, ...]
    load_wh: tuple[int, ...]
    import_price: tuple[int, ...]
    export_price: tuple[int, ...]

    def net_wh(self, t: int) -> int:
        """Generation minus load in slot t: positive is a surplus, negative a deficit."""
        return self.generation_wh[t] - self.load_wh[t]


@dataclass(frozen=True, slots=True)
class Vehicle:
    """An EV that may carry energy while it is available, in slots [available_from,
    available_until); it starts at start_site with energy_wh and must be at end_site with
    at least final_wh when the window closes, never below min_wh in between."""

    id: str
    capacity_wh: int
    energy_wh: int
    min_wh: int
    final_wh: int
    charge_w: int
    discharge_w: int
    efficiency: float  # one way: battery gains eff x taken, site gets eff x drawn
    consumption_wh_per_km: int
    start_site: str
    end_site: str
    available_from: int
    available_until: int


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    slot_minutes: int
    n_slots: int
    sites: tuple[Site, ...]
    vehicles: tuple[Vehicle, ...]
    travel_slots: Mapping[tuple[str, str], int]  # whole slots, >= 1 between distinct sites
    travel_km: Mapping[tuple[str, str], float]
    threshold_wh: int = 0  # an imbalance smaller than this in a slot is ignored
    move_cost_milli: int = 0  # per trip (driver time, wear)
    stored_value: int = 0  # milli per kWh of energy left in a battery at the end
    departure_every: int = 1  # vehicles leave a site only at slots that are multiples of it
    start_label: str = ""  # ISO time of slot 0, for display
    site_index: Mapping[str, int] = field(default_factory=dict, compare=False)

    @property
    def slot_h(self) -> float:
        return self.slot_minutes / 60.0

    def site(self, sid: str) -> Site:
        return self.sites[self.site_index[sid]]

    def travel_wh(self, v: Vehicle, a: str, b: str) -> int:
        return 0 if a == b else round(self.travel_km[(a, b)] * v.consumption_wh_per_km)

    def tau(self, a: str, b: str) -> int:
        return 0 if a == b else self.travel_slots[(a, b)]

    def can_depart(self, t: int) -> bool:
        return t % self.departure_every == 0


def haversine_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    a = (math.sin((p2 - p1) / 2) ** 2
         + math.cos(p1) * math.cos(p2) * math.sin(math.radians(lon2 - lon1) / 2) ** 2)
    return 2 * 6371.0088 * math.asin(math.sqrt(min(1.0, a)))


def build_scenario(*, name: str, slot_minutes: int, n_slots: int, sites: Sequence[Site],
                   vehicles: Sequence[Vehicle], road_factor: float = 1.3,
                   speed_kmh: float = 40.0,
                   travel_override: Mapping[tuple[str, str], tuple[float, float]] | None = None,
                   threshold_wh: int = 0, move_cost_milli: int = 0,
                   stored_value: int | None = None, departure_every: int = 1,
                   start_label: str = "") -> Scenario:
    """Check every input and derive travel (km and whole slots) from the site positions;
    `travel_override` maps (from, to) to (minutes, km)."""
    if slot_minutes <= 0 or n_slots <= 0 or departure_every <= 0:
        raise InterchangeError("slot_minutes, slots and departure_every must be positive")
    if road_factor < 1 or speed_kmh <= 0:
        raise InterchangeError("road_factor must be >= 1 and speed_kmh > 0")
    ids = [s.id for s in sites]
    if len(set(ids)) != len(ids) or not ids:
        raise InterchangeError(f"site ids must be present and unique: {ids}")
    for s in sites:
        for what in ("generation_wh", "load_wh", "import_price", "export_price"):
            series = getattr(s, what)
            if len(series) != n_slots:
                raise InterchangeError(f"site {s.id}: {what} has {len(series)} values, "
                                       f"expected {n_slots}")
            if what.endswith("_wh") and min(series) < 0:
                raise InterchangeError(f"site {s.id}: {what} has negative values")
        if any(e > i for e, i in zip(s.export_price, s.import_price, strict=True)):
            raise InterchangeError(f"site {s.id}: export price above import price")
    index = {sid: i for i, sid in enumerate(ids)}
    km: dict[tuple[str, str], float] = {}
    slots: dict[tuple[str, str], int] = {}
    slot_h = slot_minutes / 60.0
    for a in sites:
        for b in sites:
            if a.id == b.id:
                continue
            if travel_override and (a.id, b.id) in travel_override:
                minutes, dist = travel_override[(a.id, b.id)]
            else:
                dist = haversine_km(a.latitude, a.longitude, b.latitude, b.longitude) \
                    * road_factor
                minutes = dist / speed_kmh * 60.0
            if minutes < 0 or dist < 0:
                raise InterchangeError(f"travel {a.id}->{b.id}: negative time or distance")
            km[(a.id, b.id)] = dist
            slots[(a.id, b.id)] = max(1, math.ceil(minutes / 60.0 / slot_h - 1e-9))
    vids = [v.id for v in vehicles]
    if len(set(vids)) != len(vids):
        raise InterchangeError(f"vehicle ids must be unique: {vids}")
    for v in vehicles:
        where = f"vehicle {v.id}"
        if v.start_site not in index or v.end_site not in index:
            raise InterchangeError(f"{where}: unknown start or end site")
        if not 0 <= v.available_from < v.available_until <= n_slots:
            raise InterchangeError(f"{where}: window {v.available_from}..{v.available_until} "
                                   f"outside 0..{n_slots}")
        if not 0 <= v.min_wh <= v.energy_wh <= v.capacity_wh or v.final_wh > v.capacity_wh \
                or v.final_wh < v.min_wh:
            raise InterchangeError(f"{where}: need 0 <= min <= energy <= capacity and "
                                   f"min <= final <= capacity")
        if not 0 < v.efficiency <= 1 or v.charge_w < 0 or v.discharge_w < 0 \
                or v.consumption_wh_per_km <= 0:
            raise InterchangeError(f"{where}: efficiency in (0, 1], powers >= 0, "
                                   f"consumption > 0")
        direct = 0 if v.start_site == v.end_site else round(
            km[(v.start_site, v.end_site)] * v.consumption_wh_per_km)
        need_slots = 0 if v.start_site == v.end_site else slots[(v.start_site, v.end_site)]
        if v.energy_wh - direct < max(v.final_wh, v.min_wh):
            raise InterchangeError(f"{where}: cannot reach {v.end_site} with {v.final_wh} Wh "
                                   f"left on its own energy ({v.energy_wh} Wh, trip {direct} Wh)")
        first_departure = -(-v.available_from // departure_every) * departure_every
        if need_slots and first_departure + need_slots > v.available_until:
            raise InterchangeError(f"{where}: window too short to drive to {v.end_site}")
    if stored_value is None:
        stored_value = round(sum(sum(s.export_price) for s in sites) / (len(sites) * n_slots))
    return Scenario(name, slot_minutes, n_slots, tuple(sites), tuple(vehicles), slots, km,
                    threshold_wh, move_cost_milli, stored_value, departure_every, start_label,
                    index)
