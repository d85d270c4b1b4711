"""The simulation: real `MeshNode` cores on a simulated shared radio, in virtual time.

One `Simulation` holds one core per node, a shared VerifyCache and DecodeCache (verifying
or parsing a broadcast is a pure function of its bytes, so twelve neighbours share one
check), a clock, and one `Channel` per interface kind. Every call into a core is followed
by `_drain`: frames go to the channel's MAC, events to the metrics, and the core's single
timer is re-armed in the clock. Nothing is stepped per tick: the clock jumps from one
frame, timer, packet or sample to the next.
"""

from __future__ import annotations

import gc
import hashlib
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from random import Random
from typing import TYPE_CHECKING, Any

from mesh import compiled
from mesh import events as ev
from mesh.frames import BACKHAUL, DecodeCache
from mesh.identity import Identity, VerifyCache
from mesh.line import LineStatus
from mesh.node import MeshNode, Transmit
from sim_radio.clock import PRIO_CONTROL, PRIO_RADIO, PRIO_SAMPLE, PRIO_TIMER, PRIO_TRAFFIC, Clock
from sim_radio.metrics import FlowStats, Metrics
from sim_radio.radio import UnitDisk, airtime_s
from sim_radio.scenario import Interface, Scenario
from sim_radio.spatial import SpatialHash
from sim_radio.traffic import Flow, parse_payload, payload

if TYPE_CHECKING:
    from sim_radio.ledgers import SimLedgers

SLOT_S = 20e-6
"""802.11b slot time: also the carrier-sense detection delay (frames that started less
than a slot ago are not yet heard, so two stations can collide)."""
DIFS_S = 50e-6
CW_MIN = 32
CW_MAX = 1024
QUEUE_LIMIT = 50
"""Frames a node's interface holds (ns-2's IFQ length); beyond that they are dropped."""
_DATA_EVENTS = (ev.DataReceived, ev.BackhaulData)
GC_THRESHOLD = 20_000
"""Allocations between young-generation collections while a simulation runs (Python: 700)."""


def derive_seed(seed: int, name: str) -> int:
    """A 64-bit seed for one random stream of the run (stable across Python versions)."""
    return int.from_bytes(hashlib.sha256(f"sim-radio:{seed}:{name}".encode()).digest()[:8],
                          "big")


def derive_identity(seed: int, node: int) -> Identity:
    return Identity.from_seed(hashlib.sha256(f"sim-radio:{seed}:identity:{node}".encode())
                              .digest())


class _Air:
    """One frame on the air: who sent it, when it ends, who hears it and whether cleanly."""

    __slots__ = ("end", "ok", "receivers", "sender", "start", "tx", "x", "y")

    def __init__(self, sender: int, tx: Transmit, start: float, end: float, x: float,
                 y: float) -> None:
        self.sender = sender
        self.tx = tx
        self.start = start
        self.end = end
        self.x = x
        self.y = y
        self.receivers: list[int] = []
        self.ok: list[bool] = []


