"""sim-radio scale and Broch delivery figures, printed as JSON.

    .venv/bin/python benchmarks/sim_scale.py [--quick]

Scale: random waypoint (0-20 m/s, pause 0) at the Broch density (50 nodes per 1500 m x
300 m), 10 CBR flows of 4 x 64-byte packets/s, the full mesh protocol with signatures, the
contention model on; 50 nodes for 900 s, 200 and 1,000 nodes for 300 s. Each run is a
fresh process, so its peak memory (ru_maxrss) is its own. Broch: the shipped
scenario (20 sources) at pause 0 and 900 s. `--quick` runs a tenth of each duration.
Targets (issue 3): >= 90 simulated s per wall s at 50 nodes; 1,000 nodes x 300 s in under
3 minutes and 1 GB; Broch PDR >= 0.95 at pause 900; fewer than 14 control packets per
delivered packet.
Runs use the compiled cores when they are built and current (`make compiled`; each run's
`compiled_cores` says); MANET_PURE_PYTHON=1 measures the interpreted ones.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BROCH = ROOT / "sim-radio" / "scenarios" / "broch.toml"

KEYS = ["nodes", "sim_seconds", "wall_seconds", "sim_seconds_per_wall_second", "compiled_cores",
        "data_sent",
        "data_delivered", "pdr", "mean_delay_s", "p95_delay_s", "control_frames",
        "normalized_routing_load", "route_discoveries", "mean_route_discovery_s", "mac"]


def scale_scenario(nodes: int, duration: float) -> dict[str, Any]:
    side = math.sqrt(nodes / 50.0)
    return {
        "scenario": {"name": f"rwp_{nodes}"},
        "run": {"duration_s": duration},
        "area": {"width_m": 1500.0 * side, "height_m": 300.0 * side},
        "nodes": {"count": nodes},
        "radio": {"range_m": 250.0, "contention": True},
        "mobility": {"model": "random_waypoint", "min_speed_mps": 0.0, "max_speed_mps": 20.0,
                     "pause_s": 0.0},
        "traffic": {"model": "cbr", "flows": 10, "rate_pps": 4.0, "size_bytes": 64,
                    "start_jitter_s": min(180.0, duration / 5)},
        "coverage": {"model": "all"},
        "plot": {"times_s": []},
    }


def broch_scenario(pause: float, duration: float | None) -> dict[str, Any]:
    data = tomllib.loads(BROCH.read_text())
    data["mobility"]["pause_s"] = pause
    if duration is not None:
        data["run"]["duration_s"] = duration
        data["traffic"]["start_jitter_s"] = min(180.0, duration / 5)
    data["plot"] = {"times_s": []}
    return data


def one(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one scenario in this process; report its figures and this process's peak RSS."""
    from sim_radio import scenario as scn
    from sim_radio.engine import Simulation

    sc = scn.from_dict(spec, BROCH)
    cpu = time.process_time()
    result = Simulation(sc).run()
    cpu = time.process_time() - cpu
    out = {k: result.summary.get(k) for k in KEYS}
    # CPU time as well as wall time: on a shared machine it varies much less with the load.
    out["cpu_seconds"] = round(cpu, 2)
    out["sim_seconds_per_cpu_second"] = round(result.summary["sim_seconds"] / cpu, 2)
    out["load_average"] = [round(x, 2) for x in os.getloadavg()]
    out["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return out


def child(spec: dict[str, Any]) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, __file__, "--one", json.dumps(spec)],
                          capture_output=True, text=True, check=True)
    return dict(json.loads(proc.stdout))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true", help="a tenth of each duration")
    p.add_argument("--one", help=argparse.SUPPRESS)
    p.add_argument("--only", choices=["scale", "broch"], default=None)
    args = p.parse_args()
    if args.one:
        print(json.dumps(one(json.loads(args.one))))
        return
    f = 0.1 if args.quick else 1.0
    report: dict[str, Any] = {
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                    "processor": platform.processor() or platform.machine()},
        "quick": args.quick,
    }
    if args.only in (None, "scale"):
        report["scale"] = [child(scale_scenario(n, d * f))
                           for n, d in ((50, 900.0), (200, 300.0), (1000, 300.0))]
    if args.only in (None, "broch"):
        duration = None if not args.quick else 90.0
        report["broch"] = {f"pause_{int(pause)}": child(broch_scenario(pause, duration))
                           for pause in (0.0, 900.0)}
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
