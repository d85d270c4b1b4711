"""On-device modules: recommendation latency and interchange solver quality (JSON).

    .venv/bin/python benchmarks/modules.py [--queries 50] [--cases 20] [--time-limit 120]
                                           [--skip-charging] [--skip-interchange]

Charging: facilities are generated (seeded) in a 10 x 15 degree box (about 1,100 x 1,250 km,
so a car's reach holds a realistic share of them): AC type 2 at 11/22 kW, CCS at 50/150/350
kW, CHAdeMO; 80 % of EVSEs free; a third with a published energy mix; tariffs drawn from a
pool that includes time-of-day, day-of-week and power-band restrictions. Latency is one full
`recommend` call (spatial query, array filters, exact evaluation of the short list) for a
58 kWh car at a random position in the box, 35 % charged. Targets (issue 6): under 20 ms
among 100,000 facilities.

Interchange: 20 generated cases from 4 sites x 3 vehicles to 20 sites x 10 vehicles, 96
slots of 15 minutes (agent/modules/interchange/generate.py). The exact model runs with a
time limit (its own best plan is compared here, not the heuristic plan it keeps by default);
when it stops there, the heuristic's gap is given both to that plan and to the proven bound
(the true gap to the optimum lies between). Targets: heuristic within 5 % of the optimum
on average, under 1 s per case.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from datetime import datetime
from random import Random
from typing import Any

from agent.modules.charging.index import FacilityIndex
from agent.modules.charging.ocpi import (
    Connector,
    EnergyMix,
    Evse,
    Location,
    Tariff,
    parse_tariff,
)
from agent.modules.charging.recommend import PRESETS, Preferences, recommend
from agent.modules.charging.vehicle import CurvePoint, Vehicle
from agent.modules.interchange.exact import ExactOptions, solve_exact
from agent.modules.interchange.generate import generated_case
from agent.modules.interchange.heuristic import solve_heuristic
from agent.modules.interchange.model import InterchangeError
from agent.modules.interchange.plan import check

CAR = Vehicle("bench", "Bench Car 58 kWh", 58_000, 170, 11_000, 3, 130_000,
              (CurvePoint(0, 110_000), CurvePoint(10, 130_000), CurvePoint(50, 110_000),
               CurvePoint(80, 55_000), CurvePoint(100, 10_000)),
              frozenset({"type2", "ccs"}))
BOX = (35.0, 45.0, -90.0, -75.0)


def _tariffs() -> list[Tariff]:
    def energy(price: float, **restr: Any) -> dict[str, Any]:
        el: dict[str, Any] = {"price_components": [{"type": "ENERGY", "price": price,
                                                    "vat": 20, "step_size": 1}]}
        if restr:
            el["restrictions"] = restr
        return el

    docs = []
    for k, p in enumerate((0.25, 0.30, 0.39, 0.45, 0.55, 0.69)):
        docs.append({"id": f"flat{k}", "currency": "EUR", "elements": [energy(p)]})
    for k, p in enumerate((0.29, 0.49)):
        docs.append({"id": f"tod{k}", "currency": "EUR", "elements": [
            energy(p - 0.1, start_time="22:00", end_time="06:00"), energy(p)]})
        docs.append({"id": f"band{k}", "currency": "EUR", "elements": [
            energy(p - 0.1, max_power=22.0), energy(p, max_power=100.0), energy(p + 0.1)]})
        docs.append({"id": f"week{k}", "currency": "EUR", "elements": [
            {"price_components": [{"type": "FLAT", "price": 1.0, "step_size": 1}]},
            energy(p, day_of_week=["SATURDAY", "SUNDAY"]), energy(p + 0.05),
            {"price_components": [{"type": "TIME", "price": 3.0, "step_size": 60}],
             "restrictions": {"min_duration": 3600}}]})
    return [parse_tariff(d) for d in docs]


def generate_facilities(n: int, seed: int) -> list[Location]:
    rng = Random(seed)
    tariffs = _tariffs()
    kinds = (("IEC_62196_T2", "AC_3_PHASE", 11_000), ("IEC_62196_T2", "AC_3_PHASE", 22_000),
             ("IEC_62196_T2_COMBO", "DC", 50_000), ("IEC_62196_T2_COMBO", "DC", 150_000),
             ("IEC_62196_T2_COMBO", "DC", 350_000), ("CHADEMO", "DC", 50_000))
    out = []
    for i in range(n):
        tariff = rng.choice(tariffs)
        evses = []
        for e in range(rng.randint(1, 4)):
            std, ptype, power = rng.choice(kinds)
            volts = 230 if ptype != "DC" else 800
            amps = power // (volts * (3 if ptype != "DC" else 1))
            evses.append(Evse(f"{i}-{e}", "AVAILABLE" if rng.random() < 0.8 else "CHARGING",
                              (Connector("1", std, ptype, volts, amps, power, (tariff.id,)),)))
        mix = None
        if rng.random() < 0.33:
            green = rng.choice((0, 20, 35, 60, 100))
            solar = rng.randint(0, green)
            mix = EnergyMix(green == 100, {"SOLAR": float(solar), "WIND": float(green - solar),
                                           "GAS": float(100 - green)},
                            round((100 - green) * 4.5, 1))
        out.append(Location(f"L{i}", f"Facility {i}", rng.uniform(BOX[0], BOX[1]),
                            rng.uniform(BOX[2], BOX[3]), tuple(evses), mix,
                            {tariff.id: tariff}))
    return out


def bench_charging(queries: int) -> dict[str, Any]:
    results: dict[str, Any] = {}
    all_locs = generate_facilities(100_000, seed=1)
    rng = Random(2)
    when = datetime(2024, 6, 3, 18, 0)
    for n in (1_000, 10_000, 100_000):
        t = time.perf_counter()
        index = FacilityIndex(all_locs[:n])
        build_s = time.perf_counter() - t
        for prefer in ("balanced", "renewable", "cheapest"):
            prefs = Preferences(weights=dict(PRESETS[prefer]))
            lat = []
            usable = []
            for _ in range(queries):
                pos = (rng.uniform(BOX[0] + 1, BOX[1] - 1), rng.uniform(BOX[2] + 1, BOX[3] - 1))
                t = time.perf_counter()
                res = recommend(index, CAR, soc=35, latitude=pos[0], longitude=pos[1],
                                when=when, prefs=prefs)
                lat.append((time.perf_counter() - t) * 1000)
                usable.append(res.considered)
            lat.sort()
            results[f"{n}/{prefer}"] = {
                "facilities": n, "prefer": prefer, "index_build_s": round(build_s, 3),
                "latency_ms_median": round(statistics.median(lat), 2),
                "latency_ms_p95": round(lat[int(0.95 * (len(lat) - 1))], 2),
                "latency_ms_max": round(lat[-1], 2),
                "usable_facilities_median": statistics.median(usable)}
    return results


def bench_interchange(cases: int, time_limit: float) -> dict[str, Any]:
    rows: list[dict[str, Any]] = []
    for k in range(cases):
        sites = round(4 + 16 * k / max(cases - 1, 1))
        vehicles = round(3 + 7 * k / max(cases - 1, 1))
        sc = generated_case(sites, vehicles, seed=100 + k)
        cpu = time.process_time()
        heur = solve_heuristic(sc)
        cpu = time.process_time() - cpu
        h = heur.figures.objective
        try:  # the MILP's own best plan, not the heuristic kept at the time limit
            exact = solve_exact(sc, ExactOptions(time_limit_s=time_limit, keep_heuristic=False))
            x: int | None = exact.figures.objective
            status, bound, secs = exact.status, exact.bound, exact.runtime_s
            exact_ok = check(sc, exact) == []
        except InterchangeError:
            x, status, bound, secs, exact_ok = None, "no plan in time", None, time_limit, True
        best = h if x is None else min(h, x)  # a stopped MILP can be worse than the heuristic
        row = {"case": sc.name, "sites": sites, "vehicles": vehicles, "slots": sc.n_slots,
               "heuristic_s": round(heur.runtime_s, 3), "heuristic_cpu_s": round(cpu, 3),
               "exact_s": round(secs, 2), "load_1min": round(os.getloadavg()[0], 2),
               "exact_status": status, "heuristic_objective": h, "exact_objective": x,
               "exact_bound": bound,
               "gap_to_exact": round((h - best) / abs(best), 4) if best else 0.0,
               "gap_to_bound": None if bound is None or not bound
               else round((h - bound) / abs(bound), 4),
               "heuristic_feasible": check(sc, heur) == [],
               "exact_feasible": exact_ok}
        rows.append(row)
        print(json.dumps(row), flush=True)
    optimal = [r for r in rows if r["exact_status"] == "optimal"]
    return {
        "cases": rows,
        "mean_gap_to_exact": round(statistics.mean(r["gap_to_exact"] for r in rows), 4),
        "mean_gap_on_proven_optima": round(statistics.mean(r["gap_to_exact"]
                                                           for r in optimal), 4)
        if optimal else None,
        "proven_optimal_cases": len(optimal),
        "mean_gap_where_exact_stopped": round(statistics.mean(
            r["gap_to_exact"] for r in rows if r["exact_status"] == "time limit"), 4)
        if any(r["exact_status"] == "time limit" for r in rows) else None,
        "max_heuristic_s": max(r["heuristic_s"] for r in rows),
        "max_heuristic_cpu_s": max(r["heuristic_cpu_s"] for r in rows),
        "mean_exact_s": round(statistics.mean(r["exact_s"] for r in rows), 2),
        "mean_gap_to_bound_where_known": round(statistics.mean(
            r["gap_to_bound"] for r in rows if r["gap_to_bound"] is not None), 4),
        "all_heuristic_feasible": all(r["heuristic_feasible"] for r in rows),
        "exact_time_limit_s": time_limit}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--queries", type=int, default=50)
    ap.add_argument("--cases", type=int, default=20)
    ap.add_argument("--time-limit", type=float, default=120.0)
    ap.add_argument("--skip-charging", action="store_true")
    ap.add_argument("--skip-interchange", action="store_true")
    args = ap.parse_args()
    out: dict[str, Any] = {"machine": {"python": platform.python_version(),
                                       "cpus": os.cpu_count(),
                                       "platform": platform.platform(),
                                       "load_at_start": os.getloadavg()}}
    if not args.skip_charging:
        out["recommendation"] = bench_charging(args.queries)
    if not args.skip_interchange:
        out["interchange"] = bench_interchange(args.cases, args.time_limit)
    out["machine"]["load_at_end"] = os.getloadavg()
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
