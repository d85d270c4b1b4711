"""Every node's ledger in the simulation, its sync with a simulated backhaul, and with
its neighbours.

With `[ledger] enabled = true` each node keeps a real `ledger.Ledger` (SQLite in memory)
that records its mesh events as signed blocks, exactly as the agent does, and a
`SyncPlanner` that decides when to sync with the backhaul and by which route. A sync is a
real `SyncSession` carried by a real `MeshStream`: over the node's own line when it has one
("direct": the payloads reach the backhaul half the line's round trip later), or as mesh
DATA to the BACKHAUL id when it has not ("gateway": whichever gateway the mesh picks passes
them up its line, and the backhaul's answers come back down through the gateway that last
passed one up; as in the agent, a sync through a gateway only uploads unless
`fetch_through_gateways`). The backhaul is one more ledger (no node) answering as a responder.
With `peer_sync`, as in the agent (agent/peer_sync.py), a node that meets a neighbour
(`NeighbourUp`) syncs with it when its id is the smaller one, at most once per
`peer_sync_interval_s` per neighbour, over a stream of mesh DATA to that neighbour.

What this measures: how much of the fleet's history reaches the backhaul, how long after it
was written, and what the sync costs the mesh. What it leaves out: the backhaul protocol's
key handshake and checkpoints (the simulated backhaul trusts the simulated keys).
"""

from __future__ import annotations

from dataclasses import dataclass
from random import Random
from typing import TYPE_CHECKING, Any

from ledger import Ledger, LedgerConfig
from ledger.backhaul.protocol import F_SYNC, HEADER, frame, frame_length, split
from ledger.errors import LedgerError
from ledger.meshlink import (
    K_DATA,
    STREAM_ID_LEN,
    MeshStream,
    StreamConfig,
    StreamError,
    is_ledger_payload,
    parse,
)
from ledger.planner import PlannerConfig, SyncPlanner
from ledger.sync import SyncConfig, SyncSession
from ledger.tx import default_registry
from mesh import events as ev
from mesh.frames import BACKHAUL
from mesh.identity import VerifyCache
from sim_radio.clock import PRIO_CONTROL, PRIO_SAMPLE, PRIO_TIMER
from sim_radio.engine import derive_identity

if TYPE_CHECKING:
    from sim_radio.engine import Simulation
    from sim_radio.scenario import LedgerSpec

EPOCH_S = 1_767_225_600.0
"""Wall-clock time of virtual second 0 (2026-01-01 UTC): block timestamps look real."""
BACKHAUL_NAME = "backhaul"
IDLE_S = 120.0
"""The backhaul, or a node answering a neighbour, forgets a stream silent this long."""
MAX_PEER_SESSIONS = 16
SHARED_VERIFY_CACHE = 8192
"""Block signatures remembered across all the simulated ledgers (about 1 KB each)."""
"""Neighbour syncs a node runs at once (agent/peer_sync.py's MAX_SESSIONS)."""


class _Frames:
    """Cuts a byte stream into the backhaul protocol's frames (length, type, payload)."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        """The complete F_SYNC payloads in `data` and what came before it; raises on others."""
        self._buf += data
        out = []
        while len(self._buf) >= HEADER:
            n = frame_length(bytes(self._buf[:HEADER]))
            if len(self._buf) < HEADER + n:
                break
            kind, payload = split(bytes(self._buf[HEADER:HEADER + n]))
            del self._buf[:HEADER + n]
            if kind != F_SYNC:
                raise StreamError(f"unexpected frame type {kind}")
            out.append(payload)
        return out


@dataclass(slots=True)
class _End:
    """One end of a sync: the session, the stream that carries it, and where it goes."""

    session: SyncSession
    stream: MeshStream
    frames: _Frames
    route: str
    """"direct" or "gateway" (a device's backhaul sync; at the backhaul, the way the last
    payload came), or "peer" (a sync between neighbours)."""
    via: int | None = None
    """The backhaul's end: the gateway that passed the last payload up (None: direct)."""
    last: float = 0.0
    peer: int = -1
    """A neighbour sync's other node."""