class Channel:
    """One interface kind's shared medium with a CSMA/CA-like MAC per node.

    Contention on: a node senses the channel (any frame on the air within range that
    started at least a slot ago), defers to its end plus DIFS and a random backoff;
    a receiver that hears two overlapping frames, or transmits itself, loses both.
    Unicast frames are retried up to `mac_retries` times with a doubling window, then the
    core is told `link_failed`. Contention off: frames go out at once, never collide.
    """

    def __init__(self, sim: Simulation, iface: Interface) -> None:
        self.sim = sim
        self.name = iface.name
        self.profile = iface.profile
        self.radio = iface.radio
        n = sim.n
        reach = iface.radio.reach_m
        self.reach2 = reach * reach
        self.unit_disk = isinstance(iface.radio, UnitDisk) and iface.radio.loss <= 0.0
        self.grid = SpatialHash(n, sim.position, reach, sim.mobility.max_speed_mps,
                                sim.scenario.grid_refresh_s)
        self.contention = sim.scenario.contention
        self.retries = sim.scenario.mac_retries
        self.queue: list[deque[Transmit]] = [deque() for _ in range(n)]
        self.busy = [False] * n
        self.tries = [0] * n
        self.tx_end = [0.0] * n
        self.rx_clean: list[_Air | None] = [None] * n
        """The frame node j is receiving cleanly, if any: a second frame overlapping it
        makes both lost, so at most one frame at a time can be (no list per reception)."""
        self.rx_index = [0] * n
        """Its index among that frame's receivers."""
        self.rx_until = [0.0] * n
        cs = iface.radio.reach_m * sim.scenario.carrier_sense_factor
        self.cs2 = cs * cs
        self.active: list[_Air] = []
        self.deliver: Callable[[int, bytes, str, int], None] = sim.deliver
        """Where frames received cleanly go: node, bytes, interface, sender."""
        self._attempt_at: Callable[[int], None] = self._attempt
        self._end_at: Callable[[_Air], None] = self._end
        """The clock's actions, bound once (not a new bound method per event)."""

    def enqueue(self, i: int, tx: Transmit) -> None:
        q = self.queue[i]
        if len(q) >= QUEUE_LIMIT:
            self.sim.metrics.mac["queue_drops"] += 1
            return
        q.append(tx)
        if not self.busy[i]:
            self.busy[i] = True
            clock = self.sim.clock
            clock.at(clock.now + DIFS_S, PRIO_RADIO, self._attempt_at, i)

    def _backoff(self, i: int) -> float:
        window = min(CW_MAX, CW_MIN << self.tries[i])
        return DIFS_S + self.sim.mac_rng.randrange(window) * SLOT_S

    def _attempt(self, i: int) -> None:
        now = self.sim.clock.now
        if self.contention and self.active:
            x, y = self.sim.position(i, now)
            heard_by = now - SLOT_S
            busy_until = now  # a frame ending now (its _end not yet run) does not count
            cs2 = self.cs2
            for air in self.active:
                if air.start <= heard_by and air.end > busy_until:
                    dx, dy = air.x - x, air.y - y
                    if dx * dx + dy * dy <= cs2:
                        busy_until = air.end
            if busy_until > now:
                self.sim.metrics.mac["deferrals"] += 1
                self.sim.clock.at(busy_until + self._backoff(i), PRIO_RADIO, self._attempt_at, i)
                return
        self._start(i, now)

    def _start(self, i: int, now: float) -> None:
        sim = self.sim
        tx = self.queue[i][0]
        x, y = sim.position(i, now)
        end = now + airtime_s(len(tx.data), self.profile.bitrate_bps)
        air = _Air(i, tx, now, end, x, y)
        position = sim.position
        contention = self.contention
        link_loss = sim.link_loss
        radio = self.radio
        rng = sim.radio_rng
        exact = self.unit_disk and not link_loss
        rx_clean = self.rx_clean
        rx_index = self.rx_index
        rx_until = self.rx_until
        tx_end = self.tx_end
        metrics_mac = sim.metrics.mac
        if contention and rx_until[i] > now:
            # Half duplex: starting to send ruins what i was receiving.
            other = rx_clean[i]
            if other is not None and other.end > now:
                other.ok[rx_index[i]] = False
                rx_clean[i] = None
        receivers = air.receivers
        oks = air.ok
        for j in self.grid.in_reach(i, now, x, y):
            if exact:
                ok = True
            else:
                jx, jy = position(j, now)
                ok = radio.received(((jx - x) ** 2 + (jy - y) ** 2) ** 0.5, rng)
                if ok and link_loss:
                    loss = link_loss.get((i, j), 0.0)
                    ok = loss <= 0.0 or rng.random() >= loss
            if contention:
                if tx_end[j] > now:
                    ok = False
                if rx_until[j] > now:
                    # Overlapping frames at j: both are lost (no capture effect).
                    metrics_mac["rx_collisions"] += 1
                    other = rx_clean[j]
                    if other is not None and other.end > now:
                        other.ok[rx_index[j]] = False
                        rx_clean[j] = None
                    ok = False
                    if end > rx_until[j]:
                        rx_until[j] = end
                else:
                    rx_clean[j] = air
                    rx_index[j] = len(oks)
                    rx_until[j] = end
            receivers.append(j)
            oks.append(ok)
        tx_end[i] = end
        if contention:
            self.active.append(air)
        sim.clock.at(end, PRIO_RADIO, self._end_at, air)

    def _end(self, air: _Air) -> None:
        sim = self.sim
        now = sim.clock.now
        i = air.sender
        tx = air.tx
        dst = tx.link_dst
        name = self.name
        if self.contention:
            self.active.remove(air)
        deliver = self.deliver
        receivers = air.receivers
        oks = air.ok
        if dst is None:
            for k in range(len(receivers)):
                if oks[k]:
                    deliver(receivers[k], tx.data, name, i)
            success = True
        else:
            success = False
            for k in range(len(receivers)):
                if receivers[k] == dst:
                    success = oks[k]
                    break
            if success:
                deliver(dst, tx.data, name, i)  # type: ignore[arg-type]
        q = self.queue[i]
        if not success:
            self.tries[i] += 1
            if self.tries[i] <= self.retries:
                sim.metrics.mac["retries"] += 1
                sim.clock.at(now + self._backoff(i), PRIO_RADIO, self._attempt_at, i)
                return
            sim.metrics.mac["drops"] += 1
        self.tries[i] = 0
        q.popleft()
        if q:
            sim.clock.at(now + self._backoff(i), PRIO_RADIO, self._attempt_at, i)
        else:
            self.busy[i] = False
        if not success:
            sim.link_failed(i, name, dst)

    def links(self, t: float) -> list[tuple[int, int]]:
        """Pairs (i < j) within mean range at time t (for plots)."""
        pairs = []
        reach2 = self.reach2
        if not isinstance(self.radio, UnitDisk):
            r = self.radio.mean_range_m()
            reach2 = r * r
        for i in range(self.sim.n):
            xi, yi = self.sim.position(i, t)
            for j in self.grid.near(i, t):
                if j > i:
                    xj, yj = self.sim.position(j, t)
                    if (xj - xi) ** 2 + (yj - yi) ** 2 <= reach2:
                        pairs.append((i, j))
        return pairs


