"""Local search after the heuristic: re-optimise each vehicle's energy amounts on its route.

The greedy fixes a vehicle's route (stops, arrival and departure slots) trip by trip, and
each trip chooses its amounts as if it were the last. Given the route and what the other
vehicles take and give, the best amounts are a small linear programme: charge c_t and give
d_t in the slots the vehicle stays at a site, bounded by its power and by the site's surplus
and deficit left, the battery within [min, capacity] after every slot and at least `final`
at the end, maximising sum d_t (import price - stored value / efficiency) + c_t (stored value
x efficiency - export price): the plan objective's terms for this vehicle. Vehicles are
re-optimised one after the other against the others' current flows, `rounds` times; amounts
are rounded to whole Wh and a vehicle whose rounded plan leaves the battery bounds keeps its
old amounts. Solved by HiGHS (scipy), deterministic.

Then one route move: a departure slot is moved earlier or later (1, 2 or 4 departure steps)
and the amounts re-optimised on the new route; a move is kept when the vehicle's value grows
(first improvement, vehicle by vehicle), within a budget of `budget` programmes in all.
"""

from __future__ import annotations

from agent.modules.interchange.detect import caps
from agent.modules.interchange.model import Scenario, Vehicle
from agent.modules.interchange.plan import TOLERANCE_WH, Stop, VehiclePlan, energy_trace

MARGIN_WH = 1.0  # kept from each battery bound, so that rounding stays inside


def _flows(sc: Scenario, vp: VehiclePlan, surplus: list[list[float]],
           deficit: list[list[float]], sign: int) -> None:
    for s in vp.stops:
        si = sc.site_index[s.site]
        for t, wh in s.charge.items():
            surplus[si][t] -= sign * wh
        for t, wh in s.discharge.items():
            deficit[si][t] -= sign * wh


def _left(sc: Scenario, vehicles: tuple[VehiclePlan, ...]
          ) -> tuple[list[list[float]], list[list[float]]]:
    """Surplus and deficit per site and slot that the vehicles' flows leave."""
    surplus_i, deficit_i = caps(sc)
    surplus = [[float(x) for x in row] for row in surplus_i]
    deficit = [[float(x) for x in row] for row in deficit_i]
    for vp in vehicles:
        _flows(sc, vp, surplus, deficit, 1)
    return surplus, deficit


def refine_vehicle(sc: Scenario, v: Vehicle, vp: VehiclePlan, surplus: list[list[float]],
                   deficit: list[list[float]]) -> VehiclePlan | None:
    """The best amounts on `vp`'s route against the surplus and deficit left by the others;
    None when there is nothing to choose or the programme has no solution."""
    import numpy as np
    from scipy.optimize import linprog

    first, n = v.available_from, v.available_until - v.available_from
    eta, sv, dt = v.efficiency, sc.stored_value / 1000.0, sc.slot_h
    travel = np.zeros(n)
    cols: list[tuple[bool, int, int, float, float]] = []  # charge?, stop, slot, gain, bound
    for i, s in enumerate(vp.stops):
        si = sc.site_index[s.site]
        site = sc.sites[si]
        if i + 1 < len(vp.stops):
            travel[s.depart - first] += sc.travel_wh(v, s.site, vp.stops[i + 1].site)
        for t in range(s.arrive, s.depart):
            up = min(v.charge_w * dt, surplus[si][t])
            if up > 0:
                cols.append((True, i, t, sv * eta - site.export_price[t] / 1000.0, up))
            down = min(v.discharge_w * dt, deficit[si][t])
            gain = site.import_price[t] / 1000.0 - sv / eta
            if down > 0 and gain > 0:
                cols.append((False, i, t, gain, down))
    if not cols:
        return None
    effect = np.array([eta if is_charge else -1.0 / eta for is_charge, *_ in cols])
    slot = np.array([t - first for _, _, t, _, _ in cols])
    # Battery after slot k = energy now + flows of slots <= k - travel so far.
    cumulative = (slot[None, :] <= np.arange(n)[:, None]) * effect[None, :]
    base = v.energy_wh - np.cumsum(travel)
    a_ub = np.vstack([-cumulative, cumulative, -cumulative[-1:]])
    b_ub = np.concatenate([base - v.min_wh - MARGIN_WH, v.capacity_wh - MARGIN_WH - base,
                           [base[-1] - v.final_wh - MARGIN_WH]])
    res = linprog(-np.array([c[3] for c in cols]), A_ub=a_ub, b_ub=b_ub,
                  bounds=[(0.0, c[4]) for c in cols], method="highs")
    if res.status != 0:
        return None
    charge: list[dict[int, int]] = [{} for _ in vp.stops]
    give: list[dict[int, int]] = [{} for _ in vp.stops]
    for (is_charge, i, t, _, bound), x in zip(cols, res.x, strict=True):
        wh = int(min(round(float(x)), bound))
        if wh > 0:
            (charge if is_charge else give)[i][t] = wh
    return VehiclePlan(v.id, tuple(Stop(s.site, s.arrive, s.depart, charge[i], give[i])
                                   for i, s in enumerate(vp.stops)))


