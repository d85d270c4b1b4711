"""Generated interchange cases for tests and benchmarks (seeded, so runs repeat).

Sites sit in a 12 km square and alternate between aggregators; some have large PV (a midday
surplus), the others have evening-heavy loads (a deficit); prices have an evening peak.
Slots are 15 minutes; vehicles leave a site on the hour (departure_every = 4).
"""

from __future__ import annotations

import math
from random import Random

from agent.modules.interchange.model import Scenario, Site, Vehicle, build_scenario


def generated_case(n_sites: int, n_vehicles: int, *, seed: int, n_slots: int = 96,
                   slot_minutes: int = 15, aggregators: int = 2) -> Scenario:
    rng = Random(seed)
    per_hour = 60 // slot_minutes
    sites = []
    for k in range(n_sites):
        pv_kw = rng.choice((0.0, 0.0, 3.0, 6.0, 10.0, 15.0))
        base_kw = rng.uniform(0.3, 1.2)
        evening_kw = rng.uniform(0.5, 4.0)
        gen, load, imp, exp = [], [], [], []
        for t in range(n_slots):
            h = (t / per_hour) % 24
            sun = max(0.0, math.sin(math.pi * (h - 6.5) / 13.0)) if 6.5 <= h <= 19.5 else 0.0
            g = pv_kw * sun * rng.uniform(0.8, 1.0)
            peak = evening_kw * math.exp(-((h - 19.0) ** 2) / 4.0) \
                + 0.5 * evening_kw * math.exp(-((h - 7.5) ** 2) / 2.0)
            ld = base_kw + peak * rng.uniform(0.9, 1.1)
            gen.append(round(g * 1000 * slot_minutes / 60))
            load.append(round(ld * 1000 * slot_minutes / 60))
            imp.append(300 if 17 <= h < 21 else (220 if 7 <= h < 17 else 150))
            exp.append(65)
        sites.append(Site(f"s{k}", "ABCDEFGH"[k % aggregators], 35.60 + rng.uniform(0, 0.11),
                          139.60 + rng.uniform(0, 0.13), tuple(gen), tuple(load), tuple(imp),
                          tuple(exp)))
    vehicles = []
    for k in range(n_vehicles):
        cap = rng.choice((40_000, 58_000, 64_000, 77_000))
        home = sites[rng.randrange(n_sites)].id
        start = rng.choice((0, 6, 8)) * per_hour
        end = rng.choice((20, 22, 24)) * per_hour
        vehicles.append(Vehicle(f"ev{k}", cap, round(cap * rng.uniform(0.5, 0.8)),
                                round(cap * 0.2), round(cap * 0.4), 7_400, 7_400, 0.92,
                                rng.choice((150, 170, 190)), home, home, start,
                                min(end, n_slots)))
    return build_scenario(name=f"gen-{n_sites}x{n_vehicles}-{seed}", slot_minutes=slot_minutes,
                          n_slots=n_slots, sites=sites, vehicles=vehicles, road_factor=1.3,
                          speed_kmh=30.0, threshold_wh=100, move_cost_milli=300,
                          departure_every=per_hour)
