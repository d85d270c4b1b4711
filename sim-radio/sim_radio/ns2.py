"""Import of ns-2 (CMU Monarch) movement files and cbrgen traffic files.

Movement (setdest output):
    $node_(i) set X_ x       (also Y_, Z_; Z is ignored)
    $ns_ at t "$node_(i) setdest x y speed"
`$god_` lines (shortest-hop hints) and comments are skipped. Traffic (cbrgen output):
UDP agents with CBR applications (packetSize_, interval_, random_, maxpkts_) connected to
Null sinks and started with `$ns_ at t "$cbr_(k) start"`. TCP/FTP pairs, which cbrgen also
writes, are read and reported as skipped (the mesh carries datagrams only). Any other line
is an error naming the file and line: nothing runs on a half-read trace.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from sim_radio.errors import TraceError

_NUM = r"(-?\d+(?:\.\d*)?(?:[eE][-+]?\d+)?)"
_SET = re.compile(r"^\$node_\((\d+)\)\s+set\s+([XYZ])_\s+" + _NUM + r"$")
_SETDEST = re.compile(
    r'^\$ns_\s+at\s+' + _NUM + r'\s+"\$node_\((\d+)\)\s+setdest\s+' + _NUM + r"\s+" + _NUM
    + r"\s+" + _NUM + r'\s*"$'
)
_GOD = re.compile(r"^(\$god_\s|\$ns_\s+at\s+" + _NUM + r'\s+"\$god_\s|set\s+god_\s)')


@dataclass(slots=True)
class Ns2Movement:
    """Per node: waypoints (t, x, y), ready for `mobility.from_waypoints`."""

    paths: list[list[tuple[float, float, float]]]
    setdests: int


def _read(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise TraceError(str(path), f"cannot read: {exc}") from exc


def parse_movement(path: Path) -> Ns2Movement:
    """Read a setdest movement file into per-node waypoint lists."""
    starts: dict[int, dict[str, float]] = {}
    moves: list[tuple[float, int, int, float, float, float]] = []
    for lineno, raw in enumerate(_read(path), 1):
        line = raw.strip()
        if not line or line.startswith("#") or _GOD.match(line):
            continue
        if m := _SET.match(line):
            starts.setdefault(int(m[1]), {})[m[2] + "_"] = float(m[3])
            continue
        if m := _SETDEST.match(line):
            t, node, x, y, speed = float(m[1]), int(m[2]), float(m[3]), float(m[4]), float(m[5])
            if t < 0 or speed < 0 or not all(map(math.isfinite, (t, x, y, speed))):
                raise TraceError(f"{path}:{lineno}", f"bad time, position or speed: {line!r}")
            moves.append((t, lineno, node, x, y, speed))
            continue
        raise TraceError(f"{path}:{lineno}", f"not an ns-2 movement line: {line!r}")
    if not starts and not moves:
        raise TraceError(str(path), "no nodes in this movement file")
    count = max([*starts, *(m[2] for m in moves)]) + 1
    paths: list[list[tuple[float, float, float]]] = []
    for i in range(count):
        start = starts.get(i, {})
        if "X_" not in start or "Y_" not in start:
            raise TraceError(str(path), f"$node_({i}) has no initial X_ and Y_")
        paths.append([(0.0, start["X_"], start["Y_"])])
    for t, _, node, x, y, speed in sorted(moves):
        path_i = paths[node]
        lt, lx, ly = path_i[-1]
        if lt > t:
            # Still moving at t: cut the leg where the node is at time t.
            pt, px, py = path_i[-2]
            f = (t - pt) / (lt - pt) if lt > pt else 1.0
            path_i[-1] = (t, px + (lx - px) * f, py + (ly - py) * f)
        else:
            path_i.append((t, lx, ly))
        _, cx, cy = path_i[-1]
        if speed > 0:
            path_i.append((t + math.hypot(x - cx, y - cy) / speed, x, y))
    return Ns2Movement(paths, len(moves))


@dataclass(slots=True)
class Ns2Flow:
    """One cbrgen CBR connection."""

    src: int
    dst: int
    size_bytes: int
    interval_s: float
    random: bool
    max_packets: int
    start_s: float


@dataclass(slots=True)
class Ns2Traffic:
    flows: list[Ns2Flow]
    skipped: list[str] = field(default_factory=list)
    """Connections read but not simulated (TCP/FTP), one description each."""


_AGENT = re.compile(r"^set\s+(\w+)(?:_\((\d+)\))?\s+\[new\s+(Agent|Application)/([\w/]+)\]$")
_ATTACH_NODE = re.compile(r"^\$ns_\s+attach-agent\s+\$node_\((\d+)\)\s+\$(\w+)(?:_\((\d+)\))?$")
_ATTACH_APP = re.compile(r"^\$(\w+)(?:_\((\d+)\))?\s+attach-agent\s+\$(\w+)(?:_\((\d+)\))?$")
_SET_PARAM = re.compile(r"^\$(\w+)(?:_\((\d+)\))?\s+set\s+(\w+)\s+(\S+)$")
_CONNECT = re.compile(r"^\$ns_\s+connect\s+\$(\w+)(?:_\((\d+)\))?\s+\$(\w+)(?:_\((\d+)\))?$")
_START = re.compile(r'^\$ns_\s+at\s+' + _NUM + r'\s+"\$(\w+)(?:_\((\d+)\))?\s+start"$')


def _name(base: str, index: str | None) -> str:
    return base if index is None else f"{base}_({index})"


def parse_traffic(path: Path) -> Ns2Traffic:
    """Read a cbrgen traffic file into CBR flows (node indexes as in the file)."""
    kinds: dict[str, str] = {}
    node_of: dict[str, int] = {}
    params: dict[str, dict[str, str]] = {}
    app_agent: dict[str, str] = {}
    peer: dict[str, str] = {}
    starts: list[tuple[str, float, int]] = []
    for lineno, raw in enumerate(_read(path), 1):
        line = raw.strip()
        where = f"{path}:{lineno}"
        if not line or line.startswith("#"):
            continue
        if m := _AGENT.match(line):
            kinds[_name(m[1], m[2])] = m[4]
        elif m := _ATTACH_NODE.match(line):
            node_of[_name(m[2], m[3])] = int(m[1])
        elif m := _ATTACH_APP.match(line):
            app_agent[_name(m[1], m[2])] = _name(m[3], m[4])
        elif m := _SET_PARAM.match(line):
            params.setdefault(_name(m[1], m[2]), {})[m[3]] = m[4]
        elif m := _CONNECT.match(line):
            a, b = _name(m[1], m[2]), _name(m[3], m[4])
            peer[a] = b
        elif m := _START.match(line):
            starts.append((_name(m[2], m[3]), float(m[1]), lineno))
        else:
            raise TraceError(where, f"not a cbrgen traffic line: {line!r}")
    flows: list[Ns2Flow] = []
    skipped: list[str] = []
    for app, start, lineno in starts:
        where = f"{path}:{lineno}"
        kind = kinds.get(app)
        if kind is None:
            raise TraceError(where, f"{app} is started but never created")
        agent = app_agent.get(app)
        if agent is None or agent not in node_of:
            raise TraceError(where, f"{app} is not attached to an agent on a node")
        sink = peer.get(agent)
        if sink is None or sink not in node_of:
            raise TraceError(where, f"{agent} is not connected to an agent on a node")
        if kind != "Traffic/CBR":
            skipped.append(f"{kind} from node {node_of[agent]} to node {node_of[sink]} "
                           f"at {start:g} s (only CBR over UDP is simulated)")
            continue
        p = params.get(app, {})
        try:
            size = int(float(p.get("packetSize_", "512")))
            interval = float(p.get("interval_", "1.0"))
            rand = p.get("random_", "0") not in ("0", "false")
            maxpkts = int(float(p.get("maxpkts_", "268435456")))
        except ValueError as exc:
            raise TraceError(str(path), f"{app}: bad parameter: {exc}") from exc
        if size <= 0 or interval <= 0 or maxpkts <= 0 or start < 0:
            raise TraceError(where, f"{app}: size, interval, maxpkts and start must be positive")
        flows.append(Ns2Flow(node_of[agent], node_of[sink], size, interval, rand, maxpkts,
                             start))
    if not flows and not skipped:
        raise TraceError(str(path), "no started connections in this traffic file")
    return Ns2Traffic(flows, skipped)
