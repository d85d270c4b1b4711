"""Reading an interchange scenario from TOML (every key is documented in docs/modules.md).

Series (generation, load, prices) are given inline (`values`, Wh or milli per kWh per slot;
or `watts`, average power per slot) or read from a CSV: an emhass-style file with a header
(`column` names it) or a headerless `timestamp,value` file, in watts, from row `offset`, times
`scale`. The CSV's step must equal the scenario's slot: nothing is resampled silently.
"""

from __future__ import annotations

import csv
import math
import tomllib
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from agent.modules.interchange.model import (
    InterchangeError,
    Scenario,
    Site,
    Vehicle,
    build_scenario,
)

SCENARIO_KEYS = {"name", "slot_minutes", "slots", "start", "threshold_wh", "move_cost",
                 "stored_energy_value", "road_factor", "speed_kmh", "departure_every",
                 "site", "vehicle", "travel"}
SITE_KEYS = {"id", "aggregator", "lat", "lon", "generation", "load", "import_price",
             "export_price"}
VEHICLE_KEYS = {"id", "capacity_kwh", "energy_kwh", "min_kwh", "final_kwh", "charge_kw",
                "discharge_kw", "efficiency", "consumption_wh_per_km", "start_site",
                "end_site", "available_from", "available_until"}
SERIES_KEYS = {"values", "watts", "csv", "column", "offset", "scale"}


def _unknown(where: str, table: Mapping[str, Any], allowed: set[str]) -> None:
    extra = sorted(set(table) - allowed)
    if extra:
        raise InterchangeError(f"{where}: unknown keys {extra}; allowed {sorted(allowed)}")


