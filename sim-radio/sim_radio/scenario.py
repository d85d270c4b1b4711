"""Scenario files (TOML): strict loading into typed specs, and building them for one seed.

Every key is checked: an unknown key, a wrong type or a value out of range is refused with
a `ScenarioError` naming the file and the key. Paths inside a scenario are relative to the
scenario file. Random parts (positions, random flows) are drawn when the scenario is built
for a seed, so `--seed` gives another sample of the same scenario.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from random import Random
from typing import Any

from mesh.config import BLE, BLE_MIN, WIFI, LinkProfile, MeshConfig
from sim_radio import mobility as mob
from sim_radio import ns2, sumo
from sim_radio.coverage import Area, Cell, Coverage, Scheduled
from sim_radio.errors import ScenarioError
from sim_radio.radio import LogDistance, RadioModel, UnitDisk
from sim_radio.traffic import MIN_SIZE, Flow

KINDS: dict[str, LinkProfile] = {"wifi": WIFI, "ble": BLE, "ble23": BLE_MIN}
"""Interface kinds a scenario may give its nodes (profiles from mesh.config)."""

_MISSING = object()


class _Table:
    """One TOML table read key by key; leftovers are unknown keys and refused."""

    def __init__(self, data: Any, where: str) -> None:
        if not isinstance(data, dict):
            raise ScenarioError(where, "must be a table")
        self.data: dict[str, Any] = data
        self.where = where
        self.used: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.where}.{name}" if self.where else name

    def has(self, name: str) -> bool:
        return name in self.data

    def raw(self, name: str, default: Any = _MISSING) -> Any:
        self.used.add(name)
        if name not in self.data:
            if default is _MISSING:
                raise ScenarioError(self.key(name), "is required")
            return default
        return self.data[name]

    def num(self, name: str, default: Any = _MISSING, *, low: float | None = None,
            high: float | None = None, positive: bool = False) -> float:
        value = self.raw(name, default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ScenarioError(self.key(name), f"must be a number, not {value!r}")
        value = float(value)
        if not math.isfinite(value) and value != math.inf:
            raise ScenarioError(self.key(name), "must be finite")
        if positive and value <= 0:
            raise ScenarioError(self.key(name), f"must be > 0, not {value}")
        if low is not None and value < low:
            raise ScenarioError(self.key(name), f"must be >= {low}, not {value}")
        if high is not None and value > high:
            raise ScenarioError(self.key(name), f"must be <= {high}, not {value}")
        return value

    def integer(self, name: str, default: Any = _MISSING, *, low: int | None = None) -> int:
        value = self.raw(name, default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ScenarioError(self.key(name), f"must be an integer, not {value!r}")
        if low is not None and value < low:
            raise ScenarioError(self.key(name), f"must be >= {low}, not {value}")
        return value

    def text(self, name: str, default: Any = _MISSING, choices: tuple[str, ...] = ()) -> str:
        value = self.raw(name, default)
        if not isinstance(value, str):
            raise ScenarioError(self.key(name), f"must be a string, not {value!r}")
        if choices and value not in choices:
            raise ScenarioError(self.key(name), f"must be one of {', '.join(choices)}, "
                                                f"not {value!r}")
        return value

    def flag(self, name: str, default: Any = _MISSING) -> bool:
        value = self.raw(name, default)
        if not isinstance(value, bool):
            raise ScenarioError(self.key(name), f"must be true or false, not {value!r}")
        return value

    def array(self, name: str, default: Any = _MISSING) -> list[Any]:
        value = self.raw(name, default)
        if not isinstance(value, list):
            raise ScenarioError(self.key(name), f"must be an array, not {value!r}")
        return value

    def sub(self, name: str) -> _Table:
        return _Table(self.raw(name, {}), self.key(name))

    def tables(self, name: str) -> list[_Table]:
        return [_Table(item, f"{self.key(name)}[{k}]")
                for k, item in enumerate(self.array(name, []))]

    def done(self) -> None:
        unknown = sorted(set(self.data) - self.used)
        if unknown:
            raise ScenarioError(self.key(unknown[0]), "unknown key")


def _point(value: Any, where: str) -> tuple[float, float]:
    if (not isinstance(value, list) or len(value) != 2
            or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)):
        raise ScenarioError(where, f"must be [x, y] in metres, not {value!r}")
    return float(value[0]), float(value[1])


@dataclass(frozen=True, slots=True)
class Interface:
    """One radio interface of every node: its core name, link profile and radio model."""

    name: str
    profile: LinkProfile
    radio: RadioModel


@dataclass(frozen=True, slots=True)
class Move:
    """A scripted jump of a node to a new place at a given time (static scenarios)."""

    node: int
    at_s: float
    to: tuple[float, float]


@dataclass(frozen=True, slots=True)
class LedgerSpec:
    """`[ledger]`: every node's ledger and its sync with a simulated backhaul
    (sim_radio.ledgers)."""

    enabled: bool = False
    block_delay_s: float = 2.0
    sync_interval_s: float = 60.0
    retry_s: float = 5.0
    rto_s: float = 2.0
    fetch_through_gateways: bool = False
    peer_sync: bool = True
    peer_sync_interval_s: float = 30.0


@dataclass(slots=True)
class Scenario:
    """A validated scenario; `build_mobility` and `build_flows` draw its random parts."""

    path: Path
    name: str
    description: str
    seed: int
    duration_s: float
    nodes: int
    width_m: float
    height_m: float
    interfaces: list[Interface]
    contention: bool
    carrier_sense_factor: float
    mac_retries: int
    link_loss: dict[tuple[int, int], float]
    mobility_model: str
    mobility: dict[str, Any]
    moves: list[Move]
    coverage: Coverage
    traffic_model: str
    traffic: dict[str, Any]
    mesh: MeshConfig
    sample_interval_s: float
    grid_refresh_s: float
    plot_times_s: list[float]
    notes: list[str] = field(default_factory=list)
    trace_paths: list[list[tuple[float, float, float]]] | None = None
    ns2_traffic: ns2.Ns2Traffic | None = None
    ledger: LedgerSpec = field(default_factory=LedgerSpec)

    def build_mobility(self, rng: Random) -> mob.Mobility:
        m = self.mobility
        model = self.mobility_model
        if model == "static":
            positions = m["positions"] or mob.uniform_positions(self.nodes, self.width_m,
                                                                self.height_m, rng)
            built = mob.static(positions, self.width_m, self.height_m)
        elif model == "random_waypoint":
            built = mob.random_waypoint(self.nodes, self.width_m, self.height_m,
                                        min_speed_mps=m["min_speed_mps"],
                                        max_speed_mps=m["max_speed_mps"],
                                        pause_s=m["pause_s"], rng=rng)
        elif model == "manhattan":
            built = mob.manhattan(self.nodes, self.width_m, self.height_m,
                                  block_m=m["block_m"], min_speed_mps=m["min_speed_mps"],
                                  max_speed_mps=m["max_speed_mps"], pause_s=m["pause_s"],
                                  turn_probability=m["turn_probability"], rng=rng)
        else:
            assert self.trace_paths is not None
            built = mob.from_waypoints(self.trace_paths, self.width_m, self.height_m)
        for move in self.moves:
            tr = built.trajectories[move.node]
            x, y = tr.position(move.at_s)
            tr.add(move.at_s, x, y)
            tr.add(move.at_s, *move.to)
        return built

    def build_flows(self, rng: Random) -> list[Flow]:
        t = self.traffic
        end = self.duration_s
        if self.traffic_model == "none":
            return []
        if self.traffic_model == "ns2":
            assert self.ns2_traffic is not None
            return [Flow(k, f.src, f.dst, f.interval_s, f.size_bytes, f.start_s, end,
                         f.max_packets, f.random)
                    for k, f in enumerate(self.ns2_traffic.flows)]
        flows: list[Flow] = []
        interval = 1.0 / t["rate_pps"]
        for k in range(t["flows"]):
            src = rng.randrange(self.nodes)
            if t["dest"] == "backhaul":
                dst: int | None = None
            else:
                dst = rng.randrange(self.nodes - 1)
                dst += dst >= src
            start = t["start_s"] + rng.uniform(0.0, t["start_jitter_s"])
            flows.append(Flow(k, src, dst, interval, t["size_bytes"], start,
                              min(t["stop_s"], end), random=t["random"]))
        for spec in t["explicit"]:
            flows.append(dataclasses.replace(spec, index=len(flows), stop_s=min(spec.stop_s, end)))
        return flows


def _interfaces(radio: _Table, kinds: list[str], nodes_where: str) -> list[Interface]:
    model = radio.text("model", "unit_disk", ("unit_disk", "log_distance"))
    default_range = radio.num("range_m", None, positive=True) if radio.has("range_m") else None
    loss = radio.num("loss", 0.0, low=0.0, high=1.0)
    tx_power = radio.num("tx_power_dbm", 16.0)
    ref_loss = radio.num("reference_loss_db", 40.0)
    exponent = radio.num("path_loss_exponent", 3.0, positive=True)
    shadowing = radio.num("shadowing_db", 4.0, low=0.0)
    threshold = radio.num("threshold_dbm", None) if radio.has("threshold_dbm") else None
    if model == "unit_disk":
        for key in ("tx_power_dbm", "reference_loss_db", "path_loss_exponent", "shadowing_db",
                    "threshold_dbm"):
            if radio.has(key):
                raise ScenarioError(radio.key(key), 'only applies to model = "log_distance"')
    result = []
    seen: dict[str, int] = {}
    for kind in kinds:
        if kind not in KINDS:
            raise ScenarioError(nodes_where, f"unknown interface kind {kind!r} "
                                             f"(known: {', '.join(KINDS)})")
        base = KINDS[kind]
        over = radio.sub(kind)
        rng_m = over.num("range_m", default_range or base.range_m, positive=True)
        profile = dataclasses.replace(
            base, range_m=rng_m,
            bitrate_bps=over.integer("bitrate_bps", base.bitrate_bps, low=1000),
            mtu=over.integer("mtu", base.mtu, low=16))
        kind_loss = over.num("loss", loss, low=0.0, high=1.0)
        over.done()
        radio_model: RadioModel
        if model == "unit_disk":
            radio_model = UnitDisk(rng_m, kind_loss)
        else:
            thr = threshold if threshold is not None else (
                tx_power - ref_loss - 10 * exponent * math.log10(rng_m))
            radio_model = LogDistance(tx_power, ref_loss, exponent, shadowing, thr, kind_loss)
        seen[kind] = seen.get(kind, -1) + 1
        result.append(Interface(f"{kind}{seen[kind]}", profile, radio_model))
    for key in list(radio.data):
        if key in KINDS and key not in kinds:
            raise ScenarioError(radio.key(key), f"no node has a {key!r} interface")
    return result


def load(path: str | Path) -> Scenario:
    """Read and validate a scenario file."""
    path = Path(path)
    where = str(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ScenarioError(where, f"cannot read: {exc}") from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ScenarioError(where, f"not valid TOML: {exc}") from exc
    return from_dict(data, path)


def from_dict(data: dict[str, Any], path: Path) -> Scenario:
    """Validate a parsed scenario (`path` anchors relative file names and error messages)."""
    try:
        return _from_dict(data, path)
    except ScenarioError as exc:
        if isinstance(exc, ns2.TraceError):
            raise
        raise ScenarioError(f"{path}: {exc.where}", exc.message) from None


def _file(table: _Table, base: Path) -> Path:
    value = table.text("file")
    return (base.parent / value).resolve()


def _from_dict(data: dict[str, Any], path: Path) -> Scenario:
    top = _Table(data, "")
    meta = top.sub("scenario")
    name = meta.text("name", path.stem)
    description = meta.text("description", "")
    meta.done()

    run = top.sub("run")
    duration = run.num("duration_s", positive=True)
    seed = run.integer("seed", 1, low=0)
    sample = run.num("sample_interval_s", 1.0, positive=True)
    refresh = run.num("grid_refresh_s", 0.25, positive=True)
    run.done()

    area = top.sub("area")
    width = area.num("width_m", 1000.0, positive=True)
    height = area.num("height_m", 1000.0, positive=True)
    area.done()

    notes: list[str] = []
    mobility = top.sub("mobility")
    model = mobility.text("model", "static",
                         ("static", "random_waypoint", "manhattan", "ns2", "sumo"))
    mparams: dict[str, Any] = {}
    trace_paths = None
    if model == "static":
        mparams["positions"] = [_point(p, f"{mobility.key('positions')}[{k}]")
                                for k, p in enumerate(mobility.array("positions", []))]
    elif model in ("random_waypoint", "manhattan"):
        mparams["min_speed_mps"] = mobility.num("min_speed_mps", 0.0, low=0.0)
        mparams["max_speed_mps"] = mobility.num("max_speed_mps", positive=True)
        if mparams["max_speed_mps"] < mparams["min_speed_mps"]:
            raise ScenarioError(mobility.key("max_speed_mps"), "is below min_speed_mps")
        mparams["pause_s"] = mobility.num("pause_s", 0.0, low=0.0)
        if model == "manhattan":
            mparams["block_m"] = mobility.num("block_m", 200.0, positive=True)
            mparams["turn_probability"] = mobility.num("turn_probability", 0.5, low=0.0,
                                                       high=1.0)
    else:
        trace = _file(mobility, path)
        if model == "ns2":
            trace_paths = ns2.parse_movement(trace).paths
        else:
            parsed = sumo.parse_fcd(trace)
            trace_paths = parsed.paths
            notes.append(f"SUMO vehicles {', '.join(parsed.ids[:5])}"
                         f"{' ...' if len(parsed.ids) > 5 else ''} are nodes 0..")
    moves_spec = mobility.tables("moves")
    mobility.done()

    nodes_t = top.sub("nodes")
    if trace_paths is not None:
        count = nodes_t.integer("count", len(trace_paths), low=1)
        if count != len(trace_paths):
            raise ScenarioError(nodes_t.key("count"),
                                f"is {count} but the trace has {len(trace_paths)} nodes")
        if not area.has("width_m"):
            width = max(max(x for _, x, _ in p) for p in trace_paths) or width
        if not area.has("height_m"):
            height = max(max(y for _, _, y in p) for p in trace_paths) or height
    elif model == "static" and mparams["positions"]:
        count = nodes_t.integer("count", len(mparams["positions"]), low=1)
        if count != len(mparams["positions"]):
            raise ScenarioError(nodes_t.key("count"),
                                f"is {count} but mobility.positions has "
                                f"{len(mparams['positions'])} points")
    else:
        count = nodes_t.integer("count", low=1)
    kinds = nodes_t.array("interfaces", ["wifi"])
    if not kinds or not all(isinstance(k, str) for k in kinds):
        raise ScenarioError(nodes_t.key("interfaces"), "must be a non-empty array of strings")
    nodes_t.done()

    moves = []
    for mt in moves_spec:
        node = mt.integer("node", low=0)
        if node >= count:
            raise ScenarioError(mt.key("node"), f"no node {node} (there are {count})")
        moves.append(Move(node, mt.num("at_s", low=0.0), _point(mt.raw("to"), mt.key("to"))))
        mt.done()

    radio = top.sub("radio")
    interfaces = _interfaces(radio, kinds, nodes_t.key("interfaces"))
    contention = radio.flag("contention", True)
    cs_factor = radio.num("carrier_sense_factor", 2.2, low=1.0)
    retries = radio.integer("mac_retries", 3, low=0)
    link_loss: dict[tuple[int, int], float] = {}
    for lt in radio.tables("links"):
        a, b = lt.integer("a", low=0), lt.integer("b", low=0)
        if a >= count or b >= count:
            raise ScenarioError(lt.where, f"no such node (there are {count})")
        loss = lt.num("loss", low=0.0, high=1.0)
        link_loss[(a, b)] = loss
        if not lt.flag("one_way", False):
            link_loss[(b, a)] = loss
        lt.done()
    radio.done()

    cov = top.sub("coverage")
    cov_model = cov.text("model", "none", ("none", "all", "cells"))
    cells = []
    for ct in cov.tables("cells"):
        cells.append(Cell(ct.num("x"), ct.num("y"), ct.num("radius_m", positive=True)))
        ct.done()
    if cov_model == "cells" and not cells:
        raise ScenarioError(cov.key("cells"), 'model = "cells" needs at least one cell')
    if cov_model != "cells" and cells:
        raise ScenarioError(cov.key("cells"), 'only applies to model = "cells"')
    outages = []
    for ot in cov.tables("outages"):
        start, end = ot.num("start_s", 0.0, low=0.0), ot.num("end_s", math.inf)
        if ot.has("rect"):
            r = ot.array("rect")
            if len(r) != 4 or not all(isinstance(v, int | float) for v in r):
                raise ScenarioError(ot.key("rect"), "must be [x0, y0, x1, y1]")
            outages.append(Area(start, end, rect=(float(r[0]), float(r[1]), float(r[2]),
                                                   float(r[3]))))
        else:
            outages.append(Area(start, end, ot.num("x"), ot.num("y"),
                                ot.num("radius_m", positive=True)))
        if end <= start:
            raise ScenarioError(ot.key("end_s"), "must be after start_s")
        ot.done()
    scheduled = []
    for st in cov.tables("scheduled"):
        listed = st.array("nodes")
        if not all(isinstance(n, int) and 0 <= n < count for n in listed):
            raise ScenarioError(st.key("nodes"), f"must be node indexes below {count}")
        start, end = st.num("start_s", 0.0, low=0.0), st.num("end_s", math.inf)
        if end <= start:
            raise ScenarioError(st.key("end_s"), "must be after start_s")
        scheduled.append(Scheduled(frozenset(listed), start, end))
        st.done()
    coverage = Coverage(cov_model, tuple(cells), tuple(outages), tuple(scheduled),
                        cov.text("technology", "lte"), cov.integer("rtt_ms", 60, low=0),
                        cov.num("check_interval_s", 1.0, positive=True))
    cov.done()

    mesh_t = top.sub("mesh")
    mesh_kw: dict[str, Any] = {}
    fields = {f.name: f for f in dataclasses.fields(MeshConfig)}
    for key, value in mesh_t.data.items():
        if key not in fields:
            raise ScenarioError(mesh_t.key(key), "unknown key (not a MeshConfig field)")
        default = getattr(MeshConfig(), key)
        ok = (isinstance(value, bool) if isinstance(default, bool)
              else isinstance(value, int) and not isinstance(value, bool)
              if isinstance(default, int)
              else isinstance(value, int | float) and not isinstance(value, bool))
        if not ok:
            raise ScenarioError(mesh_t.key(key), f"must be of the type of {default!r}")
        mesh_kw[key] = float(value) if isinstance(default, float) else value
        mesh_t.used.add(key)
    mesh_t.done()
    mesh = MeshConfig(**mesh_kw)

    traffic_t = top.sub("traffic")
    tmodel = traffic_t.text("model", "none", ("none", "cbr", "ns2"))
    tparams: dict[str, Any] = {}
    ns2_traffic = None
    max_payload = mesh.max_payload_bytes
    if tmodel == "ns2":
        ns2_traffic = ns2.parse_traffic(_file(traffic_t, path))
        for f in ns2_traffic.flows:
            if f.src >= count or f.dst >= count:
                raise ScenarioError(traffic_t.key("file"),
                                    f"flow {f.src} -> {f.dst} names a node beyond {count - 1}")
            if not MIN_SIZE <= f.size_bytes <= max_payload:
                raise ScenarioError(traffic_t.key("file"), f"packet size {f.size_bytes} "
                                    f"outside {MIN_SIZE}..{max_payload}")
        notes.extend(f"skipped from the traffic file: {s}" for s in ns2_traffic.skipped)
    elif tmodel == "cbr":
        tparams["flows"] = traffic_t.integer("flows", 0, low=0)
        tparams["rate_pps"] = traffic_t.num("rate_pps", 4.0, positive=True)
        tparams["size_bytes"] = traffic_t.integer("size_bytes", 64, low=MIN_SIZE)
        tparams["start_s"] = traffic_t.num("start_s", 0.0, low=0.0)
        tparams["start_jitter_s"] = traffic_t.num("start_jitter_s", 0.0, low=0.0)
        tparams["stop_s"] = traffic_t.num("stop_s", math.inf, low=0.0)
        tparams["dest"] = traffic_t.text("dest", "node", ("node", "backhaul"))
        tparams["random"] = traffic_t.flag("random", False)
        if tparams["size_bytes"] > max_payload:
            raise ScenarioError(traffic_t.key("size_bytes"), f"must be <= {max_payload}")
        if count < 2 and tparams["flows"] and tparams["dest"] == "node":
            raise ScenarioError(traffic_t.key("flows"), "node-to-node flows need two nodes")
        explicit = []
        for ft in traffic_t.tables("flow"):
            src = ft.integer("src", low=0)
            raw_dst = ft.raw("dst")
            if raw_dst == "backhaul":
                dst = None
            elif isinstance(raw_dst, int) and not isinstance(raw_dst, bool) and raw_dst >= 0:
                dst = raw_dst
            else:
                raise ScenarioError(ft.key("dst"), 'must be a node index or "backhaul"')
            if src >= count or (dst is not None and dst >= count) or src == dst:
                raise ScenarioError(ft.where, f"src and dst must be distinct nodes below {count}")
            size = ft.integer("size_bytes", tparams["size_bytes"], low=MIN_SIZE)
            if size > max_payload:
                raise ScenarioError(ft.key("size_bytes"), f"must be <= {max_payload}")
            explicit.append(Flow(0, src, dst, 1.0 / ft.num("rate_pps", tparams["rate_pps"],
                                                            positive=True),
                                 size, ft.num("start_s", 0.0, low=0.0),
                                 ft.num("stop_s", math.inf, low=0.0),
                                 ft.integer("max_packets", 1 << 31, low=1),
                                 ft.flag("random", False)))
            ft.done()
        tparams["explicit"] = explicit
        if not tparams["flows"] and not explicit:
            raise ScenarioError(traffic_t.key("flows"), 'model = "cbr" needs flows > 0 or '
                                                        "[[traffic.flow]] tables")
    traffic_t.done()

    ledger_t = top.sub("ledger")
    ledger = LedgerSpec(ledger_t.flag("enabled", False),
                        ledger_t.num("block_delay_s", 2.0, positive=True),
                        ledger_t.num("sync_interval_s", 60.0, positive=True),
                        ledger_t.num("retry_s", 5.0, positive=True),
                        ledger_t.num("rto_s", 2.0, positive=True),
                        ledger_t.flag("fetch_through_gateways", False),
                        ledger_t.flag("peer_sync", True),
                        ledger_t.num("peer_sync_interval_s", 30.0, low=0.0))
    ledger_t.done()

    plot = top.sub("plot")
    times = plot.array("times_s", [0.0, duration / 2, duration])
    if not all(isinstance(t, int | float) and not isinstance(t, bool) and 0 <= t <= duration
               for t in times):
        raise ScenarioError(plot.key("times_s"), f"must be times within 0..{duration}")
    plot.done()
    top.done()

    return Scenario(path=path, name=name, description=description, seed=seed,
                    duration_s=duration, nodes=count, width_m=width, height_m=height,
                    interfaces=interfaces, contention=contention,
                    carrier_sense_factor=cs_factor, mac_retries=retries,
                    link_loss=link_loss, mobility_model=model, mobility=mparams, moves=moves,
                    coverage=coverage, traffic_model=tmodel, traffic=tparams, mesh=mesh,
                    sample_interval_s=sample, grid_refresh_s=refresh,
                    plot_times_s=[float(t) for t in times], notes=notes,
                    trace_paths=trace_paths, ns2_traffic=ns2_traffic, ledger=ledger)
