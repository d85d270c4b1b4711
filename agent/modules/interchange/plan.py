"""A plan (where each vehicle is, what it charges and discharges, slot by slot), its checks
and its figures. Both solvers produce this form, so the same code judges both."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from agent.modules.interchange.detect import caps
from agent.modules.interchange.model import InterchangeError, Scenario, Vehicle

TOLERANCE_WH = 1.0  # rounding slack when checking a solver's continuous values


@dataclass(frozen=True, slots=True)
class Stop:
    """The vehicle is at `site` during slots [arrive, depart); energies are site-side Wh."""

    site: str
    arrive: int
    depart: int
    charge: Mapping[int, int] = field(default_factory=dict)  # slot -> Wh taken from the site
    discharge: Mapping[int, int] = field(default_factory=dict)  # slot -> Wh given to it

    def to_record(self) -> dict[str, Any]:
        return {"site": self.site, "arrive": self.arrive, "depart": self.depart,
                "charge": [[t, e] for t, e in sorted(self.charge.items()) if e],
                "discharge": [[t, e] for t, e in sorted(self.discharge.items()) if e]}


@dataclass(frozen=True, slots=True)
class VehiclePlan:
    vehicle: str
    stops: tuple[Stop, ...]

    def to_record(self) -> dict[str, Any]:
        return {"vehicle": self.vehicle, "stops": [s.to_record() for s in self.stops]}


@dataclass(frozen=True, slots=True)
class Figures:
    """What a plan achieves (money in milli-units, energy in Wh)."""

    baseline_cost: int  # all sites, no vehicles
    plan_cost: int  # all sites, with the vehicles' charging and discharging
    move_cost: int
    stored_change_value: int  # value of the vehicles' net energy change (stored_value)
    objective: int  # plan_cost - baseline_cost + move_cost - stored_change_value
    saved: int  # -objective: what the plan is worth
    interchanged_wh: int  # delivered at one aggregator's site, taken at another's
    interchange_matrix: Mapping[str, int]  # "A->B" -> Wh
    deficit_wh: int
    covered_wh: int
    uncovered_wh: int
    moves: int

    def to_record(self) -> dict[str, Any]:
        return {"baseline_cost": self.baseline_cost, "plan_cost": self.plan_cost,
                "move_cost": self.move_cost, "stored_change_value": self.stored_change_value,
                "objective": self.objective, "saved": self.saved,
                "interchanged_wh": self.interchanged_wh,
                "interchange": dict(sorted(self.interchange_matrix.items())),
                "deficit_wh": self.deficit_wh, "covered_wh": self.covered_wh,
                "uncovered_wh": self.uncovered_wh, "moves": self.moves}


@dataclass(frozen=True, slots=True)
class Plan:
    scenario: str
    solver: str
    vehicles: tuple[VehiclePlan, ...]
    figures: Figures
    runtime_s: float
    status: str  # "optimal", "time limit", "heuristic"
    bound: int | None = None  # best proven objective bound (exact solver)
    version: int = 1

    @property
    def plan_id(self) -> str:
        body = repr([v.to_record() for v in self.vehicles]).encode()
        return hashlib.sha256(self.scenario.encode() + b"|" + body).hexdigest()[:16]

    def vehicle_plan(self, vid: str) -> VehiclePlan:
        for vp in self.vehicles:
            if vp.vehicle == vid:
                return vp
        raise InterchangeError(f"no plan for vehicle {vid}")

    def to_record(self) -> dict[str, Any]:
        return {"type": "interchange.plan", "plan_id": self.plan_id, "version": self.version,
                "scenario": self.scenario, "solver": self.solver, "status": self.status,
                "runtime_ms": round(self.runtime_s * 1000), "bound": self.bound,
                "figures": self.figures.to_record(),
                "vehicles": [v.to_record() for v in self.vehicles]}


def energy_trace(scenario: Scenario, v: Vehicle, vp: VehiclePlan) -> list[float]:
    """Battery energy at the start of each slot of the window and at its end."""
    trace = [float(v.energy_wh)]
    e = float(v.energy_wh)
    by_slot: dict[int, float] = {}
    travel_at: dict[int, int] = {}
    for i, stop in enumerate(vp.stops):
        for t, wh in stop.charge.items():
            by_slot[t] = by_slot.get(t, 0.0) + wh * v.efficiency
        for t, wh in stop.discharge.items():
            by_slot[t] = by_slot.get(t, 0.0) - wh / v.efficiency
        if i + 1 < len(vp.stops):
            travel_at[stop.depart] = scenario.travel_wh(v, stop.site, vp.stops[i + 1].site)
    for t in range(v.available_from, v.available_until):
        e += by_slot.get(t, 0.0) - travel_at.get(t, 0)
        trace.append(e)
    return trace


def check(scenario: Scenario, plan: Plan) -> list[str]:
    """Every way the plan breaks the scenario's rules; empty when it is feasible."""
    problems: list[str] = []
    surplus, deficit = caps(scenario)
    taken = [[0] * scenario.n_slots for _ in scenario.sites]
    given = [[0] * scenario.n_slots for _ in scenario.sites]
    planned = {vp.vehicle for vp in plan.vehicles}
    problems += [f"{x.id}: no plan" for x in scenario.vehicles if x.id not in planned]
    for vp in plan.vehicles:
        v = next((x for x in scenario.vehicles if x.id == vp.vehicle), None)
        if v is None:
            problems.append(f"{vp.vehicle}: not in the scenario")
            continue
        stops = vp.stops
        if not stops or stops[0].site != v.start_site or stops[0].arrive != v.available_from:
            problems.append(f"{v.id}: must start at {v.start_site} at slot {v.available_from}")
        if not stops or stops[-1].site != v.end_site or stops[-1].depart != v.available_until:
            problems.append(f"{v.id}: must end at {v.end_site} at slot {v.available_until}")
        for i, s in enumerate(stops):
            if s.depart < s.arrive:
                problems.append(f"{v.id}: stop {i} departs before it arrives")
            if i + 1 < len(stops):
                nxt = stops[i + 1]
                if nxt.site == s.site:
                    problems.append(f"{v.id}: stops {i} and {i + 1} at the same site")
                elif nxt.arrive != s.depart + scenario.tau(s.site, nxt.site):
                    problems.append(f"{v.id}: {s.site}->{nxt.site} leaves {s.depart}, arrives "
                                    f"{nxt.arrive}, travel is {scenario.tau(s.site, nxt.site)}")
                if not scenario.can_depart(s.depart):
                    problems.append(f"{v.id}: departs at slot {s.depart}, not a departure slot")
            si = scenario.site_index[s.site]
            for kind, series, limit, cap in (("charge", s.charge, v.charge_w, taken),
                                             ("discharge", s.discharge, v.discharge_w, given)):
                for t, wh in series.items():
                    if not s.arrive <= t < s.depart:
                        problems.append(f"{v.id}: {kind} at {t} outside its stay at {s.site}")
                    if wh < 0 or wh > limit * scenario.slot_h + TOLERANCE_WH:
                        problems.append(f"{v.id}: {kind} {wh} Wh at {t} beyond "
                                        f"{limit} W x {scenario.slot_minutes} min")
                    cap[si][t] += wh
        trace = energy_trace(scenario, v, vp)
        low, high = min(trace), max(trace)
        if low < v.min_wh - TOLERANCE_WH:
            problems.append(f"{v.id}: battery falls to {low:.0f} Wh, below {v.min_wh}")
        if high > v.capacity_wh + TOLERANCE_WH:
            problems.append(f"{v.id}: battery rises to {high:.0f} Wh, above {v.capacity_wh}")
        if trace[-1] < v.final_wh - TOLERANCE_WH:
            problems.append(f"{v.id}: ends with {trace[-1]:.0f} Wh, needs {v.final_wh}")
    for i, site in enumerate(scenario.sites):
        for t in range(scenario.n_slots):
            if taken[i][t] > surplus[i][t] + TOLERANCE_WH * len(scenario.vehicles):
                problems.append(f"{site.id}: {taken[i][t]} Wh taken at {t}, surplus "
                                f"{surplus[i][t]}")
            if given[i][t] > deficit[i][t] + TOLERANCE_WH * len(scenario.vehicles):
                problems.append(f"{site.id}: {given[i][t]} Wh given at {t}, deficit "
                                f"{deficit[i][t]}")
    return problems