def refine(sc: Scenario, vehicles: tuple[VehiclePlan, ...], rounds: int = 2,
           exclude: frozenset[str] = frozenset()) -> tuple[VehiclePlan, ...]:
    """Every vehicle's amounts re-optimised on its route, `rounds` passes over the fleet;
    vehicles in `exclude` are left as they are."""
    surplus, deficit = _left(sc, vehicles)
    plans = {vp.vehicle: vp for vp in vehicles}
    vmap = {v.id: v for v in sc.vehicles}
    for _ in range(rounds):
        for vid, old in plans.items():
            if vid in exclude:
                continue
            v = vmap[vid]
            _flows(sc, old, surplus, deficit, -1)
            new = refine_vehicle(sc, v, old, surplus, deficit)
            plans[vid] = new if new is not None and _within(v, sc, new) else old
            _flows(sc, plans[vid], surplus, deficit, 1)
    return tuple(plans[vp.vehicle] for vp in vehicles)


def _value(sc: Scenario, v: Vehicle, vp: VehiclePlan) -> float:
    """The vehicle's share of the objective that its amounts decide (route fixed)."""
    sv = sc.stored_value / 1000.0
    total = 0.0
    for s in vp.stops:
        site = sc.sites[sc.site_index[s.site]]
        total += sum(wh * (sv * v.efficiency - site.export_price[t] / 1000.0)
                     for t, wh in s.charge.items())
        total += sum(wh * (site.import_price[t] / 1000.0 - sv / v.efficiency)
                     for t, wh in s.discharge.items())
    return total


def _within(v: Vehicle, sc: Scenario, vp: VehiclePlan) -> bool:
    trace = energy_trace(sc, v, vp)
    return (min(trace) >= v.min_wh - TOLERANCE_WH and trace[-1] >= v.final_wh - TOLERANCE_WH
            and max(trace) <= v.capacity_wh + TOLERANCE_WH)


SHIFTS = (-4, -2, -1, 1, 2, 4)  # departure steps tried


def shift_departures(sc: Scenario, vehicles: tuple[VehiclePlan, ...], budget: int,
                     exclude: frozenset[str] = frozenset()) -> tuple[VehiclePlan, ...]:
    """Move departure slots where that lets the amounts earn more (at most `budget` LPs)."""
    surplus, deficit = _left(sc, vehicles)
    plans = {vp.vehicle: vp for vp in vehicles}
    vmap = {v.id: v for v in sc.vehicles}
    for vid in plans:
        if vid in exclude or budget <= 0:
            continue
        v, cur = vmap[vid], plans[vid]
        _flows(sc, cur, surplus, deficit, -1)
        best = _value(sc, v, cur)
        moved = True
        while moved and budget > 0:
            moved = False
            for i, (a, b) in enumerate(zip(cur.stops, cur.stops[1:], strict=False)):
                tau = b.arrive - a.depart
                for step in SHIFTS:
                    leave = a.depart + step * sc.departure_every
                    if leave < a.arrive or leave + tau > b.depart or budget <= 0:
                        continue
                    budget -= 1
                    route = VehiclePlan(vid, (*cur.stops[:i], Stop(a.site, a.arrive, leave),
                                              Stop(b.site, leave + tau, b.depart),
                                              *cur.stops[i + 2:]))
                    new = refine_vehicle(sc, v, route, surplus, deficit)
                    if new is not None and _within(v, sc, new) and _value(sc, v, new) > best:
                        best, cur, moved = _value(sc, v, new), new, True
                        break
                if moved:
                    break
        plans[vid] = cur
        _flows(sc, cur, surplus, deficit, 1)
    return tuple(plans[vp.vehicle] for vp in vehicles)
