"""The fast planner for devices: greedy trips, chosen lazily, then local re-planning.

A trip is one of: charge at a surplus site A in its cheapest slots with surplus left, drive to
a deficit site B and give in its dearest slots with deficit left (optionally first giving
where the vehicle is); or give at B first and refill at A; or only give at B (until it must
leave, or until an earlier cut so that another trip can follow). The vehicle always keeps what
it needs to reach its end site with its final energy. A trip's value is the grid cost it
saves, minus trip costs, plus the value of the energy it adds to the battery: the exact
model's objective, term for term, so values add up to the plan's objective. Each vehicle's
best trip sits in a max-heap; the top one is re-valued against what others have taken since
(values only fall as surpluses and deficits are used) and accepted when it still beats the
next. Then pairs of vehicles that use a common site are re-planned the other way round, and
each vehicle is re-planned alone with a few different first trips; a change is kept only when
it gains. Only the most promising sites (plus the vehicle's own and end sites) are tried as
A and B, which bounds the work per vehicle.
"""

from __future__ import annotations

import heapq
import itertools
import time
from dataclasses import dataclass, field, replace

from agent.modules.interchange.detect import caps
from agent.modules.interchange.model import Scenario, Vehicle
from agent.modules.interchange.plan import Plan, Stop, VehiclePlan, figures, idle_plan
from agent.modules.interchange.refine import refine, shift_departures


@dataclass(frozen=True, slots=True, kw_only=True)
class HeuristicOptions:
    charge_sites: int = 4  # surplus sites tried as A per trip
    discharge_sites: int = 3  # deficit sites tried as B
    split_choices: int = 4  # departure times from A tried
    pre_choices: int = 3  # departure times tried when giving where it is before leaving
    cut_choices: int = 4  # end times tried for a trip that only gives
    max_trips: int = 200
    improve_rounds: int = 1  # passes of pairwise re-planning after the greedy
    lookahead: int = 1  # first trips tried when one vehicle is re-planned on its own (1: off)
    all_pairs_up_to: int = 6  # fleets this small re-plan every pair, larger ones only pairs
    # that share a site
    refine_rounds: int = 2  # passes re-optimising each vehicle's amounts on its route (LP)
    shift_budget: int = 20  # LPs tried moving departure slots after that (0: off)


