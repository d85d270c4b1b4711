"""`manet-agent interchange`: detect imbalances and plan vehicle moves for a scenario.

Exit codes: 0 done, 1 the plan breaks a rule (a solver bug, reported), 2 bad input.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from agent.modules.agent_client import add_agent_args, ask_agent
from agent.modules.interchange.detect import detect
from agent.modules.interchange.exact import ExactOptions, solve_exact
from agent.modules.interchange.heuristic import solve_heuristic
from agent.modules.interchange.model import InterchangeError, Scenario
from agent.modules.interchange.plan import Plan, check
from agent.modules.interchange.scenario import load_scenario
from agent.modules.records import add_ledger_args, record_if_asked


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `interchange plan` and `interchange detect` to the agent's CLI."""
    top = subparsers.add_parser("interchange", help="power interchange between aggregators")
    sub = top.add_subparsers(dest="interchange_command", required=True, metavar="ACTION")
    plan = sub.add_parser("plan", help="plan which vehicles carry energy where and when")
    plan.add_argument("scenario", help="scenario TOML (see docs/modules.md)")
    plan.add_argument("--solver", choices=("heuristic", "exact", "both"), default="heuristic")
    plan.add_argument("--time-limit", type=float, default=60.0, help="exact solver, seconds")
    plan.add_argument("--plot", default=None, metavar="PNG", help="write the timeline plot")
    plan.add_argument("--json", action="store_true")
    add_ledger_args(plan)
    plan.set_defaults(func=run_plan)
    det = sub.add_parser("detect", help="list deficits and surpluses per site")
    det.add_argument("scenario")
    det.add_argument("--start", type=int, default=0, help="first slot of the horizon")
    det.add_argument("--horizon", type=int, default=None, help="slots to look ahead")
    det.add_argument("--json", action="store_true")
    det.set_defaults(func=run_detect)
    send = sub.add_parser("send", help="plan and send each vehicle its part (running agent)")
    send.add_argument("scenario", help="scenario TOML; vehicles need interchange.vehicle_keys")
    add_agent_args(send)
    send.set_defaults(func=lambda a: ask_agent(a, "interchange_send",
                                               scenario=str(Path(a.scenario).resolve())))
    status = sub.add_parser("status", help="the plan being sent, the answers, what was answered")
    add_agent_args(status)
    status.set_defaults(func=lambda a: ask_agent(a, "interchange_status"))


def _fail(msg: str) -> int:
    print(f"error: {msg}", file=sys.stderr)
    return 2


def run_detect(args: argparse.Namespace) -> int:
    try:
        sc = load_scenario(args.scenario)
        found = detect(sc, start=args.start, horizon=args.horizon)
    except InterchangeError as exc:
        return _fail(str(exc))
    if args.json:
        print(json.dumps([m.to_record() for m in found], indent=2))
        return 0
    print(f"{sc.name}: {len(sc.sites)} sites, {sc.n_slots} slots of {sc.slot_minutes} min, "
          f"threshold {sc.threshold_wh} Wh")
    for m in found:
        print(f"  {m.site:<12} {m.aggregator:<4} {m.kind:<8} slots {m.start:>3}-{m.end:<3} "
              f"{m.energy_wh / 1000:7.2f} kWh (peak {m.peak_wh / 1000:.2f})")
    return 0


def format_plan(sc: Scenario, plan: Plan) -> str:
    f = plan.figures
    lines = [f"{plan.solver} ({plan.status}, {plan.runtime_s:.2f} s): saved "
             f"{f.saved / 1000:.3f} (grid cost {f.baseline_cost / 1000:.3f} -> "
             f"{f.plan_cost / 1000:.3f}, trips {f.move_cost / 1000:.3f}, stored energy "
             f"{f.stored_change_value / 1000:+.3f}); {f.moves} trips",
             f"  interchanged between aggregators {f.interchanged_wh / 1000:.2f} kWh "
             f"{dict(f.interchange_matrix)}; deficit {f.deficit_wh / 1000:.2f} kWh, covered "
             f"{f.covered_wh / 1000:.2f}, uncovered {f.uncovered_wh / 1000:.2f}"]
    if plan.bound is not None:
        lines.append(f"  proven bound on the objective {plan.bound / 1000:.3f}")
    for vp in plan.vehicles:
        parts = []
        for s in vp.stops:
            ch, dis = sum(s.charge.values()), sum(s.discharge.values())
            what = "".join([f" +{ch / 1000:.1f}kWh" if ch else "",
                            f" -{dis / 1000:.1f}kWh" if dis else ""])
            parts.append(f"{s.site}[{s.arrive}-{s.depart}){what}")
        lines.append(f"  {vp.vehicle}: " + " -> ".join(parts))
    return "\n".join(lines)


def run_plan(args: argparse.Namespace) -> int:
    try:
        sc = load_scenario(args.scenario)
        plans = []
        if args.solver in ("heuristic", "both"):
            plans.append(solve_heuristic(sc))
        if args.solver in ("exact", "both"):
            plans.append(solve_exact(sc, ExactOptions(time_limit_s=args.time_limit)))
    except InterchangeError as exc:
        return _fail(str(exc))
    problems = {p.solver: check(sc, p) for p in plans}
    if args.plot:
        from agent.modules.interchange.plot import plot_plan

        plot_plan(sc, plans[-1], args.plot)
    if args.json:
        doc = {"scenario": sc.name, "detected": [m.to_record() for m in detect(sc)],
               "plans": [p.to_record() for p in plans], "problems": problems}
        print(json.dumps(doc, indent=2))
    else:
        print(f"{sc.name}: {len(sc.sites)} sites, {len(sc.vehicles)} vehicles, {sc.n_slots} "
              f"slots of {sc.slot_minutes} min")
        for p in plans:
            print(format_plan(sc, p))
            for msg in problems[p.solver]:
                print(f"  RULE BROKEN: {msg}")
        if len(plans) == 2 and plans[1].figures.objective:
            gap = (plans[0].figures.objective - plans[1].figures.objective) \
                / abs(plans[1].figures.objective)
            print(f"heuristic gap to the exact plan: {gap * 100:.2f}%")
        if args.plot:
            print(f"plot written to {args.plot}")
    if any(problems.values()):
        return 1
    problem = record_if_asked(args, plans[-1].to_record(), time.time())
    return _fail(problem) if problem is not None else 0
