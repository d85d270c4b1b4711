"""`manet-agent charging`: recommend facilities, and plan time-shifted charging.

Exit codes: 0 done, 1 nothing to recommend or the target cannot be met, 2 bad input.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import datetime, timedelta
from typing import Any

from agent.modules.agent_client import add_agent_args, ask_agent
from agent.modules.charging.errors import ChargingError
from agent.modules.charging.facilities import load_facilities
from agent.modules.charging.index import FacilityIndex
from agent.modules.charging.recommend import Preferences, RecommendResult, parse_prefer, recommend
from agent.modules.charging.schedule import plan_charging, read_forecast
from agent.modules.charging.vehicle import find_vehicle, load_vehicles
from agent.modules.records import add_ledger_args, record_if_asked

EV_DATA_ENV = "MANET_EV_DATA"


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `charging recommend` and `charging schedule` to the agent's CLI."""
    top = subparsers.add_parser("charging", help="EV charging: recommend facilities, plan slots")
    sub = top.add_subparsers(dest="charging_command", required=True, metavar="ACTION")
    rec = sub.add_parser("recommend", help="rank charging facilities for a vehicle")
    _vehicle_args(rec)
    rec.add_argument("--at", required=True, metavar="LAT,LON", help="vehicle position")
    rec.add_argument("--facilities", action="append", required=True, metavar="FILE",
                     help="OCPI .json or AFDC .csv (repeatable)")
    rec.add_argument("--prefer", default="balanced",
                     help="renewable, greenest, cheapest, fastest, nearest, balanced; sources "
                          "such as solar+wind; or weights cost=0.5,time=0.3,renewable=0.2")
    rec.add_argument("--min-renewable", type=float, default=0.0, metavar="PCT",
                     help="exclude facilities with less of the desired sources")
    rec.add_argument("--min-arrival", type=float, default=10.0, metavar="PCT",
                     help="state of charge to keep on arrival (safety margin)")
    rec.add_argument("--connectors", default=None,
                     help="plugs the car can use, overriding the model: type1,type2,ccs,...")
    rec.add_argument("--top", type=int, default=5)
    rec.add_argument("--road-factor", type=float, default=1.3)
    rec.add_argument("--time", default=None, metavar="ISO",
                     help="local time for tariff restrictions (default: now)")
    rec.add_argument("--explain", action="store_true", help="list excluded facilities")
    rec.add_argument("--json", action="store_true")
    add_ledger_args(rec)
    rec.set_defaults(func=run_recommend)

    sch = sub.add_parser("schedule", help="cheapest/greenest slots to reach a target")
    _vehicle_args(sch, required=False)
    sch.add_argument("--forecast", required=True, metavar="CSV",
                     help="timestamp,value rows: price per kWh or g CO2 per kWh")
    sch.add_argument("--mode", choices=("cost", "co2"), default="cost")
    sch.add_argument("--energy-kwh", type=float, default=None,
                     help="energy to add (else from --vehicle, --soc and --target)")
    sch.add_argument("--power-kw", type=float, required=True, help="charging power")
    sch.add_argument("--now", default=None, metavar="ISO", help="default: first forecast slot")
    sch.add_argument("--departure", required=True, metavar="ISO|+HOURS")
    sch.add_argument("--json", action="store_true")
    sch.set_defaults(func=run_schedule)

    ses = sub.add_parser("session", help="start/stop a charging session (running agent, ledger)")
    ses.add_argument("action", choices=("start", "stop", "list"))
    ses.add_argument("--vehicle", default=None, help="default: interchange.vehicle_id")
    ses.add_argument("--location", default=None, help="start: facility (location) id")
    ses.add_argument("--connector", default=None, help="start: connector (EVSE) id")
    ses.add_argument("--plan-id", default=None, help="start: the recommendation followed")
    ses.add_argument("--planned-wh", type=int, default=0)
    ses.add_argument("--planned-cost-milli", type=int, default=None)
    ses.add_argument("--currency", default="")
    ses.add_argument("--metered-wh", type=int, default=0, help="stop: energy metered")
    ses.add_argument("--cost-milli", type=int, default=None, help="stop: what it cost")
    ses.add_argument("--aborted", action="store_true", help="stop: the session was cut short")
    add_agent_args(ses)
    ses.set_defaults(func=run_session)


def run_session(args: argparse.Namespace) -> int:
    fields = {"action": args.action, "vehicle": args.vehicle}
    if args.action == "start":
        fields |= {"location": args.location, "connector": args.connector,
                   "plan_id": args.plan_id, "planned_wh": args.planned_wh,
                   "planned_cost_milli": args.planned_cost_milli, "currency": args.currency}
    elif args.action == "stop":
        fields |= {"metered_wh": args.metered_wh, "cost_milli": args.cost_milli,
                   "aborted": args.aborted}
    return ask_agent(args, "charging_session", **fields)


def _vehicle_args(p: argparse.ArgumentParser, required: bool = True) -> None:
    p.add_argument("--vehicle", required=required, metavar="MODEL",
                   help="model name (substring) or open-ev-data id")
    p.add_argument("--vehicles", default=os.environ.get(EV_DATA_ENV),
                   help=f"open-ev-data ev-data.json (default ${EV_DATA_ENV})")
    p.add_argument("--soc", type=float, required=required, help="state of charge, percent")
    p.add_argument("--target", type=float, default=80.0, help="target state of charge")


def _fail(msg: str) -> int:
    print(f"error: {msg}", file=sys.stderr)
    return 2