@dataclass(slots=True)
class _State:
    site: str
    free: int
    energy: float
    stops: list[Stop] = field(default_factory=list)
    arrive: int = 0
    charge: dict[int, int] = field(default_factory=dict)
    discharge: dict[int, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class _Trip:
    value: float
    a: str | None
    b: str
    leave_a: int
    charge: dict[int, int]
    discharge: dict[int, int]
    leave_loc: int
    pre: dict[int, int] = field(default_factory=dict)  # given where it is, before leaving
    give_first: bool = False  # B then A (give own energy, refill later), else A then B
    cut: bool = False  # gives only until a chosen slot, not until it must leave
    outlook: float = 0.0  # estimated value of the energy a cut trip keeps for later


class _Planner:
    def __init__(self, sc: Scenario, opts: HeuristicOptions) -> None:
        self.sc = sc
        self.opts = opts
        surplus, deficit = caps(sc)
        self.surplus = [list(r) for r in surplus]
        self.deficit = [list(r) for r in deficit]
        self.dt = sc.slot_h
        self.sv = sc.stored_value / 1000.0
        n = sc.n_slots
        # Slots of each site, dearest import first and cheapest export first (fixed orders).
        self.by_import = [sorted(range(n), key=lambda t: (-site.import_price[t], t))
                          for site in sc.sites]
        self.by_export = [sorted(range(n), key=lambda t: (site.export_price[t], t))
                          for site in sc.sites]
        self._worth: dict[tuple[int, float], list[int]] = {}

    def worth_giving(self, bi: int, v: Vehicle) -> list[int]:
        """Slots of site bi, dearest first, whose import price beats keeping the energy."""
        key = (bi, v.efficiency)
        slots = self._worth.get(key)
        if slots is None:
            floor = self.sv / v.efficiency * 1000.0
            price = self.sc.sites[bi].import_price
            slots = self._worth[key] = [t for t in self.by_import[bi] if price[t] > floor]
        return slots

    def next_departure(self, t: int) -> int:
        k = self.sc.departure_every
        return -(-t // k) * k

    def latest_departure(self, site: str, v: Vehicle) -> int:
        """Last slot at which the vehicle can leave `site` and still reach its end in time."""
        if site == v.end_site:
            return v.available_until
        t = v.available_until - self.sc.tau(site, v.end_site)
        return t - t % self.sc.departure_every

    def best_trip(self, v: Vehicle, st: _State) -> _Trip | None:
        top = self.top_trips(v, st, 1)
        return top[0] if top else None

    def top_trips(self, v: Vehicle, st: _State, k: int, with_cuts: bool = False
                  ) -> list[_Trip]:
        """The k most valuable trips, at most one per (A, B); with_cuts adds the k best
        give-only trips that end early (to leave time for another trip)."""
        sc = self.sc
        t0 = st.free
        if t0 >= v.available_until:
            return []
        b_scores = []
        for i, s in enumerate(sc.sites):
            left = sum(d * s.import_price[t] for t, d in enumerate(self.deficit[i]) if t >= t0)
            if left > 0:
                b_scores.append((-left, s.id))
        a_scores = []
        for i, s in enumerate(sc.sites):
            left = sum(self.surplus[i][t0:])
            if left > 0:
                a_scores.append((-left, s.id))
        # The best-placed sites, and always where the vehicle is and where it ends.
        own = [x for x in dict.fromkeys((st.site, v.end_site))]
        has_b = {sid for _, sid in b_scores}
        has_a = {sid for _, sid in a_scores}
        bs = list(dict.fromkeys([sid for _, sid in sorted(b_scores)[: self.opts.discharge_sites]]
                                + [x for x in own if x in has_b]))
        top_a = [sid for _, sid in sorted(a_scores)[: self.opts.charge_sites]]
        as_: list[str | None] = [None, *dict.fromkeys(top_a + [x for x in own if x in has_a])]
        best: list[_Trip] = []
        cut: list[_Trip] = []
        for a in as_:
            for b in bs:
                found = self.trips(v, st, a, b)
                if a is not None:
                    post = self.give_then_refill(v, st, b, a)
                    if post is not None:
                        found.append(post)
                if found:
                    best.append(max(found, key=lambda trip: trip.value))
                    if a is None:  # the best trip that leaves time for another one
                        early = [x for x in found if x.cut]
                        if early:
                            cut.append(max(early, key=lambda trip: trip.value + trip.outlook))
        best.sort(key=lambda trip: -trip.value)
        cut.sort(key=lambda trip: -(trip.value + trip.outlook))
        return best[:k] + (cut[:k] if with_cuts else [])

    def give_then_refill(self, v: Vehicle, st: _State, b: str, a: str) -> _Trip | None:
        """Go to B, give down to what it needs to reach A, then refill at A from its surplus
        to what it needs at the end: own energy now, surplus energy later."""
        sc = self.sc
        leave_loc = st.free if b == st.site else self.next_departure(st.free)
        arrive_b = leave_loc + sc.tau(st.site, b)
        e = st.energy - sc.travel_wh(v, st.site, b)
        last_b = self.latest_departure(b, v) if a == b else None
        ai, bi = sc.site_index[a], sc.site_index[b]
        if e < v.min_wh or arrive_b >= v.available_until:
            return None
        need_end = max(v.min_wh, v.final_wh + sc.travel_wh(v, a, v.end_site))
        best: _Trip | None = None
        horizon = self.latest_departure(a, v)
        cands = [t for t in range(arrive_b + 1, v.available_until)
                 if t % sc.departure_every == 0 or a == b]
        k = self.opts.split_choices
        if len(cands) > k:
            cands = [cands[round(j * (len(cands) - 1) / (k - 1))] for j in range(k)]
        p_ch = v.charge_w * self.dt
        row_a = self.surplus[ai]
        room_from = [0.0] * (max(horizon, 0) + 1)  # what A can still give from slot t on
        for t in range(horizon - 1, arrive_b, -1):
            room_from[t] = room_from[t + 1] + (p_ch if row_a[t] > p_ch else row_a[t])
        for leave_b in cands:
            if last_b is not None and leave_b > last_b:
                continue
            arrive_a = leave_b + sc.tau(b, a)
            if arrive_a >= horizon:
                continue
            room = room_from[arrive_a] * v.efficiency
            floor = max(v.min_wh + sc.travel_wh(v, b, a), need_end + sc.travel_wh(v, b, a)
                        - room)
            price = sc.sites[bi].import_price
            budget = (e - floor) * v.efficiency
            discharge: dict[int, int] = {}
            value = 0.0
            for t in sorted(range(arrive_b, leave_b), key=lambda t: (-price[t], t)):
                if budget <= 0:
                    break
                if self.deficit[bi][t] <= 0 or price[t] / 1000.0 <= self.sv / v.efficiency:
                    continue
                give = int(min(v.discharge_w * self.dt, self.deficit[bi][t], budget))
                if give > 0:
                    discharge[t] = give
                    budget -= give
                    value += give * price[t] / 1000.0
            if not discharge:
                continue
            e_a = e - sum(discharge.values()) / v.efficiency - sc.travel_wh(v, b, a)
            want = max(need_end - e_a, 0.0) / v.efficiency
            charge: dict[int, int] = {}
            exp = sc.sites[ai].export_price
            for t in sorted(range(arrive_a, horizon), key=lambda t: (exp[t], t)):
                if want <= 0:
                    break
                take = int(min(v.charge_w * self.dt, self.surplus[ai][t], want + 1))
                if take > 0:
                    charge[t] = take
                    want -= take
                    value -= take * exp[t] / 1000.0
            if want > 0:
                continue
            travel = (sc.travel_wh(v, st.site, b) + sc.travel_wh(v, b, a)
                      + sc.travel_wh(v, a, v.end_site) - sc.travel_wh(v, st.site, v.end_site))
            legs = [st.site, b, a, v.end_site]
            moves = sum(1 for x, y in itertools.pairwise(legs) if x != y)
            moves -= 1 if st.site != v.end_site else 0
            stored = (sum(charge.values()) * v.efficiency
                      - sum(discharge.values()) / v.efficiency - travel)
            value += self.sv * stored - moves * sc.move_cost_milli
            if value > 0 and (best is None or value > best.value):
                best = _Trip(value, a, b, leave_b, charge, discharge, leave_loc,
                             give_first=True)
        return best

    def trips(self, v: Vehicle, st: _State, a: str | None, b: str) -> list[_Trip]:
        sc = self.sc
        loc = st.site
        first = a if a is not None else b
        leaves = [st.free if first == loc else self.next_departure(st.free)]
        if a is not None and first != loc:
            # Also: give some of its own energy where it is, then go and refill at A.
            li = sc.site_index[loc]
            row = self.deficit[li]
            last = self.latest_departure(loc, v)
            every = sc.departure_every
            ends = sorted({self.next_departure(t + 1) for t in range(st.free, last)
                           if row[t] > 0 and (t + 1 >= last or row[t + 1] == 0
                                              or (t + 1) % every == 0)})
            ends = [t for t in ends if leaves[0] < t < last]
            k = self.opts.pre_choices
            if len(ends) > k:
                ends = [ends[round(j * (len(ends) - 1) / (k - 1))] for j in range(k)]
            leaves += ends
        out = []
        for leave_loc in leaves:
            pre: dict[int, int] = {}
            energy = st.energy
            if leave_loc > leaves[0]:
                pre, energy = self.pre_discharge(v, st, leave_loc,
                                                 v.min_wh + sc.travel_wh(v, loc, first))
                if not pre:
                    continue
            out += self.trips_from(v, st, a, b, leave_loc, energy, pre)
        return out

    def pre_discharge(self, v: Vehicle, st: _State, until: int, keep: float
                      ) -> tuple[dict[int, int], float]:
        li = self.sc.site_index[st.site]
        price = self.sc.sites[li].import_price
        budget = (st.energy - keep) * v.efficiency
        given: dict[int, int] = {}
        for t in sorted(range(st.free, until), key=lambda t: (-price[t], t)):
            if budget <= 0:
                break
            give = int(min(v.discharge_w * self.dt, self.deficit[li][t], budget))
            if give > 0:
                given[t] = give
                budget -= give
        return given, st.energy - sum(given.values()) / v.efficiency

    def trips_from(self, v: Vehicle, st: _State, a: str | None, b: str, leave_loc: int,
                   energy: float, pre: dict[int, int]) -> list[_Trip]:
        sc = self.sc
        loc = st.site
        first = a if a is not None else b
        arrive_first = leave_loc + sc.tau(loc, first)
        if arrive_first >= v.available_until:
            return []
        e = energy - sc.travel_wh(v, loc, first)
        if e < v.min_wh:
            return []
        splits: list[int] = []
        if a is None:
            splits = [arrive_first]
        else:
            ai = sc.site_index[a]
            row = self.surplus[ai]
            ends = [t + 1 for t in range(arrive_first, v.available_until)
                    if row[t] > 0 and (t + 1 >= v.available_until or row[t + 1] == 0)]
            every = sc.departure_every
            inside = [t for t in range(arrive_first + 1, v.available_until)
                      if (a == b or t % every == 0) and row[t - 1] > 0]
            for t_end in sorted(set(ends) | set(inside)):
                leave = t_end if a == b else self.next_departure(t_end)
                if leave + sc.tau(a, b) < v.available_until and leave not in splits:
                    splits.append(leave)
            if len(splits) > self.opts.split_choices:
                k = self.opts.split_choices
                splits = [splits[round(j * (len(splits) - 1) / (k - 1))] for j in range(k)]
        out = []
        for leave_a in splits:
            cuts: list[int | None] = [None]
            if a is None:  # also: give only until a cut, to be free for a later trip
                arrive_b = arrive_first
                last_b = self.latest_departure(b, v)
                grid = [t for t in range(arrive_b + 1, last_b)
                        if t % sc.departure_every == 0]
                k = self.opts.cut_choices
                if len(grid) > k:
                    grid = [grid[round(j * (len(grid) - 1) / (k - 1))] for j in range(k)]
                cuts += grid
            for cut in cuts:
                trip = self.evaluate(v, st, a, b, leave_loc, arrive_first, leave_a, e, cut)
                if trip is None:
                    continue
                if pre:
                    li = sc.site_index[loc]
                    gain = sum(wh * sc.sites[li].import_price[t] / 1000.0
                               for t, wh in pre.items())
                    lost = self.sv * sum(pre.values()) / v.efficiency
                    trip = replace(trip, value=trip.value + gain - lost, pre=pre)
                out.append(trip)
        return out

    def evaluate(self, v: Vehicle, st: _State, a: str | None, b: str, leave_loc: int,
                 arrive_first: int, leave_a: int, e: float, cut: int | None = None
                 ) -> _Trip | None:
        sc = self.sc
        bi = sc.site_index[b]
        site_b = sc.sites[bi]
        arrive_b = arrive_first if a is None else leave_a + sc.tau(a, b)
        last_b = self.latest_departure(b, v) if cut is None else cut
        reserve = max(v.min_wh, v.final_wh + sc.travel_wh(v, b, v.end_site))
        p_dis = v.discharge_w * self.dt
        gain = site_b.import_price
        floor = self.sv / v.efficiency * 1000.0
        row_b = self.deficit[bi]
        slots_b = [t for t in self.worth_giving(bi, v)
                   if arrive_b <= t < last_b and row_b[t] > 0]
        charge: dict[int, int] = {}
        value = 0.0
        travel = sc.travel_wh(v, st.site, a if a is not None else b)
        if a is not None:
            potential = sum(p_dis if row_b[t] > p_dis else row_b[t] for t in slots_b)
            travel += sc.travel_wh(v, a, b)
            ai = sc.site_index[a]
            site_a = sc.sites[ai]
            want = (potential / v.efficiency - max(e - sc.travel_wh(v, a, b) - reserve, 0.0)) \
                / v.efficiency
            room = (v.capacity_wh - e) / v.efficiency
            want = min(want, room)
            p_ch = v.charge_w * self.dt
            row_a = self.surplus[ai]
            export = site_a.export_price
            store_above = self.sv * v.efficiency * 1000.0  # cheaper energy is worth storing
            taken = 0
            for t in self.by_export[ai]:
                if not arrive_first <= t < leave_a or row_a[t] <= 0:
                    continue
                limit = room if export[t] < store_above else (want if want < room else room)
                take = int(min(p_ch, row_a[t], limit))
                if take <= 0:
                    continue
                charge[t] = take
                want -= take
                room -= take
                taken += take
                value -= take * export[t] / 1000.0
            e += taken * v.efficiency
            e -= sc.travel_wh(v, a, b)
            if e < v.min_wh or not charge:
                return None
        budget = (e - reserve) * v.efficiency  # site-side Wh that can be given
        home: list[tuple[int, float]] = []
        if cut is not None and b != v.end_site:
            # Keep what the end site could take later at a better price (a later trip).
            ei = sc.site_index[v.end_site]
            row_e, price_e = self.deficit[ei], sc.sites[ei].import_price
            home = [(price_e[t], min(p_dis, row_e[t]))
                    for t in range(cut + sc.tau(b, v.end_site), v.available_until)
                    if row_e[t] > 0 and price_e[t] > floor]
        discharge: dict[int, int] = {}
        home.sort(reverse=True)
        kept_above = list(itertools.accumulate((c for _, c in home), initial=0.0))
        k = 0  # home[:k] are dearer than the slot being filled (slots_b goes dearest first)
        for t in slots_b:
            while k < len(home) and home[k][0] > gain[t]:
                k += 1
            kept = kept_above[k]
            if budget - kept <= 0:
                break
            give = int(min(p_dis, self.deficit[bi][t], budget - kept))
            if give <= 0:
                continue
            discharge[t] = give
            budget -= give
            value += give * gain[t] / 1000.0
        if not discharge:
            return None
        outlook = 0.0  # what the energy kept for the end site could earn there later
        left = budget
        for p, c in sorted(home, reverse=True):
            if left <= 0:
                break
            part = min(c, left)
            outlook += part * (p / 1000.0 - self.sv / v.efficiency)
            left -= part
        travel += sc.travel_wh(v, b, v.end_site) - sc.travel_wh(v, st.site, v.end_site)
        legs = [st.site] + ([a] if a is not None else []) + [b, v.end_site]
        moves = sum(1 for x, y in itertools.pairwise(legs) if x != y)
        moves -= 1 if st.site != v.end_site else 0
        stored = (sum(charge.values()) * v.efficiency
                  - sum(discharge.values()) / v.efficiency - travel)
        value += self.sv * stored - moves * sc.move_cost_milli
        if value <= 0:
            return None
        return _Trip(value, a, b, leave_a, charge, discharge, leave_loc, cut=cut is not None,
                     outlook=outlook)

    def apply(self, v: Vehicle, st: _State, trip: _Trip) -> None:
        sc = self.sc
        for t, wh in trip.charge.items():
            self.surplus[sc.site_index[trip.a or ""]][t] -= wh
        for t, wh in trip.discharge.items():
            self.deficit[sc.site_index[trip.b]][t] -= wh
        for t, wh in trip.pre.items():
            self.deficit[sc.site_index[st.site]][t] -= wh
        st.discharge.update(trip.pre)
        st.energy -= sum(trip.pre.values()) / v.efficiency
        if trip.give_first:
            legs = [(trip.b, trip.leave_loc, {}, trip.discharge),
                    (trip.a or trip.b, trip.leave_a, trip.charge, {})]
        else:
            legs = ([(trip.a, trip.leave_loc, trip.charge, {})] if trip.a is not None else []) \
                + [(trip.b, trip.leave_a if trip.a is not None else trip.leave_loc, {},
                    trip.discharge)]
        for site, leave, charge, discharge in legs:
            if site != st.site:
                st.stops.append(Stop(st.site, st.arrive, leave, st.charge, st.discharge))
                st.energy -= sc.travel_wh(v, st.site, site)
                st.arrive = leave + sc.tau(st.site, site)
                st.site, st.charge, st.discharge = site, {}, {}
            st.charge.update(charge)
            st.discharge.update(discharge)
            st.energy += sum(charge.values()) * v.efficiency
            st.energy -= sum(discharge.values()) / v.efficiency
        used = [*trip.charge, *trip.discharge]
        st.free = max(max(used) + 1, st.arrive)

    def finish(self, v: Vehicle, st: _State) -> VehiclePlan:
        if not st.stops and not st.charge and not st.discharge:
            return idle_plan(self.sc, v)
        if st.site != v.end_site:
            leave = self.latest_departure(st.site, v)
            st.stops.append(Stop(st.site, st.arrive, leave, st.charge, st.discharge))
            st.stops.append(Stop(v.end_site, leave + self.sc.tau(st.site, v.end_site),
                                 v.available_until))
        else:
            st.stops.append(Stop(st.site, st.arrive, v.available_until, st.charge,
                                 st.discharge))
        return VehiclePlan(v.id, tuple(st.stops))


class _Run:
    """The greedy state of all vehicles, with each vehicle's trips so they can be undone."""

    def __init__(self, sc: Scenario, opts: HeuristicOptions, exclude: frozenset[str]) -> None:
        self.sc = sc
        self.opts = opts
        self.pl = _Planner(sc, opts)
        self.vmap = {v.id: v for v in sc.vehicles}
        self.active = [v.id for v in sc.vehicles if v.id not in exclude]
        self.states = {v.id: self.fresh(v) for v in sc.vehicles}
        self.trips: dict[str, list[tuple[_Trip, str]]] = {v.id: [] for v in sc.vehicles}
        self.touched = [0] * len(sc.sites)  # changes of each site's surplus and deficit

    @staticmethod
    def fresh(v: Vehicle) -> _State:
        return _State(v.start_site, v.available_from, float(v.energy_wh),
                      arrive=v.available_from)

    def apply(self, vid: str, trip: _Trip) -> None:
        st = self.states[vid]
        self.trips[vid].append((trip, st.site))
        for site in (trip.a, trip.b, st.site):
            if site is not None:
                self.touched[self.sc.site_index[site]] += 1
        self.pl.apply(self.vmap[vid], st, trip)

    def stamp(self, vid: str, trip: _Trip) -> tuple[int, ...]:
        """When these counters are unchanged, the trip's value is too (the sites it uses,
        and its end site, were not touched since)."""
        sites = (trip.a, trip.b, self.states[vid].site, self.vmap[vid].end_site)
        idx = [self.sc.site_index[x] for x in sites if x is not None]
        return tuple(self.touched[i] for i in idx)

    def value(self, vids: tuple[str, ...]) -> float:
        return sum(t.value for vid in vids for t, _ in self.trips[vid])

    def ruin(self, vid: str) -> list[_Trip]:
        """Undo a vehicle's trips: give back what it took and gave."""
        idx = self.sc.site_index
        for trip, pre_site in self.trips[vid]:
            for t, wh in trip.charge.items():
                self.pl.surplus[idx[trip.a or ""]][t] += wh
            for t, wh in trip.discharge.items():
                self.pl.deficit[idx[trip.b]][t] += wh
            for t, wh in trip.pre.items():
                self.pl.deficit[idx[pre_site]][t] += wh
        old = [t for t, _ in self.trips[vid]]
        self.trips[vid] = []
        self.states[vid] = self.fresh(self.vmap[vid])
        return old

    def alone(self, vid: str) -> None:
        """Plan one vehicle's trips, one best trip after another."""
        v = self.vmap[vid]
        for _ in range(self.opts.max_trips):
            trip = self.pl.best_trip(v, self.states[vid])
            if trip is None:
                return
            self.apply(vid, trip)

    def greedy(self) -> None:
        """All vehicles together: the best trip of any vehicle first (lazily re-valued)."""
        heap: list[tuple[float, int, str]] = []
        known: dict[str, tuple[_Trip, tuple[int, ...]]] = {}  # best trip, its stamp
        seq = 0
        for vid in self.active:
            trip = self.pl.best_trip(self.vmap[vid], self.states[vid])
            if trip is not None:
                heapq.heappush(heap, (-trip.value, seq, vid))
                known[vid] = (trip, self.stamp(vid, trip))
                seq += 1
        done = 0
        while heap and done < self.opts.max_trips:
            _, _, vid = heapq.heappop(heap)
            kept = known.pop(vid, None)
            if kept is not None and kept[1] == self.stamp(vid, kept[0]):
                trip = kept[0]  # nothing it uses changed: still its best
            else:
                trip = self.pl.best_trip(self.vmap[vid], self.states[vid])
            if trip is None:
                continue
            if heap and trip.value < -heap[0][0]:
                heapq.heappush(heap, (-trip.value, seq, vid))
                known[vid] = (trip, self.stamp(vid, trip))
                seq += 1
                continue
            self.apply(vid, trip)
            done += 1
            nxt = self.pl.best_trip(self.vmap[vid], self.states[vid])
            if nxt is not None:
                heapq.heappush(heap, (-nxt.value, seq, vid))
                known[vid] = (nxt, self.stamp(vid, nxt))
                seq += 1

    def sites_of(self, vid: str) -> set[str]:
        return {s for t, pre in self.trips[vid]
                for s in ((t.a, t.b, pre) if t.pre else (t.a, t.b)) if s is not None}

    def lookahead(self, vid: str) -> None:
        """Re-plan one vehicle: try its few best first trips, each completed greedily, and
        keep the best sequence."""
        v = self.vmap[vid]
        firsts = self.pl.top_trips(v, self.states[vid], self.opts.lookahead, with_cuts=True)
        best_value, best_seq = 0.0, []
        for first in firsts:
            self.apply(vid, first)
            self.alone(vid)
            total = self.value((vid,))
            if total > best_value + 1e-6:
                best_value, best_seq = total, [t for t, _ in self.trips[vid]]
            self.ruin(vid)
        for trip in best_seq:
            self.apply(vid, trip)

    def improve_single(self) -> None:
        for vid in sorted(self.active, key=lambda x: -self.value((x,))):
            before = self.value((vid,))
            old = self.ruin(vid)
            self.lookahead(vid)
            if self.value((vid,)) <= before + 1e-6:
                self.ruin(vid)
                for trip in old:
                    self.apply(vid, trip)

    def improve(self) -> None:
        """Pairs of vehicles that use a common site are re-planned the other way round
        (the second first); a change is kept only when the pair gains."""
        for _ in range(self.opts.improve_rounds):
            better = False
            order = sorted(self.active, key=lambda vid: -self.value((vid,)))
            for i, v in enumerate(order):
                for w in order[i + 1:]:
                    if len(order) > self.opts.all_pairs_up_to and \
                            not self.sites_of(v) & self.sites_of(w):
                        continue
                    before = self.value((v, w))
                    old_v, old_w = self.ruin(v), self.ruin(w)
                    self.alone(w)
                    self.alone(v)
                    if self.value((v, w)) > before + 1e-6:
                        better = True
                        continue
                    self.ruin(v)
                    self.ruin(w)
                    for trip in old_v:
                        self.apply(v, trip)
                    for trip in old_w:
                        self.apply(w, trip)
            if not better:
                return


def solve_heuristic(scenario: Scenario, options: HeuristicOptions | None = None,
                    *, exclude: frozenset[str] = frozenset()) -> Plan:
    """A feasible plan in a fraction of a second; vehicles in `exclude` stay idle."""
    opts = options or HeuristicOptions()
    started = time.perf_counter()
    run = _Run(scenario, opts, exclude)
    run.greedy()
    run.improve()
    if opts.lookahead > 1:
        run.improve_single()
    vehicles = tuple(run.pl.finish(v, run.states[v.id]) for v in scenario.vehicles)
    result = figures(scenario, vehicles)
    if opts.refine_rounds > 0:
        refined = refine(scenario, vehicles, opts.refine_rounds, exclude)
        if opts.shift_budget > 0:
            refined = shift_departures(scenario, refined, opts.shift_budget, exclude)
        better = figures(scenario, refined)
        if better.objective < result.objective:
            vehicles, result = refined, better
    return Plan(scenario.name, "heuristic", vehicles, result, time.perf_counter() - started,
                "heuristic")