@dataclass(slots=True)
class Snapshot:
    """Where nodes were, which links existed and which routes were in use at one time."""

    time: float
    positions: list[tuple[float, float]]
    links: list[tuple[int, int]]
    route_edges: list[tuple[int, int]]
    gateway_edges: list[tuple[int, int]]
    gateways: list[int]


@dataclass(slots=True)
class Result:
    summary: dict[str, Any]
    series: dict[str, list[float | None]]
    snapshots: list[Snapshot] = field(default_factory=list)


class Simulation:
    """Build with a scenario (and a seed), then `run()`."""

    def __init__(self, scenario: Scenario, seed: int | None = None) -> None:
        self.scenario = scenario
        self.seed = scenario.seed if seed is None else seed
        s = self.seed
        self.mobility = scenario.build_mobility(Random(derive_seed(s, "mobility")))
        self.flows: list[Flow] = scenario.build_flows(Random(derive_seed(s, "traffic")))
        self.radio_rng = Random(derive_seed(s, "radio"))
        self.mac_rng = Random(derive_seed(s, "mac"))
        self.traffic_rng = Random(derive_seed(s, "traffic-jitter"))
        self.n = scenario.nodes
        self.link_loss = scenario.link_loss
        self.clock = Clock()
        self.metrics = Metrics(scenario.duration_s, scenario.sample_interval_s)
        self._pos_t = [-1.0] * self.n
        self._pos = [(0.0, 0.0)] * self.n
        self._trajectories = self.mobility.trajectories
        self._fixed: list[tuple[float, float]] | None = None
        if self.mobility.max_speed_mps == 0.0 and not scenario.moves:
            self._fixed = [tr.position(0.0) for tr in self._trajectories]
        verify_cache = VerifyCache()
        decode_cache = DecodeCache()
        interfaces = {iface.name: iface.profile for iface in scenario.interfaces}
        coverage = scenario.coverage
        self.nodes: list[MeshNode] = []
        for i in range(self.n):
            x, y = self.position(i, 0.0)
            self.nodes.append(MeshNode(
                identity=derive_identity(s, i), rng=Random(derive_seed(s, f"node:{i}")),
                now=0.0, interfaces=interfaces, line=coverage.line(i, x, y, 0.0),
                config=scenario.mesh, verify_cache=verify_cache, decode_cache=decode_cache))
        self.index = {node.id: i for i, node in enumerate(self.nodes)}
        self.channels = {iface.name: Channel(self, iface) for iface in scenario.interfaces}
        self._armed: list[float | None] = [None] * self.n
        self._pushed = [-1] * self.n
        """Each core's timers_pushed when its deadline was last asked."""
        self._fire_at: Callable[[int], None] = self._fire
        self._flow_seq = [0] * len(self.flows)
        self.snapshots: list[Snapshot] = []
        self.wall_seconds = 0.0
        self.ledgers: SimLedgers | None = None
        if scenario.ledger.enabled:
            from sim_radio.ledgers import SimLedgers  # the ledger package only when asked

            self.ledgers = SimLedgers(self, scenario.ledger, Random(derive_seed(s, "ledger")))
        self._setup()

    # ----------------------------------------------------------------- positions

    def position(self, i: int, t: float) -> tuple[float, float]:
        """Where node i is at time t (computed once per node and time)."""
        fixed = self._fixed
        if fixed is not None:
            return fixed[i]
        if self._pos_t[i] == t:
            return self._pos[i]
        p = self._trajectories[i].position(t)
        self._pos_t[i] = t
        self._pos[i] = p
        return p

    # ----------------------------------------------------------------- driving the cores

    def _drain(self, i: int, fired: bool = False) -> None:
        """Move core i's frames and events out and re-arm its timer.

        The deadline is asked again only after the core fired timers or pushed new ones
        (`timers_pushed`): otherwise it cannot have come earlier than the one armed.
        """
        node = self.nodes[i]
        out = node.datagrams_to_send()
        if out:
            now = self.clock.now
            metrics = self.metrics
            channels = self.channels
            for tx in out:
                metrics.transmitted(tx.kind, len(tx.data), now)
                channels[tx.iface].enqueue(i, tx)
        event = node.next_event()
        ledgers = self.ledgers
        while event is not None:
            if isinstance(event, _DATA_EVENTS):
                self._data_event(i, event)
            elif ledgers is not None:
                ledgers.on_event(i, event)
            event = node.next_event()
        pushed = node.timers_pushed
        if not fired and pushed == self._pushed[i]:
            return
        self._pushed[i] = pushed
        t = node.get_timer()
        if t is not None:
            # Only an earlier deadline needs a new entry: when the core's deadline moved
            # later, the pending entry wakes it early (handle_timer then finds nothing due)
            # and this re-arms it, which is cheaper than an entry per move.
            armed = self._armed[i]
            if armed is None or t < armed:
                now = self.clock.now
                if t < now:
                    t = now
                self._armed[i] = t
                self.clock.at(t, PRIO_TIMER, self._fire_at, i)

    def _fire(self, i: int) -> None:
        now = self.clock.now
        if self._armed[i] != now:
            return  # a stale entry: an earlier one was armed since, and has fired
        self._armed[i] = None
        self.nodes[i].handle_timer(now)
        self._drain(i, fired=True)

    def deliver(self, j: int, data: bytes, iface: str, src: int) -> None:
        self.nodes[j].receive(data, iface, src, self.clock.now)
        self._drain(j)

    def link_failed(self, i: int, iface: str, dst: object) -> None:
        self.nodes[i].link_failed(iface, dst, self.clock.now)
        self._drain(i)

    def _data_event(self, i: int, event: ev.DataReceived | ev.BackhaulData) -> None:
        if self.ledgers is not None and self.ledgers.on_payload(i, event):
            return
        parsed = parse_payload(event.payload)
        if parsed is None:
            return
        flow, seq, sent = parsed
        if flow >= len(self.flows):
            return
        dst = self.flows[flow].dst
        if isinstance(event, ev.BackhaulData):
            if dst is None:
                self.metrics.delivered(flow, seq, sent, self.clock.now)
        elif dst == i:
            self.metrics.delivered(flow, seq, sent, self.clock.now)

    # ----------------------------------------------------------------- scheduled work

    def _setup(self) -> None:
        clock = self.clock
        for i in range(self.n):
            self._drain(i)
        for k, flow in enumerate(self.flows):
            self.metrics.flows[k] = FlowStats(flow.src, flow.dst)
            if flow.start_s < self.scenario.duration_s:
                clock.at(flow.start_s, PRIO_TRAFFIC, self._send, k)
        cov = self.scenario.coverage
        if cov.dynamic:
            clock.at(cov.check_interval_s, PRIO_CONTROL, self._line_tick, None)
            for t in cov.change_times():
                if t <= self.scenario.duration_s:
                    clock.at(t, PRIO_CONTROL, self._line_check, None)
        for move in self.scenario.moves:
            clock.at(move.at_s, PRIO_CONTROL, self._moved, None)
        clock.at(0.0, PRIO_SAMPLE, self._sample, None)
        for t in self.scenario.plot_times_s:
            clock.at(t, PRIO_SAMPLE, self._snapshot, None)

    def _send(self, k: int) -> None:
        flow = self.flows[k]
        now = self.clock.now
        seq = self._flow_seq[k]
        self._flow_seq[k] = seq + 1
        dest = BACKHAUL if flow.dst is None else self.nodes[flow.dst].id
        self.metrics.sent(k, now)
        self.nodes[flow.src].send_data(dest, payload(k, seq, now, flow.size_bytes), now)
        self._drain(flow.src)
        if flow.random:
            nxt = now + flow.interval_s * (1.0 + self.traffic_rng.uniform(-0.5, 0.5))
        else:
            nxt = flow.start_s + (seq + 1) * flow.interval_s  # no drift from adding up
        if seq + 1 < flow.max_packets and nxt < flow.stop_s and nxt <= self.scenario.duration_s:
            self.clock.at(nxt, PRIO_TRAFFIC, self._send, k)

    def _line_check(self, _: object) -> None:
        now = self.clock.now
        cov = self.scenario.coverage
        for i, node in enumerate(self.nodes):
            x, y = self.position(i, now)
            status: LineStatus = cov.line(i, x, y, now)
            if status != node.line:
                node.set_line(status, now)
                self._drain(i)

    def _line_tick(self, _: object) -> None:
        self._line_check(None)
        nxt = self.clock.now + self.scenario.coverage.check_interval_s
        if nxt <= self.scenario.duration_s:
            self.clock.at(nxt, PRIO_CONTROL, self._line_tick, None)

    def _moved(self, _: object) -> None:
        for channel in self.channels.values():
            channel.grid.invalidate()

    def _sample(self, _: object) -> None:
        m = self.metrics
        for node in self.nodes:
            if not node.line.is_gateway:
                m.reach_samples += 1
                if node.gateway is not None:
                    m.reach_hits += 1
        nxt = self.clock.now + self.scenario.sample_interval_s
        if nxt <= self.scenario.duration_s:
            self.clock.at(nxt, PRIO_SAMPLE, self._sample, None)

    def _snapshot(self, _: object) -> None:
        now = self.clock.now
        channel = next(iter(self.channels.values()))
        positions = [self.position(i, now) for i in range(self.n)]
        route_edges: set[tuple[int, int]] = set()
        for flow in self.flows:
            if flow.dst is None:
                continue
            dest = self.nodes[flow.dst].id
            hop, seen = flow.src, set()
            while hop != flow.dst and hop not in seen:
                seen.add(hop)
                route = self.nodes[hop].route_to(dest)
                if route is None or route.next_hop not in self.index:
                    break
                nxt = self.index[route.next_hop]
                route_edges.add((hop, nxt))
                hop = nxt
        gateway_edges = []
        for i, node in enumerate(self.nodes):
            gw = node.gateway
            if gw is not None and gw.next_hop in self.index:
                gateway_edges.append((i, self.index[gw.next_hop]))
        self.snapshots.append(Snapshot(
            now, positions, channel.links(now), sorted(route_edges), gateway_edges,
            [i for i, node in enumerate(self.nodes) if node.line.is_gateway]))

    # ----------------------------------------------------------------- running

    def run(self, until: float | None = None,
            progress: Callable[[float], None] | None = None) -> Result:
        end = self.scenario.duration_s if until is None else min(until, self.scenario.duration_s)
        started = time.perf_counter()
        # A run allocates millions of short-lived frames, events and heap entries, and
        # keeps every core's tables alive: with the default threshold (700) the cyclic
        # collector ran ~25 times a simulated second at 1,000 nodes and took 12 % of the
        # CPU time. Nothing here depends on when it runs; the threshold is restored after.
        thresholds = gc.get_threshold()
        gc.set_threshold(GC_THRESHOLD, *thresholds[1:])
        try:
            self.clock.run(end, progress)
        finally:
            gc.set_threshold(*thresholds)
        self.wall_seconds += time.perf_counter() - started
        return self.result(end)

    def result(self, end: float) -> Result:
        summary: dict[str, Any] = {
            "scenario": self.scenario.name,
            "seed": self.seed,
            "nodes": self.n,
            "sim_seconds": end,
            "wall_seconds": round(self.wall_seconds, 3),
            "sim_seconds_per_wall_second": (round(end / self.wall_seconds, 2)
                                            if self.wall_seconds > 0 else None),
            "compiled_cores": compiled.active(),
        }
        body = self.metrics.summary()
        discoveries = sum(n.stats["route_discoveries"] for n in self.nodes)
        ok = sum(n.stats["route_discoveries_ok"] for n in self.nodes)
        ms = sum(n.stats["route_discovery_ms_total"] for n in self.nodes)
        body["route_discoveries"] = discoveries
        body["route_discoveries_ok"] = ok
        body["mean_route_discovery_s"] = ms / 1000 / ok if ok else None
        body["events_fired"] = self.clock.fired
        drops: dict[str, int] = {}
        for node in self.nodes:
            for key, value in node.stats.items():
                if key.startswith("drop_") and value:
                    drops[key[5:]] = drops.get(key[5:], 0) + value
        body["core_drops"] = dict(sorted(drops.items()))
        if self.ledgers is not None:
            body["ledger"] = self.ledgers.summary()
        summary.update(body)
        series = self.metrics.series()
        if self.ledgers is not None:
            series.update(self.ledgers.series)
        return Result(summary, series, list(self.snapshots))

