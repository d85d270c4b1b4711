"""The exact planner: a mixed-integer model on a time-space network, solved by HiGHS
(through scipy.optimize.milp). A run stopped by its time limit keeps the heuristic's plan
when that is better than the best it found (status says so), and reports the proven bound.

Per vehicle, node (site, slot) is "at this site at the start of this slot"; a binary stay arc
keeps it there for the slot (it may then charge or discharge), a binary travel arc leaves at a
departure slot and arrives `tau` slots later, having used the trip's energy. Flow conservation
makes each vehicle one path from its start node to its end node. Sites with no surplus and no
deficit in the vehicle's window are left out of its network (nothing to do there) except its
start and end. Charging is bounded by the site's surplus and discharging by its deficit, summed
over vehicles. The objective is the sites' grid cost plus trip costs, minus the value of the
energy the vehicles end with; it is linear because vehicles only shrink imbalances.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp
from scipy.sparse import coo_array

from agent.modules.interchange.detect import caps
from agent.modules.interchange.heuristic import solve_heuristic
from agent.modules.interchange.model import InterchangeError, Scenario
from agent.modules.interchange.plan import Plan, Stop, VehiclePlan, figures, idle_plan


@dataclass(frozen=True, slots=True, kw_only=True)
class ExactOptions:
    time_limit_s: float = 60.0
    mip_rel_gap: float = 1e-4
    keep_heuristic: bool = True  # at the time limit, keep the heuristic's plan if better


class _Builder:
    def __init__(self) -> None:
        self.cost: list[float] = []
        self.lb: list[float] = []
        self.ub: list[float] = []
        self.integer: list[int] = []
        self.rows: list[int] = []
        self.cols: list[int] = []
        self.vals: list[float] = []
        self.rlb: list[float] = []
        self.rub: list[float] = []

    def var(self, cost: float, lb: float, ub: float, integer: bool) -> int:
        self.cost.append(cost)
        self.lb.append(lb)
        self.ub.append(ub)
        self.integer.append(1 if integer else 0)
        return len(self.cost) - 1

    def row(self, terms: list[tuple[int, float]], lb: float, ub: float) -> None:
        r = len(self.rlb)
        for c, v in terms:
            self.rows.append(r)
            self.cols.append(c)
            self.vals.append(v)
        self.rlb.append(lb)
        self.rub.append(ub)


def solve_exact(scenario: Scenario, options: ExactOptions | None = None, *,
                exclude: frozenset[str] = frozenset()) -> Plan:
    """The optimal plan (or the best found within the time limit, with its proven bound);
    vehicles in `exclude` stay idle."""
    opts = options or ExactOptions()
    started = time.perf_counter()
    surplus, deficit = caps(scenario)
    b = _Builder()
    dt = scenario.slot_h
    site_ch: dict[tuple[int, int], list[int]] = {}
    site_dis: dict[tuple[int, int], list[int]] = {}
    layouts = []
    for v in scenario.vehicles:
        if v.id in exclude:
            continue
        a, z = v.available_from, v.available_until
        rel = [i for i, s in enumerate(scenario.sites)
               if any(surplus[i][a:z]) or any(deficit[i][a:z])
               or s.id in (v.start_site, v.end_site)]
        ids = [scenario.sites[i].id for i in rel]
        x = {(i, t): b.var(0.0, 0, 1, True) for i in rel for t in range(a, z)}
        y: dict[tuple[int, int, int], int] = {}
        for t in range(a, z):
            if not scenario.can_depart(t):
                continue
            for i, si in zip(rel, ids, strict=True):
                for j, sj in zip(rel, ids, strict=True):
                    if i != j and t + scenario.tau(si, sj) <= z:
                        y[(i, j, t)] = b.var(float(scenario.move_cost_milli), 0, 1, True)
        y_at: dict[int, list[tuple[int, int, int]]] = {}
        for (i, j, t), var in y.items():
            y_at.setdefault(t, []).append((i, j, var))
        ch: dict[tuple[int, int], int] = {}
        dis: dict[tuple[int, int], int] = {}
        for i in rel:
            site = scenario.sites[i]
            for t in range(a, z):
                if surplus[i][t] > 0 and v.charge_w > 0:
                    ub = min(v.charge_w * dt, surplus[i][t])
                    ch[(i, t)] = b.var(site.export_price[t] / 1000.0, 0, ub, False)
                    site_ch.setdefault((i, t), []).append(ch[(i, t)])
                    b.row([(ch[(i, t)], 1.0), (x[(i, t)], -ub)], -np.inf, 0)
                if deficit[i][t] > 0 and v.discharge_w > 0:
                    ub = min(v.discharge_w * dt, deficit[i][t])
                    dis[(i, t)] = b.var(-site.import_price[t] / 1000.0, 0, ub, False)
                    site_dis.setdefault((i, t), []).append(dis[(i, t)])
                    b.row([(dis[(i, t)], 1.0), (x[(i, t)], -ub)], -np.inf, 0)
        e = {t: b.var(0.0, v.min_wh, v.capacity_wh, False) for t in range(a, z + 1)}
        b.lb[e[a]] = b.ub[e[a]] = float(v.energy_wh)
        b.lb[e[z]] = float(max(v.final_wh, v.min_wh))
        b.cost[e[z]] -= scenario.stored_value / 1000.0
        start_i = scenario.site_index[v.start_site]
        end_i = scenario.site_index[v.end_site]
        for t in range(a, z + 1):  # flow conservation at (site, t)
            for i, si in zip(rel, ids, strict=True):
                terms: list[tuple[int, float]] = []
                if t > a:
                    terms.append((x[(i, t - 1)], 1.0))
                for j, sj in zip(rel, ids, strict=True):
                    if i != j:
                        dep = t - scenario.tau(sj, si)
                        if (j, i, dep) in y:
                            terms.append((y[(j, i, dep)], 1.0))
                        if (i, j, t) in y:
                            terms.append((y[(i, j, t)], -1.0))
                if t < z:
                    terms.append((x[(i, t)], -1.0))
                rhs = (1.0 if t == z and i == end_i else 0.0) - (
                    1.0 if t == a and i == start_i else 0.0)
                b.row(terms, rhs, rhs)
        for t in range(a, z):  # battery energy
            terms = [(e[t + 1], 1.0), (e[t], -1.0)]
            terms += [(ch[(i, t)], -v.efficiency) for i in rel if (i, t) in ch]
            terms += [(dis[(i, t)], 1.0 / v.efficiency) for i in rel if (i, t) in dis]
            for i, j, var in y_at.get(t, ()):
                terms.append((var, float(scenario.travel_wh(
                    v, scenario.sites[i].id, scenario.sites[j].id))))
            b.row(terms, 0.0, 0.0)
        layouts.append((v, rel, x, y, ch, dis))
    for (i, t), cols in site_ch.items():
        if len(cols) > 1:
            b.row([(c, 1.0) for c in cols], -np.inf, surplus[i][t])
    for (i, t), cols in site_dis.items():
        if len(cols) > 1:
            b.row([(c, 1.0) for c in cols], -np.inf, deficit[i][t])
    n = len(b.cost)
    if n == 0:
        return Plan(scenario.name, "exact", tuple(idle_plan(scenario, v)
                                                  for v in scenario.vehicles),
                    figures(scenario, tuple(idle_plan(scenario, v) for v in scenario.vehicles)),
                    time.perf_counter() - started, "optimal", 0)
    matrix = coo_array((b.vals, (b.rows, b.cols)), shape=(len(b.rlb), n)).tocsr()
    res = milp(np.array(b.cost), integrality=np.array(b.integer),
               bounds=Bounds(np.array(b.lb), np.array(b.ub)),
               constraints=LinearConstraint(matrix, np.array(b.rlb), np.array(b.rub)),
               options={"time_limit": opts.time_limit_s, "mip_rel_gap": opts.mip_rel_gap,
                        "disp": False})
    raw_bound = getattr(res, "mip_dual_bound", None)
    base_terms = -scenario.stored_value / 1000.0 * sum(v.energy_wh for v in scenario.vehicles)
    bound = None if raw_bound is None or not np.isfinite(raw_bound) \
        else round(raw_bound - base_terms)
    fallback = solve_heuristic(scenario, exclude=exclude) if opts.keep_heuristic \
        and res.status != 0 else None
    if res.x is None:
        if fallback is None:
            raise InterchangeError(f"the exact model found no plan: {res.message}")
        return replace(fallback, solver="exact", status="time limit, heuristic plan kept",
                       runtime_s=time.perf_counter() - started, bound=bound)
    plans = {v.id: idle_plan(scenario, v) for v in scenario.vehicles}
    for v, _rel, x, y, ch, dis in layouts:
        plans[v.id] = _extract(scenario, v.id, v.start_site, v.available_from,
                               v.available_until, res.x, x, y, ch, dis)
    vehicles = tuple(plans[v.id] for v in scenario.vehicles)
    found = figures(scenario, vehicles)
    if fallback is not None and fallback.figures.objective < found.objective:
        return replace(fallback, solver="exact", status="time limit, heuristic plan kept",
                       runtime_s=time.perf_counter() - started, bound=bound)
    return Plan(scenario.name, "exact", vehicles, found, time.perf_counter() - started,
                "optimal" if res.status == 0 else "time limit", bound)


def _extract(scenario: Scenario, vid: str, start: str, a: int, z: int, sol: np.ndarray,
             x: dict[tuple[int, int], int], y: dict[tuple[int, int, int], int],
             ch: dict[tuple[int, int], int], dis: dict[tuple[int, int], int]) -> VehiclePlan:
    stops: list[Stop] = []
    i = scenario.site_index[start]
    t = a
    arrive = a
    charge: dict[int, int] = {}
    discharge: dict[int, int] = {}
    while t < z:
        if (i, t) in x and sol[x[(i, t)]] > 0.5:
            if (i, t) in ch and sol[ch[(i, t)]] > 0.5:
                charge[t] = round(sol[ch[(i, t)]])
            if (i, t) in dis and sol[dis[(i, t)]] > 0.5:
                discharge[t] = round(sol[dis[(i, t)]])
            t += 1
            continue
        nxt = next((j for (ii, j, tt), var in y.items() if ii == i and tt == t
                    and sol[var] > 0.5), None)
        if nxt is None:
            raise InterchangeError(f"vehicle {vid}: broken path in the solution at slot {t}")
        stops.append(Stop(scenario.sites[i].id, arrive, t, charge, discharge))
        charge, discharge = {}, {}
        t += scenario.tau(scenario.sites[i].id, scenario.sites[nxt].id)
        i, arrive = nxt, t
    stops.append(Stop(scenario.sites[i].id, arrive, z, charge, discharge))
    return VehiclePlan(vid, tuple(stops))