class SimLedgers:
    """The ledgers of one `Simulation`; the engine calls `on_event` and `on_payload`."""

    def __init__(self, sim: Simulation, spec: LedgerSpec, rng: Random) -> None:
        """`rng` draws stream ids (a stream of the run's seed, like every other choice)."""
        self.sim = sim
        self.spec = spec
        self.rng = rng
        cfg = LedgerConfig(max_block_delay_s=spec.block_delay_s, check_on_open=False)
        registry = default_registry()  # one for all: building one takes milliseconds
        self.ledgers = [Ledger.open(":memory:", node.identity, registry=registry, config=cfg)
                        for node in sim.nodes]
        self.backhaul = Ledger.open(":memory:", derive_identity(sim.seed, -1), registry=registry,
                                    config=cfg)
        shared = VerifyCache(capacity=SHARED_VERIFY_CACHE)
        for led in [*self.ledgers, self.backhaul]:
            led.verifier = shared.verify  # a block reaching many nodes is checked once
        self.planners = [SyncPlanner(now=0.0, config=PlannerConfig(
            interval_s=spec.sync_interval_s, retry_s=spec.retry_s)) for _ in sim.nodes]
        self.stream_config = StreamConfig(rto_s=spec.rto_s)
        self.sync_configs = {"direct": SyncConfig(),
                             "gateway": SyncConfig(fetch=spec.fetch_through_gateways)}
        self.half_rtt = sim.scenario.coverage.rtt_ms / 2000.0
        self.syncs: list[_End | None] = [None] * sim.n
        self.ends: dict[bytes, _End] = {}
        self.peer_ends: list[dict[bytes, _End]] = [{} for _ in sim.nodes]
        """Per node, its neighbour syncs by stream id (as initiator or responder)."""
        self._peer_last: list[dict[int, float]] = [{} for _ in sim.nodes]
        self._armed: list[float | None] = [None] * sim.n
        self._pump_due = [False] * sim.n
        self._written: list[list[float]] = [[] for _ in sim.nodes]
        """Per node, the virtual time each of its blocks was signed (index = height)."""
        self._arrived = [0] * sim.n
        """Per node, how many of its blocks the backhaul holds."""
        self._lags: list[float] = []
        self.series: dict[str, list[float | None]] = {
            "ledger_t": [], "ledger_written": [], "ledger_at_backhaul": []}
        """Blocks signed and blocks at the backhaul, fleet-wide, every sample interval."""
        self._written_total = 0
        self._arrived_total = 0
        self.counts = {"syncs_direct": 0, "syncs_gateway": 0, "syncs_ok": 0,
                       "syncs_failed": 0, "mesh_payloads": 0, "mesh_bytes": 0,
                       "line_payloads": 0, "payloads_lost_at_gateway": 0,
                       "peer_syncs": 0, "peer_syncs_ok": 0, "peer_syncs_failed": 0,
                       "peer_syncs_refused": 0, "peer_blocks_in": 0, "peer_payloads": 0,
                       "peer_bytes": 0}
        for i, node in enumerate(sim.nodes):
            self.planners[i].on_event(ev.LineStatusChanged(node.line, node.line, 0.0), 0.0)
            self._schedule(i)
        sim.clock.at(0.0, PRIO_SAMPLE, self._sample, None)

    # ----------------------------------------------------------------- from the engine

    def on_event(self, i: int, event: ev.Event) -> None:
        """A mesh event of node i: history for its ledger, and news for its planner."""
        now = self.sim.clock.now
        led = self.ledgers[i]
        if led.record_event(event, EPOCH_S + now) and not led.pending:
            self._signed(i, now)  # this record filled a block
        self.planners[i].on_event(event, now)
        if (self.spec.peer_sync and isinstance(event, ev.NeighbourUp)
                and self.sim.nodes[i].id < event.node):
            j = self.sim.index.get(event.node)
            if j is not None:
                self._start_peer(i, j, now)
        self._schedule(i)

    def on_payload(self, i: int, event: ev.DataReceived | ev.BackhaulData) -> bool:
        """Take a payload that reached node i over the mesh if it is a ledger stream's."""
        if not is_ledger_payload(event.payload):
            return False
        if isinstance(event, ev.BackhaulData):
            # i is a gateway: pass it up the line, if it still has one.
            if not self.sim.nodes[i].line.is_gateway:
                self.counts["payloads_lost_at_gateway"] += 1
                return True
            source = self.sim.index.get(event.source)
            if source is not None:
                self.sim.clock.at(self.sim.clock.now + self.half_rtt, PRIO_CONTROL,
                                  self._at_backhaul, (source, i, event.payload))
            return True
        try:
            stream_id, kind, seq, _ = parse(event.payload)
        except StreamError:
            return True
        end = self.syncs[i]
        if end is None or end.route != "gateway" or end.stream.stream_id != stream_id:
            end = self.peer_ends[i].get(stream_id)
            if end is None:
                end = self._answer_peer(i, event.source, stream_id, kind, seq)
                if end is None:
                    return True
        self._into(end, event.payload)
        self._schedule(i)
        return True

    def close(self) -> None:
        for led in self.ledgers:
            led.close()
        self.backhaul.close()

    # ----------------------------------------------------------------- a device's side

    def _schedule(self, i: int) -> None:
        """Pump node i once the current action is over (it may be inside the core's drain)."""
        if not self._pump_due[i]:
            self._pump_due[i] = True
            self.sim.clock.at(self.sim.clock.now, PRIO_CONTROL, self._pump, i)

    def _pump(self, i: int) -> None:
        self._pump_due[i] = False
        now = self.sim.clock.now
        led = self.ledgers[i]
        if led.handle_timer(EPOCH_S + now) is not None:
            self._signed(i, now)
        planner = self.planners[i]
        end = self.syncs[i]
        if end is None:
            route = planner.poll(now)
            if route is not None:
                end = self._start(i, route, now)
        sent = False
        if end is not None:
            sent = self._step(i, end, now)
            if self._settled(end):
                self.syncs[i] = None
                ok = self._ok(end)
                self.counts["syncs_ok" if ok else "syncs_failed"] += 1
                planner.finished(ok, now)
        block_due = led.get_timer()
        deadlines = [t for t in (None if end is None else end.stream.get_timer(),
                                 planner.get_timer(),
                                 None if block_due is None else block_due - EPOCH_S)
                     if t is not None]
        peers = self.peer_ends[i]
        for stream_id, peer_end in list(peers.items()):
            sent = self._step(i, peer_end, now) or sent
            if peer_end.last < now - IDLE_S and not self._settled(peer_end):
                peer_end.session.fail_local("silent", EPOCH_S + now)
            if self._settled(peer_end):
                del peers[stream_id]
                self.counts["peer_blocks_in"] += peer_end.session.stats.blocks_in
                if peer_end.session.initiator:  # a session counts once, at its initiator
                    ok = self._ok(peer_end)
                    self.counts["peer_syncs_ok" if ok else "peer_syncs_failed"] += 1
                continue
            deadlines.append(peer_end.last + IDLE_S)
            stream_due = peer_end.stream.get_timer()
            if stream_due is not None:
                deadlines.append(stream_due)
        if sent:
            self.sim._drain(i)
        self._arm(i, min(deadlines) if deadlines else None)

    def _step(self, i: int, end: _End, now: float) -> bool:
        """Run an end's stream timer and send its payloads; True when any went on the mesh."""
        try:
            end.stream.handle_timer(now)
        except StreamError as exc:  # no acknowledgement: the way to the other end is gone
            end.session.fail_local(str(exc), EPOCH_S + now)
        return self._send(i, end, now)

    def _start_peer(self, i: int, j: int, now: float) -> None:
        """Open a sync with neighbour j unless one runs or ran recently (as the agent)."""
        peers = self.peer_ends[i]
        last = self._peer_last[i].get(j)
        if (len(peers) >= MAX_PEER_SESSIONS or any(e.peer == j for e in peers.values())
                or (last is not None and now - last < self.spec.peer_sync_interval_s)):
            return
        self._peer_last[i][j] = now
        end = self._open(i, now, self._peer_name(j), None, "peer", None, j)
        peers[end.stream.stream_id] = end
        self.counts["peer_syncs"] += 1

    def _answer_peer(self, i: int, source: bytes, stream_id: bytes, kind: int,
                     seq: int) -> _End | None:
        """A neighbour's new sync stream: answer it, within the bound on sessions."""
        j = self.sim.index.get(source)
        peers = self.peer_ends[i]
        if (not self.spec.peer_sync or j is None or kind != K_DATA or seq != 0
                or len(peers) >= MAX_PEER_SESSIONS):
            self.counts["peer_syncs_refused"] += 1
            return None
        end = self._open(i, self.sim.clock.now, self._peer_name(j), None, "peer", stream_id, j)
        peers[stream_id] = end
        return end

    def _open(self, i: int, now: float, peer_name: str, config: SyncConfig | None, route: str,
              stream_id: bytes | None, peer: int = -1) -> _End:
        """A session of node i's ledger on a stream: ours (a new id, we speak first) or the
        peer's (`stream_id`, we answer). Pending records are signed first, so the other side
        gets what we recorded until now."""
        led = self.ledgers[i]
        if led.flush(EPOCH_S + now) is not None:
            self._signed(i, now)
        initiator = stream_id is None
        session = led.sync_session(initiator=initiator, peer=peer_name, now=EPOCH_S + now,
                                   config=config)
        stream = MeshStream(self.rng.randbytes(STREAM_ID_LEN) if stream_id is None else stream_id,
                            config=self.stream_config)
        if initiator:
            stream.write(frame(F_SYNC, session.start(EPOCH_S + now)))
        return _End(session, stream, _Frames(), route, last=now, peer=peer)

    def _peer_name(self, j: int) -> str:
        return "mesh:" + self.sim.nodes[j].id.hex()

    def _start(self, i: int, route: str, now: float) -> _End:
        end = self._open(i, now, BACKHAUL_NAME, self.sync_configs[route], route, None)
        self.syncs[i] = end
        self.counts["syncs_" + route] += 1
        return end

    def _send(self, i: int, end: _End, now: float) -> bool:
        """Hand the end's payloads to its line or the mesh; True when any went on the mesh."""
        out = end.stream.datagrams_to_send(now)
        if not out:
            return False
        if end.route == "direct":
            for payload in out:
                self.counts["line_payloads"] += 1
                self.sim.clock.at(now + self.half_rtt, PRIO_CONTROL, self._at_backhaul,
                                  (i, None, payload))
            return False
        node = self.sim.nodes[i]
        dest, kind = ((BACKHAUL, "mesh") if end.route == "gateway"
                      else (self.sim.nodes[end.peer].id, "peer"))
        for payload in out:
            self.counts[kind + "_payloads"] += 1
            self.counts[kind + "_bytes"] += len(payload)
            node.send_data(dest, payload, now)
        return True

    @staticmethod
    def _ok(end: _End) -> bool:
        return end.session.state == "complete" and not end.stream.failed

    @staticmethod
    def _settled(end: _End) -> bool:
        """The sync is over: failed, or complete with everything we wrote acknowledged."""
        return (end.stream.failed or end.session.state == "failed"
                or (end.session.state == "complete" and end.stream.unsent == 0))

    def _arm(self, i: int, t: float | None) -> None:
        if t is None:
            return
        armed = self._armed[i]
        if armed is None or t < armed or armed < self.sim.clock.now:
            t = max(t, self.sim.clock.now)
            self._armed[i] = t
            self.sim.clock.at(t, PRIO_TIMER, self._fire, i)

    def _fire(self, i: int) -> None:
        if self._armed[i] == self.sim.clock.now:
            self._armed[i] = None
            self._pump(i)

    # ----------------------------------------------------------------- both ends

    def _into(self, end: _End, payload: bytes) -> None:
        """Feed one stream payload to an end; answer what the session says to answer."""
        now = self.sim.clock.now
        end.last = now
        session = end.session
        try:
            end.stream.receive(payload, now)
            for message in end.frames.feed(end.stream.read()):
                if session.state != "running":
                    break
                reply = session.receive(message, EPOCH_S + now)
                if reply is not None:
                    end.stream.write(frame(F_SYNC, reply))
        except (LedgerError, ValueError) as exc:
            if session.state == "running":
                session.fail_local(str(exc), EPOCH_S + now)
            end.stream.reset(str(exc))

    # ----------------------------------------------------------------- the backhaul's side

    def _at_backhaul(self, arg: tuple[int, int | None, bytes]) -> None:
        """A device's payload reaches the backhaul (directly, or from gateway `via`)."""
        device, via, payload = arg
        now = self.sim.clock.now
        try:
            stream_id = parse(payload)[0]
        except StreamError:
            return
        end = self.ends.get(stream_id)
        if end is None:
            peer = self.sim.nodes[device].id.hex()
            session = self.backhaul.sync_session(initiator=False, peer=peer, now=EPOCH_S + now)
            self._expire()
            end = _End(session, MeshStream(stream_id, config=self.stream_config), _Frames(),
                       "direct", last=now)
            self.ends[stream_id] = end
        end.route, end.via = ("direct", None) if via is None else ("gateway", via)
        self._into(end, payload)
        self._note_arrivals(device, now)
        for out in end.stream.datagrams_to_send(now):
            self.sim.clock.at(now + self.half_rtt, PRIO_CONTROL, self._from_backhaul,
                              (device, end.via, out))
        if self._settled(end):
            del self.ends[stream_id]

    def _from_backhaul(self, arg: tuple[int, int | None, bytes]) -> None:
        """The backhaul's payload reaches the device's line, or gateway `via`'s."""
        device, via, payload = arg
        now = self.sim.clock.now
        if via is None:
            end = self.syncs[device]
            if end is not None and end.route == "direct":
                self._into(end, payload)
                self._schedule(device)
            return
        gateway = self.sim.nodes[via]
        if not gateway.line.is_gateway:
            self.counts["payloads_lost_at_gateway"] += 1
            return
        self.counts["mesh_payloads"] += 1
        self.counts["mesh_bytes"] += len(payload)
        gateway.send_data(self.sim.nodes[device].id, payload, now)
        self.sim._drain(via)

    def _expire(self) -> None:
        """Forget streams silent for IDLE_S (their devices gave up; they will start anew)."""
        cutoff = self.sim.clock.now - IDLE_S
        for stream_id in [k for k, e in self.ends.items() if e.last < cutoff]:
            del self.ends[stream_id]

    def _note_arrivals(self, device: int, now: float) -> None:
        """The delay from signing to reaching the backhaul, for the device's new blocks."""
        head = self.backhaul.store.head(self.ledgers[device].author)
        have = 0 if head is None else head.height + 1
        written = self._written[device]
        for height in range(self._arrived[device], min(have, len(written))):
            self._lags.append(now - written[height])
        if have > self._arrived[device]:
            self._arrived_total += have - self._arrived[device]
            self._arrived[device] = have

    def _signed(self, i: int, now: float) -> None:
        self._written[i].append(now)
        self._written_total += 1

    def _sample(self, _: object) -> None:
        now = self.sim.clock.now
        self.series["ledger_t"].append(now)
        self.series["ledger_written"].append(self._written_total)
        self.series["ledger_at_backhaul"].append(self._arrived_total)
        nxt = now + self.sim.scenario.sample_interval_s
        if nxt <= self.sim.scenario.duration_s:
            self.sim.clock.at(nxt, PRIO_SAMPLE, self._sample, None)

    # ----------------------------------------------------------------- figures

    def summary(self) -> dict[str, Any]:
        written = sum(led.height() + 1 for led in self.ledgers)
        at_backhaul = sum(head.height + 1 for head in self.backhaul.heads())
        lags = sorted(self._lags)
        return {
            "blocks_written": written,
            "blocks_copied_to_devices": sum(head.height + 1 for led in self.ledgers
                                            for head in led.heads()) - written,
            "blocks_at_backhaul": at_backhaul,
            "share_at_backhaul": round(at_backhaul / written, 4) if written else None,
            "mean_lag_s": round(sum(lags) / len(lags), 3) if lags else None,
            "p95_lag_s": round(lags[int(0.95 * (len(lags) - 1))], 3) if lags else None,
            **self.counts,
        }