def _num(where: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InterchangeError(f"{where}: expected a number, got {value!r}")
    return float(value)


def _csv_watts(path: Path, column: str | None, offset: int, n: int, slot_minutes: int,
               where: str) -> list[float]:
    try:
        with open(path, encoding="utf-8-sig", newline="") as fh:
            rows = [r for r in csv.reader(fh) if r]
    except OSError as exc:
        raise InterchangeError(f"{where}: cannot read {path}: {exc.strerror}") from exc
    if not rows:
        raise InterchangeError(f"{where}: {path} is empty")
    header = rows[0]
    if column is not None:
        if column not in header:
            raise InterchangeError(f"{where}: {path} has no column {column!r} ({header})")
        col, rows = header.index(column), rows[1:]
    else:
        col = 1
    data = rows[offset:offset + n]
    if len(data) < n:
        raise InterchangeError(f"{where}: {path} has {len(rows) - offset} rows from offset "
                               f"{offset}, need {n}")
    try:
        stamps = [datetime.fromisoformat(r[0]) for r in data[:2]]
        values = [float(r[col]) for r in data]
    except (ValueError, IndexError) as exc:
        raise InterchangeError(f"{where}: {path}: bad row ({exc})") from exc
    if len(stamps) == 2 and (stamps[1] - stamps[0]).total_seconds() != slot_minutes * 60:
        raise InterchangeError(f"{where}: {path} steps {stamps[1] - stamps[0]}, the scenario "
                               f"slot is {slot_minutes} min")
    return values


def _series(where: str, spec: Any, n: int, slot_minutes: int, base: Path,
            energy: bool) -> tuple[int, ...]:
    """A per-slot integer series (Wh when `energy`, else milli per kWh)."""
    if isinstance(spec, int | float) and not isinstance(spec, bool):
        return tuple([round(_num(where, spec))] * n)
    if isinstance(spec, list):
        spec = {"values": spec}
    if not isinstance(spec, dict):
        raise InterchangeError(f"{where}: expected a number, a list or a table")
    _unknown(where, spec, SERIES_KEYS)
    scale = _num(where, spec.get("scale", 1.0))
    if "values" in spec:
        raw = [_num(where, x) * scale for x in spec["values"]]
    elif "watts" in spec or "csv" in spec:
        if not energy:
            raise InterchangeError(f"{where}: prices are given as values, not watts")
        watts = [_num(where, x) for x in spec["watts"]] if "watts" in spec else _csv_watts(
            base / str(spec["csv"]), spec.get("column"), int(spec.get("offset", 0)), n,
            slot_minutes, where)
        raw = [w * scale * slot_minutes / 60.0 for w in watts]
    else:
        raise InterchangeError(f"{where}: give values, watts or csv")
    if len(raw) != n:
        raise InterchangeError(f"{where}: {len(raw)} values, the scenario has {n} slots")
    if energy and min(raw) < 0:
        raise InterchangeError(f"{where}: negative energy")
    return tuple(round(x) for x in raw)


def load_scenario(path: str | Path) -> Scenario:
    p = Path(path)
    try:
        doc = tomllib.loads(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InterchangeError(f"cannot read scenario {p}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise InterchangeError(f"{p}: not valid TOML: {exc}") from exc
    return scenario_from_dict(doc, base=p.parent, name=p.stem)


def scenario_from_dict(doc: Mapping[str, Any], *, base: Path, name: str = "scenario"
                       ) -> Scenario:
    _unknown("scenario", doc, SCENARIO_KEYS)
    try:
        slot_minutes = int(doc.get("slot_minutes", 30))
        n = int(doc["slots"])
    except (KeyError, TypeError, ValueError) as exc:
        raise InterchangeError("scenario: 'slots' (and slot_minutes) must be integers") from exc
    sites = []
    for k, s in enumerate(doc.get("site") or []):
        where = f"site[{k}]"
        _unknown(where, s, SITE_KEYS)
        try:
            sid = str(s["id"])
            sites.append(Site(
                sid, str(s.get("aggregator", "")), _num(where + ".lat", s["lat"]),
                _num(where + ".lon", s["lon"]),
                _series(f"{sid}.generation", s.get("generation", 0), n, slot_minutes, base,
                        True),
                _series(f"{sid}.load", s.get("load", 0), n, slot_minutes, base, True),
                _series(f"{sid}.import_price", s["import_price"], n, slot_minutes, base, False),
                _series(f"{sid}.export_price", s["export_price"], n, slot_minutes, base,
                        False)))
        except KeyError as exc:
            raise InterchangeError(f"{where}: missing key {exc}") from exc
    vehicles = []
    for k, v in enumerate(doc.get("vehicle") or []):
        where = f"vehicle[{k}]"
        _unknown(where, v, VEHICLE_KEYS)
        try:
            kwh = {key: round(_num(f"{where}.{key}", v[key]) * 1000)
                   for key in ("capacity_kwh", "energy_kwh", "min_kwh", "final_kwh",
                               "charge_kw", "discharge_kw")}
            vehicles.append(Vehicle(
                str(v["id"]), kwh["capacity_kwh"], kwh["energy_kwh"], kwh["min_kwh"],
                kwh["final_kwh"], kwh["charge_kw"], kwh["discharge_kw"],
                _num(where, v.get("efficiency", 0.92)),
                round(_num(where, v.get("consumption_wh_per_km", 180))),
                str(v["start_site"]), str(v.get("end_site", v["start_site"])),
                int(v.get("available_from", 0)), int(v.get("available_until", n))))
        except KeyError as exc:
            raise InterchangeError(f"{where}: missing key {exc}") from exc
    override: dict[tuple[str, str], tuple[float, float]] = {}
    for k, t in enumerate(doc.get("travel") or []):
        where = f"travel[{k}]"
        _unknown(where, t, {"from", "to", "minutes", "km", "both_ways"})
        try:
            leg = (_num(where, t["minutes"]), _num(where, t["km"]))
            override[(str(t["from"]), str(t["to"]))] = leg
            if t.get("both_ways", True):
                override[(str(t["to"]), str(t["from"]))] = leg
        except KeyError as exc:
            raise InterchangeError(f"{where}: missing key {exc}") from exc
    stored = doc.get("stored_energy_value")
    return build_scenario(
        name=str(doc.get("name", name)), slot_minutes=slot_minutes, n_slots=n, sites=sites,
        vehicles=vehicles, road_factor=_num("road_factor", doc.get("road_factor", 1.3)),
        speed_kmh=_num("speed_kmh", doc.get("speed_kmh", 40.0)), travel_override=override,
        threshold_wh=int(doc.get("threshold_wh", 0)),
        move_cost_milli=int(doc.get("move_cost", 0)),
        stored_value=None if stored is None else int(stored),
        departure_every=int(doc.get("departure_every", 1)),
        start_label=str(doc.get("start", "")))