def _vehicle(args: argparse.Namespace) -> Any:
    if not args.vehicles:
        raise ChargingError(f"give --vehicles ev-data.json or set ${EV_DATA_ENV}")
    return find_vehicle(load_vehicles(args.vehicles), args.vehicle)


def run_recommend(args: argparse.Namespace) -> int:
    try:
        lat_s, _, lon_s = args.at.partition(",")
        lat, lon = float(lat_s), float(lon_s)
    except ValueError:
        return _fail(f"--at wants LAT,LON, got {args.at!r}")
    try:
        vehicle = _vehicle(args)
        plugs = None
        if args.connectors:
            vehicle = vehicle.with_plugs(args.connectors.split(","))
        weights, sources = parse_prefer(args.prefer)
        prefs = Preferences(weights=weights, sources=sources,
                            min_renewable=args.min_renewable / 100,
                            min_arrival_soc=args.min_arrival, target_soc=args.target,
                            road_factor=args.road_factor, top=args.top,
                            shortlist=max(20, 4 * args.top))
        loaded = load_facilities(args.facilities)
        when = datetime.fromisoformat(args.time) if args.time else datetime.now()
        result = recommend(FacilityIndex(loaded.locations), vehicle, soc=args.soc,
                           latitude=lat, longitude=lon, when=when, prefs=prefs, plugs=plugs,
                           explain=args.explain)
    except (ChargingError, ValueError) as exc:
        return _fail(str(exc))
    for p in loaded.problems:
        print(f"skipped {p}", file=sys.stderr)
    if args.json:
        doc = result.to_record()
        doc["skipped"] = [str(p) for p in loaded.problems]
        doc["exclusions"] = [{"location": e.location_id, "name": e.name,
                              "distance_m": round(e.distance_km * 1000), "reason": e.reason}
                             for e in result.exclusions]
        print(json.dumps(doc, indent=2))
    else:
        print(format_table(result))
        if loaded.other_fuel_rows:
            print(f"({loaded.other_fuel_rows} rows for other fuels skipped)")
    if result.recommendations:
        problem = record_if_asked(args, result.to_record(), time.time())
        if problem is not None:
            return _fail(problem)
    return 0 if result.recommendations else 1


def format_table(result: RecommendResult) -> str:
    v = result.vehicle
    lines = [f"{v.name}: {result.soc:g}% of {v.capacity_wh / 1000:g} kWh, "
             f"{result.range_km:.0f} km before the safety margin; "
             f"{result.considered} facilities usable"]
    if not result.recommendations:
        lines.append("no facility can be reached and plugged into")
    else:
        lines.append(f"{'#':>2} {'facility':<30} {'km':>6} {'arr%':>5} {'plug':<18} {'kW':>5} "
                     f"{'kWh':>6} {'charge':>7} {'cost':>9} {'renew':>6} {'CO2 kg':>7}")
        for r in result.recommendations:
            cost = "unknown" if r.cost_milli is None else f"{r.cost_milli / 1000:.2f} {r.currency}"
            renew = "n/a" if r.renewable_share is None else f"{r.renewable_share * 100:.0f}%"
            co2 = f"{r.co2_g / 1000:.1f}" + ("~" if r.co2_estimated else "")
            lines.append(f"{r.rank:>2} {r.name[:30]:<30} {r.distance_km:>6.1f} "
                         f"{r.arrival_soc:>5.1f} {r.connector[:18]:<18} "
                         f"{r.power_w / 1000:>5.0f} {r.energy_wh / 1000:>6.1f} "
                         f"{r.charge_s // 60:>5}min {cost:>9} {renew:>6} {co2:>7}")
            lines.append(f"   why: {'; '.join(r.reasons)}")
    excluded = ", ".join(f"{n} {k}" for k, n in sorted(result.excluded.items()) if n)
    if excluded:
        lines.append(f"excluded: {excluded}")
    for e in result.exclusions:
        lines.append(f"  - {e.name} ({e.distance_km:.1f} km): {e.reason}")
    return "\n".join(lines)


def run_schedule(args: argparse.Namespace) -> int:
    try:
        forecast = read_forecast(args.forecast)
        now = datetime.fromisoformat(args.now) if args.now else forecast[0].start
        if args.departure.startswith("+"):
            departure = now + timedelta(hours=float(args.departure[1:]))
        else:
            departure = datetime.fromisoformat(args.departure)
        if args.energy_kwh is not None:
            needed = round(args.energy_kwh * 1000)
        else:
            if args.vehicle is None or args.soc is None:
                return _fail("give --energy-kwh, or --vehicle with --soc and --target")
            v = _vehicle(args)
            needed = max(round((args.target - args.soc) / 100 * v.capacity_wh), 0)
        plan = plan_charging(forecast, now=now, departure=departure, needed_wh=needed,
                             power_w=round(args.power_kw * 1000), mode=args.mode)
    except (ChargingError, ValueError) as exc:
        return _fail(str(exc))
    if args.json:
        print(json.dumps(plan.to_record(), indent=2))
    else:
        unit = "currency" if plan.mode == "cost" else "g CO2"
        print(f"{plan.needed_wh / 1000:.1f} kWh before {departure.isoformat()}: {plan.reason}")
        for s in plan.slots:
            print(f"  {s.start:%Y-%m-%d %H:%M} - {s.end:%H:%M}  {s.energy_wh / 1000:6.2f} kWh"
                  f"  at {s.value}/kWh")
        print(f"total {plan.total_milli / 1000:.3f} {unit}")
    return 0 if plan.feasible else 1
