"""Import of SUMO floating car data (FCD) XML as waypoint traces.

    <fcd-export><timestep time="0.00"><vehicle id="veh0" x="5.1" y="20.0" .../></timestep>

Vehicles (and persons) become nodes in order of first appearance. Before it first appears
a vehicle waits at its first position, and after it last appears it stays at its last one
(a parked car keeps its radio on).
"""

from __future__ import annotations

import math
import xml.parsers.expat
from dataclasses import dataclass
from pathlib import Path

from sim_radio.errors import TraceError


@dataclass(slots=True)
class SumoTrace:
    ids: list[str]
    paths: list[list[tuple[float, float, float]]]


def parse_fcd(path: Path) -> SumoTrace:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise TraceError(str(path), f"cannot read: {exc}") from exc
    parser = xml.parsers.expat.ParserCreate()
    index: dict[str, int] = {}
    paths: list[list[tuple[float, float, float]]] = []
    state: dict[str, float | None] = {"time": None}

    def where() -> str:
        return f"{path}:{parser.CurrentLineNumber}"

    def number(attrs: dict[str, str], key: str) -> float:
        try:
            value = float(attrs[key])
        except KeyError:
            raise TraceError(where(), f"missing attribute {key!r}") from None
        except ValueError:
            raise TraceError(where(), f"{key}={attrs[key]!r} is not a number") from None
        if not math.isfinite(value):
            raise TraceError(where(), f"{key} must be finite")
        return value

    def start(name: str, attrs: dict[str, str]) -> None:
        if name == "timestep":
            t = number(attrs, "time")
            last = state["time"]
            if last is not None and t < last:
                raise TraceError(where(), f"time {t} goes back from {last}")
            state["time"] = t
        elif name in ("vehicle", "person", "container"):
            now = state["time"]
            if now is None:
                raise TraceError(where(), f"<{name}> outside a <timestep>")
            vid = attrs.get("id")
            if not vid:
                raise TraceError(where(), f"<{name}> without an id")
            x, y = number(attrs, "x"), number(attrs, "y")
            i = index.setdefault(vid, len(paths))
            if i == len(paths):
                paths.append([])
            paths[i].append((now, x, y))
        elif name not in ("fcd-export",):
            raise TraceError(where(), f"unexpected element <{name}> in an FCD file")

    parser.StartElementHandler = start
    try:
        parser.Parse(data, True)
    except xml.parsers.expat.ExpatError as exc:
        raise TraceError(f"{path}:{exc.lineno}", f"not well-formed XML: {exc}") from exc
    if not paths:
        raise TraceError(str(path), "no vehicles in this FCD file")
    for p in paths:
        if p[0][0] > 0.0:
            p.insert(0, (0.0, p[0][1], p[0][2]))
    return SumoTrace(list(index), paths)
