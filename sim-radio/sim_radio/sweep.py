"""Parameter sweeps: every (value, seed) pair is one run in a pool of processes."""

from __future__ import annotations

import copy
import csv
import os
import tomllib
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from sim_radio import scenario as scn
from sim_radio.engine import Simulation
from sim_radio.errors import ScenarioError

COLUMNS = ["value", "seed", "nodes", "sim_seconds", "wall_seconds", "data_sent",
           "data_delivered", "pdr", "mean_delay_s", "p95_delay_s", "control_frames",
           "control_bytes", "normalized_routing_load", "route_discoveries",
           "mean_route_discovery_s", "gateway_reachability"]
LEDGER_COLUMNS = ["share_at_backhaul", "mean_lag_s", "mesh_bytes", "peer_bytes"]
"""Figures of `[ledger]` runs, as `ledger_<name>` columns (empty for runs without ledgers)."""


def parse_param(spec: str) -> tuple[str, list[Any]]:
    """"mobility.pause_s=0,300,900" -> ("mobility.pause_s", [0, 300, 900]) (TOML values)."""
    if "=" not in spec:
        raise ScenarioError("--param", f"expected KEY=V1,V2,... not {spec!r}")
    key, _, raw = spec.partition("=")
    values = []
    for text in raw.split(","):
        try:
            values.append(tomllib.loads(f"v = {text.strip()}")["v"])
        except tomllib.TOMLDecodeError:
            values.append(text.strip())
    if not key or not values:
        raise ScenarioError("--param", f"expected KEY=V1,V2,... not {spec!r}")
    return key.strip(), values


def with_value(data: dict[str, Any], key: str, value: Any) -> dict[str, Any]:
    """A copy of a parsed scenario with the dotted `key` set to `value`."""
    out = copy.deepcopy(data)
    node = out
    parts = key.split(".")
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ScenarioError(key, f"{part!r} is not a table")
        node = child
    node[parts[-1]] = value
    return out


def _one(job: tuple[str, dict[str, Any], Any, int]) -> dict[str, Any]:
    path, data, value, seed = job
    sc = scn.from_dict(data, Path(path))
    result = Simulation(sc, seed).run()
    row = {k: result.summary.get(k) for k in COLUMNS if k not in ("value", "seed")}
    row.update(value=value, seed=seed)
    ledger = result.summary.get("ledger") or {}
    row.update({f"ledger_{k}": ledger.get(k) for k in LEDGER_COLUMNS})
    return row


def run(path: str | Path, key: str, values: list[Any], seeds: int, out_csv: str | Path,
        *, workers: int | None = None, base_seed: int = 1) -> list[dict[str, Any]]:
    """Run every value with seeds base_seed..base_seed+seeds-1; write and return the rows."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ScenarioError(str(path), f"cannot read: {exc}") from exc
    jobs: list[tuple[str, dict[str, Any], Any, int]] = []
    for value in values:
        variant = with_value(data, key, value)
        scn.from_dict(variant, path)  # refuse a bad value before starting any run
        jobs.extend((str(path), variant, value, base_seed + k) for k in range(seeds))
    workers = workers or min(len(jobs), os.cpu_count() or 1)
    if workers <= 1:
        rows = [_one(job) for job in jobs]
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            rows = list(pool.map(_one, jobs))
    with open(out_csv, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS + [f"ledger_{k}" for k in LEDGER_COLUMNS])
        writer.writeheader()
        for row in rows:
            writer.writerow(row)
    return rows