def _site_cost(scenario: Scenario, delta: list[list[float]]) -> float:
    """Grid cost of all sites when vehicles add `delta` Wh of load (negative: supply)."""
    total = 0.0
    for i, s in enumerate(scenario.sites):
        for t in range(scenario.n_slots):
            net_load = s.load_wh[t] - s.generation_wh[t] + delta[i][t]
            price = s.import_price[t] if net_load > 0 else s.export_price[t]
            total += net_load * price / 1000.0
    return total


def figures(scenario: Scenario, vehicles: tuple[VehiclePlan, ...]) -> Figures:
    """Money, energy moved between aggregators and deficit coverage of a set of vehicle plans."""
    delta = [[0.0] * scenario.n_slots for _ in scenario.sites]
    _, deficit = caps(scenario)
    given = [[0.0] * scenario.n_slots for _ in scenario.sites]
    moves = 0
    stored_change = 0.0
    matrix: dict[str, float] = {}
    vmap = {v.id: v for v in scenario.vehicles}
    for vp in vehicles:
        v = vmap[vp.vehicle]
        moves += len(vp.stops) - 1
        trace = energy_trace(scenario, v, vp)
        stored_change += trace[-1] - v.energy_wh
        # Energy keeps the label of the aggregator it was taken from: a discharge gives the
        # most recently charged energy first (what the trip was for), driving uses the
        # vehicle's own energy first.
        stack: list[list[Any]] = [["(vehicle)", float(v.energy_wh)]]
        events: list[tuple[int, int, str, str, float]] = []  # slot, order, kind, site, wh
        for i, stop in enumerate(vp.stops):
            events += [(t, 0, "charge", stop.site, float(w)) for t, w in stop.charge.items()]
            events += [(t, 1, "discharge", stop.site, float(w))
                       for t, w in stop.discharge.items()]
            if i + 1 < len(vp.stops):
                events.append((stop.depart, 2, "travel", stop.site,
                               float(scenario.travel_wh(v, stop.site, vp.stops[i + 1].site))))
        for t, _, kind, sid, wh in sorted(events):
            si = scenario.site_index[sid]
            agg = scenario.sites[si].aggregator
            if kind == "charge":
                delta[si][t] += wh
                stack.append([agg, wh * v.efficiency])
                continue
            need = wh / v.efficiency if kind == "discharge" else wh
            order = range(len(stack) - 1, -1, -1) if kind == "discharge" else range(len(stack))
            for k in order:
                if need <= 0:
                    break
                part = min(stack[k][1], need)
                stack[k][1] -= part
                need -= part
                if kind == "discharge" and stack[k][0] not in ("(vehicle)", agg):
                    key = f"{stack[k][0]}->{agg}"
                    matrix[key] = matrix.get(key, 0.0) + part * v.efficiency
            stack = [item for item in stack if item[1] > 1e-9] or [["(vehicle)", 0.0]]
            if kind == "discharge":
                delta[si][t] -= wh
                given[si][t] += wh
    baseline = _site_cost(scenario, [[0.0] * scenario.n_slots for _ in scenario.sites])
    cost = _site_cost(scenario, delta)
    move_cost = moves * scenario.move_cost_milli
    stored_value = stored_change * scenario.stored_value / 1000.0
    objective = cost - baseline + move_cost - stored_value
    deficit_wh = sum(sum(row) for row in deficit)
    covered = sum(min(given[i][t], deficit[i][t]) for i in range(len(scenario.sites))
                  for t in range(scenario.n_slots))
    return Figures(round(baseline), round(cost), move_cost, round(stored_value),
                   round(objective), -round(objective), round(sum(matrix.values())),
                   {k: round(x) for k, x in matrix.items()}, deficit_wh, round(covered),
                   deficit_wh - round(covered), moves)


def idle_plan(scenario: Scenario, v: Vehicle) -> VehiclePlan:
    """The do-nothing plan: wait at the start site, then drive to the end site at the last
    departure slot that still arrives in time."""
    if v.start_site == v.end_site:
        return VehiclePlan(v.id, (Stop(v.start_site, v.available_from, v.available_until),))
    tau = scenario.tau(v.start_site, v.end_site)
    leave = v.available_until - tau
    leave -= leave % scenario.departure_every
    return VehiclePlan(v.id, (Stop(v.start_site, v.available_from, leave),
                              Stop(v.end_site, leave + tau, v.available_until)))
