"""`sim-radio`: run a scenario, sweep a parameter, or serve a medium for real agents."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import sys
from pathlib import Path
from typing import Any

from sim_radio import scenario as scn
from sim_radio.errors import ScenarioError


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def summary_table(summary: dict[str, Any]) -> str:
    """The human summary printed after a run."""
    rows = [
        ("scenario", summary["scenario"]),
        ("nodes", summary["nodes"]),
        ("seed", summary["seed"]),
        ("simulated", f"{summary['sim_seconds']:g} s in {summary['wall_seconds']:.2f} s wall "
                      f"({_fmt(summary['sim_seconds_per_wall_second'], 1)} sim s per wall s, "
                      f"{'compiled' if summary['compiled_cores'] else 'interpreted'} cores)"),
        ("data sent / delivered", f"{summary['data_sent']} / {summary['data_delivered']}"),
        ("packet delivery ratio", _fmt(summary["pdr"])),
        ("delay mean / p95 (s)", f"{_fmt(summary['mean_delay_s'], 4)} / "
                                 f"{_fmt(summary['p95_delay_s'], 4)}"),
        ("control frames (bytes)", f"{summary['control_frames']} ({summary['control_bytes']})"),
        ("  by kind", ", ".join(f"{k} {v}" for k, v in summary["control_by_kind"].items())),
        ("normalized routing load", _fmt(summary["normalized_routing_load"], 2)),
        ("route discoveries (ok)", f"{summary['route_discoveries']} "
                                   f"({summary['route_discoveries_ok']}), mean "
                                   f"{_fmt(summary['mean_route_discovery_s'], 3)} s"),
        ("gateway reachability", _fmt(summary["gateway_reachability"])),
        ("MAC", ", ".join(f"{k} {v}" for k, v in summary["mac"].items())),
    ]
    led = summary.get("ledger")
    if led is not None:
        rows += [
            ("ledger blocks at backhaul", f"{led['blocks_at_backhaul']} of "
                                          f"{led['blocks_written']} "
                                          f"({_fmt(led['share_at_backhaul'])})"),
            ("  lag mean / p95 (s)", f"{_fmt(led['mean_lag_s'], 1)} / "
                                     f"{_fmt(led['p95_lag_s'], 1)}"),
            ("  syncs direct / gateway", f"{led['syncs_direct']} / {led['syncs_gateway']}, "
                                         f"{led['syncs_failed']} failed"),
            ("  on the mesh", f"{led['mesh_payloads']} payloads, {led['mesh_bytes']} bytes"),
        ]
    width = max(len(k) for k, _ in rows)
    lines = [f"  {k:<{width}}  {v}" for k, v in rows]
    flows = summary["flows"]
    if flows:
        lines.append(f"  {'flows':<{width}}  {len(flows)}; worst PDR: " + ", ".join(
            f"#{f['flow']} {f['src']}->{f['dst']} {_fmt(f['pdr'], 2)}"
            for f in sorted(flows, key=lambda f: (f["pdr"] is None, f["pdr"] or 0))[:3]))
    return "\n".join(lines)


def _run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from sim_radio.engine import Simulation

    sc = scn.load(args.scenario)
    for note in sc.notes:
        print(f"note: {note}", file=sys.stderr)
    sim = Simulation(sc, args.seed)
    end = sc.duration_s if args.until is None else min(args.until, sc.duration_s)
    bar = tqdm(total=round(end), unit="sim s", desc=sc.name, disable=args.quiet or None,
               file=sys.stderr, leave=False)
    done = [0]

    def progress(t: float) -> None:
        step = int(t) - done[0]
        if step > 0:
            bar.update(step)
            done[0] += step

    with contextlib.closing(bar):
        result = sim.run(end, progress)
    print(f"sim-radio run {args.scenario}")
    print(summary_table(result.summary))
    if args.json:
        out = Path(args.json)
        out.parent.mkdir(parents=True, exist_ok=True)
        payload = dict(result.summary)
        payload["series"] = result.series
        out.write_text(json.dumps(payload, indent=1) + "\n", encoding="utf-8")
        print(f"  json: {out}")
    if args.plot:
        from sim_radio import plots

        for path in plots.write(result, args.plot, width_m=sc.width_m, height_m=sc.height_m,
                                title=sc.name, coverage=sc.coverage):
            print(f"  plot: {path}")
    return 0


def _sweep(args: argparse.Namespace) -> int:
    from sim_radio import plots, sweep

    key, values = sweep.parse_param(args.param)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    csv_path = out / "sweep.csv"
    rows = sweep.run(args.scenario, key, values, args.seeds, csv_path, workers=args.workers)
    metrics = ["pdr", "mean_delay_s", "normalized_routing_load"]
    if any(r["ledger_share_at_backhaul"] is not None for r in rows):
        metrics += ["ledger_share_at_backhaul", "ledger_peer_bytes"]
    png = plots.sweep_plot(rows, key, metrics, out / "sweep.png")
    print(f"sim-radio sweep {args.scenario}: {key} over {values}, {args.seeds} seed(s) each")
    for value in values:
        mine = [r for r in rows if r["value"] == value]
        pdrs = [r["pdr"] for r in mine if r["pdr"] is not None]
        nrl = [r["normalized_routing_load"] for r in mine
               if r["normalized_routing_load"] is not None]
        print(f"  {key}={value}: mean PDR {_fmt(sum(pdrs) / len(pdrs) if pdrs else None)}, "
              f"mean NRL {_fmt(sum(nrl) / len(nrl) if nrl else None, 2)}")
    print(f"  csv: {csv_path}\n  plot: {png}")
    return 0


def _medium(args: argparse.Namespace) -> int:
    from sim_radio.medium_server import serve

    host, _, port = args.listen.rpartition(":")
    if not host or not port.isdigit():
        raise ScenarioError("--listen", f"expected HOST:PORT, not {args.listen!r}")
    sc = scn.load(args.scenario)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    print(f"medium: {sc.name}, {sc.nodes} nodes, listening on {host}:{port}", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(sc, host, int(port), seed=args.seed))
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sim-radio", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run a scenario in virtual time")
    r.add_argument("scenario")
    r.add_argument("--seed", type=int, default=None, help="override the scenario's seed")
    r.add_argument("--until", type=float, default=None, help="stop at this simulated time")
    r.add_argument("--json", default=None, help="write the figures to this JSON file")
    r.add_argument("--plot", default=None, help="write PNG plots into this folder")
    r.add_argument("--quiet", action="store_true", help="no progress bar")
    s = sub.add_parser("sweep", help="run a parameter sweep in parallel processes")
    s.add_argument("scenario")
    s.add_argument("--param", required=True, help="KEY=V1,V2,... e.g. mobility.pause_s=0,900")
    s.add_argument("--seeds", type=int, default=3, help="seeds per value (1..N)")
    s.add_argument("--out", default="out/sweep", help="folder for sweep.csv and sweep.png")
    s.add_argument("--workers", type=int, default=None, help="processes (default: cores)")
    m = sub.add_parser("medium", help="real-time medium for agent processes (loopback UDP)")
    m.add_argument("--scenario", required=True)
    m.add_argument("--listen", default="127.0.0.1:4270", help="HOST:PORT")
    m.add_argument("--seed", type=int, default=None)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        if args.command == "run":
            return _run(args)
        if args.command == "sweep":
            return _sweep(args)
        return _medium(args)
    except ScenarioError as exc:
        print(f"sim-radio: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
