"""The module host: runs the on-device modules inside the agent and records what they do.

Power interchange: the sans-I/O `Coordinator` and `VehicleEndpoint` of
`agent.modules.interchange.transmit` are carried over the mesh (`send(dest, payload)`, which
is `CoreDriver.send_data`). A message larger than one mesh payload is cut into chunks, each
`prefix | message id (4) | index (1) | count (1) | bytes`, and put back together on arrival;
a lost chunk is repaired by the coordinator's resend of the whole message. The coordinator's
retries and timeouts run on one `loop.call_at` timer, like the mesh core's. Vehicles answer
by their `[interchange]` configuration. Plans (every version), every answer (on both sides),
the final outcome and charging sessions are appended to the agent's ledger.

The interchange and charging modules are imported when first used: `manet-agent run` must not
carry them (nor the charging module's numpy) when no plan is ever sent or received.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cbor2

from agent.config import ConfigError, InterchangeSection
from agent.control import CommandError
from agent.logs import NodeLogger
from mesh import events as ev
from mesh.identity import Identity, node_id_of

if TYPE_CHECKING:
    from agent.modules.interchange.transmit import Coordinator, VehicleEndpoint

PLAN_PREFIX = b"\x00manet-ix-plan"
ANSWER_PREFIX = b"\x00manet-ix-answer"
CHUNK_HEADER = 6
MAX_PARTIAL = 32
PARTIAL_EXPIRY_S = 120.0

Send = Callable[[bytes, bytes], None]
Record = Callable[[dict[str, Any]], None]
Handler = Callable[[dict[str, Any]], Awaitable[Any]]


def chunk(prefix: bytes, msg_id: int, data: bytes, max_payload: int) -> list[bytes]:
    """`data` as payloads of at most `max_payload` bytes."""
    size = max_payload - len(prefix) - CHUNK_HEADER
    count = max(1, -(-len(data) // size))
    if size <= 0 or count > 255:
        raise CommandError(f"a {len(data)}-byte message does not fit 255 mesh payloads "
                           f"of {max_payload} bytes")
    head = prefix + (msg_id & 0xFFFFFFFF).to_bytes(4, "big")
    return [head + bytes((i, count)) + data[i * size:(i + 1) * size] for i in range(count)]


class Reassembly:
    """Chunks back into messages, per (source, prefix, message id); bounded and expiring."""

    def __init__(self) -> None:
        self._partial: dict[tuple[bytes, bytes, bytes], tuple[float, int, dict[int, bytes]]] = {}
        self.dropped = 0

    def add(self, source: bytes, prefix: bytes, payload: bytes, now: float) -> bytes | None:
        body = payload[len(prefix):]
        if len(body) < CHUNK_HEADER:
            self.dropped += 1
            return None
        msg_id, index, count = body[:4], body[4], body[5]
        if count == 0 or index >= count:
            self.dropped += 1
            return None
        if count == 1:
            return body[CHUNK_HEADER:]
        for key, (first, _, _) in list(self._partial.items()):
            if now - first > PARTIAL_EXPIRY_S:
                del self._partial[key]
                self.dropped += 1
        key = (source, prefix, msg_id)
        first, want, parts = self._partial.get(key, (now, count, {}))
        if want != count:
            first, want, parts = now, count, {}
        parts[index] = body[CHUNK_HEADER:]
        if len(parts) == count:
            self._partial.pop(key, None)
            return b"".join(parts[i] for i in range(count))
        if key not in self._partial and len(self._partial) >= MAX_PARTIAL:
            del self._partial[next(iter(self._partial))]
            self.dropped += 1
        self._partial[key] = (first, want, parts)
        return None


def parse_vehicle_keys(entries: list[str]) -> dict[str, bytes]:
    """`["ev1=HEX", ...]` -> {"ev1": public key}."""
    keys: dict[str, bytes] = {}
    for entry in entries:
        vid, sep, hexkey = entry.partition("=")
        try:
            key = bytes.fromhex(hexkey.strip())
        except ValueError:
            key = b""
        if not sep or not vid.strip() or len(key) != 32:
            raise CommandError(f"interchange.vehicle_keys entry {entry!r} is not "
                               "VEHICLE_ID=64-hex-digit public key")
        keys[vid.strip()] = key
    return keys


def vehicle_check(cfg: InterchangeSection) -> Callable[[Mapping[str, Any]], tuple[str, str] | None]:
    """The vehicle's own verdict on its part of a plan, from its configuration."""

    def check(body: Mapping[str, Any]) -> tuple[str, str] | None:
        if not cfg.accept:
            return "unavailable", "this vehicle takes no plans (interchange.accept = false)"
        try:
            stops = body["plan"]["stops"]
            used = [int(t) for s in stops for t, _ in (*s["charge"], *s["discharge"])]
            used += [int(s["depart"]) for s in stops[:-1]] + [int(s["arrive"]) for s in stops[1:]]
            given = sum(int(e) for s in stops for _, e in s["discharge"])
        except (KeyError, TypeError, ValueError) as exc:
            return "invalid", f"unreadable plan: {type(exc).__name__} {exc}"
        until = cfg.available_until
        if used and (min(used) < cfg.available_from or (until >= 0 and max(used) >= until)):
            return "window", (f"plan uses slots {min(used)}-{max(used)}; this vehicle serves "
                              f"{cfg.available_from}-{'end' if until < 0 else until - 1}")
        if cfg.max_discharge_kwh >= 0 and given > cfg.max_discharge_kwh * 1000:
            return "battery", (f"plan gives {given} Wh; this vehicle gives at most "
                               f"{round(cfg.max_discharge_kwh * 1000)} Wh")
        return None

    return check


class ModuleHost:
    """Owns the modules' state in one agent: a coordinator, vehicle endpoints, sessions."""

    def __init__(self, config: InterchangeSection, identity: Identity, send: Send,
                 loop: asyncio.AbstractEventLoop, log: NodeLogger, max_payload: int,
                 record: Record | None = None) -> None:
        self.config = config
        self.identity = identity
        self.send = send
        self.loop = loop
        self.log = log
        self.max_payload = max_payload
        self.record_fn = record
        self.counters: Counter[str] = Counter()
        self.coordinator: Coordinator | None = None
        self.vehicle_nodes: dict[str, bytes] = {}
        self.endpoints: dict[bytes, VehicleEndpoint] = {}
        self.answers: list[dict[str, Any]] = []  # as a vehicle: what it answered
        self.sessions: dict[str, Any] = {}  # vehicle id -> open ChargingSession
        self._answered: set[tuple[str, int]] = set()
        self._reassembly = Reassembly()
        self._msg_id = 0
        self._timer: asyncio.TimerHandle | None = None
        self._planning: asyncio.Task[None] | None = None
        self._coordinator_nodes = {}
        for hexkey in config.coordinator_keys:
            try:
                key = bytes.fromhex(hexkey)
            except ValueError:
                key = b""
            if len(key) != 32:
                raise ConfigError("interchange.coordinator_keys",
                                  f"{hexkey!r} is not a 64-hex-digit public key")
            self._coordinator_nodes[node_id_of(key)] = key

    def handlers(self) -> dict[str, Handler]:
        """Control-socket commands."""
        return {"interchange_send": self._cmd_send, "interchange_status": self._cmd_status,
                "charging_session": self._cmd_session}

    # ----------------------------------------------------------------- mesh input

    def on_event(self, event: ev.Event) -> bool:
        """Take a module payload (True), or leave the event to the agent (False)."""
        if not isinstance(event, ev.DataReceived):
            return False
        for prefix in (PLAN_PREFIX, ANSWER_PREFIX):
            if event.payload.startswith(prefix):
                data = self._reassembly.add(event.source, prefix, event.payload, event.time)
                if data is not None:
                    if prefix == PLAN_PREFIX:
                        self._on_plan(event.source, data)
                    else:
                        self._on_answer(data)
                return True
        return False

    def _on_plan(self, source: bytes, data: bytes) -> None:
        if not self.config.vehicle_id:
            self.counters["plan_not_a_vehicle"] += 1
            self.log.warning("interchange_plan_ignored", source=source.hex(),
                             reason="interchange.vehicle_id is not set")
            return
        key = self._coordinator_nodes.get(source)
        if key is None:
            self.counters["plan_unknown_coordinator"] += 1
            self.log.warning("interchange_plan_ignored", source=source.hex(),
                             reason="not in interchange.coordinator_keys")
            return
        endpoint = self.endpoints.get(source)
        if endpoint is None:
            from agent.modules.interchange.transmit import VehicleEndpoint

            endpoint = VehicleEndpoint(self.identity, self.config.vehicle_id, key,
                                       vehicle_check(self.config))
            self.endpoints[source] = endpoint
        reply = endpoint.receive(data, self.loop.time())
        if reply is None:
            self.counters["plan_rejected"] += 1
            return
        self._send(source, ANSWER_PREFIX, reply)
        body = cbor2.loads(data)["body"]
        answer = cbor2.loads(reply)
        rec = {"type": "interchange.answer", "plan_id": str(body.get("plan_id", "")),
               "version": body["version"], "vehicle": self.config.vehicle_id,
               "coordinator": source, "vehicle_node": self.identity.node_id,
               "answer": answer["t"], "reason": answer["body"].get("reason", ""),
               "detail": answer["body"].get("detail", ""), "plan": body["plan"]}
        if (rec["plan_id"], rec["version"]) in self._answered:
            return  # a resend of a plan already answered (our answer was lost): sent again
        self._answered.add((rec["plan_id"], rec["version"]))
        self.answers.append({k: v.hex() if isinstance(v, bytes) else v
                             for k, v in rec.items() if k not in ("type", "plan")})
        self.log.event("interchange_answered", plan_id=rec["plan_id"], version=rec["version"],
                       answer=rec["answer"], reason=rec["reason"])
        self._record(rec)

    def _on_answer(self, data: bytes) -> None:
        if self.coordinator is None:
            self.counters["answer_without_plan"] += 1
            return
        self.coordinator.receive(data, self.loop.time())
        self._pump()

    # ----------------------------------------------------------------- coordinator

    def send_plan(self, scenario_path: str) -> dict[str, Any]:
        """Start a coordinator for the scenario; its plans are made in a thread (`_pump`)."""
        from agent.modules.interchange.model import InterchangeError
        from agent.modules.interchange.scenario import load_scenario
        from agent.modules.interchange.transmit import Coordinator, TransmitError

        if self.coordinator is not None and self.coordinator.state in ("planning", "sending"):
            raise CommandError(f"plan version {self.coordinator.version} is still "
                               f"{self.coordinator.state}")
        keys = parse_vehicle_keys(self.config.vehicle_keys)
        try:
            scenario = load_scenario(Path(scenario_path))
        except (InterchangeError, OSError) as exc:
            raise CommandError(f"cannot load {scenario_path}: {exc}") from exc
        try:
            coord = Coordinator(scenario, self.identity,
                                {v.id: keys.get(v.id, b"") for v in scenario.vehicles
                                 if v.id in keys},
                                retry_s=self.config.retry_s, retries=self.config.retries,
                                max_replans=self.config.max_replans)
        except TransmitError as exc:
            raise CommandError(f"{exc} (add them to interchange.vehicle_keys)") from exc
        self.vehicle_nodes = {vid: node_id_of(k) for vid, k in keys.items()}
        self.coordinator = coord
        coord.start(self.loop.time())
        self._pump()
        return self.status()

    def _pump(self) -> None:
        """Send what the coordinator wants sent, record its events, re-arm its timer, and
        start planning in a thread when it asks for a plan."""
        coord = self.coordinator
        if coord is None:
            return
        from agent.modules.interchange import transmit as tx

        for out in coord.datagrams_to_send():
            self._send(self.vehicle_nodes[out.vehicle], PLAN_PREFIX, out.data)
        while (event := coord.next_event()) is not None:
            self.log.event("interchange_" + type(event).__name__.lower(), **_fields(event))
            if isinstance(event, tx.VehicleAccepted | tx.VehicleDeclined):
                declined = isinstance(event, tx.VehicleDeclined)
                self._record({
                    "type": "interchange.answer", "plan_id": _plan_id_of(coord, event.version),
                    "version": event.version, "vehicle": event.vehicle,
                    "coordinator": self.identity.node_id,
                    "vehicle_node": self.vehicle_nodes.get(event.vehicle, b""),
                    "answer": "decline" if declined else "ack",
                    "reason": event.reason if isinstance(event, tx.VehicleDeclined) else "",
                    "detail": event.detail if isinstance(event, tx.VehicleDeclined) else "",
                    "plan": None})
            elif isinstance(event, tx.PlanSettled | tx.PlanFailed):
                self._record(coord.record())
        self._arm()
        excluded = coord.wants_plan
        if excluded is not None and self._planning is None:
            self._planning = self.loop.create_task(self._plan(coord, excluded))

    async def _plan(self, coord: Coordinator, excluded: frozenset[str]) -> None:
        """The heuristic (up to about a second on 20 sites x 10 vehicles) in a thread, so
        the mesh core's timers and frames are not held up; each version is recorded."""
        from agent.modules.interchange.heuristic import solve_heuristic

        try:
            plan = await asyncio.to_thread(solve_heuristic, coord.scenario, exclude=excluded)
        except Exception as exc:  # a planner bug must not leave the coordinator stuck
            self.counters["planning_failed"] += 1
            self.log.warning("interchange_planning_failed", error=f"{type(exc).__name__}: {exc}")
            if coord is self.coordinator:
                self.coordinator = None
            return
        finally:
            self._planning = None
        if coord is not self.coordinator or coord.wants_plan != excluded:
            self._pump()  # replaced meanwhile: the current coordinator may be waiting to plan
            return
        coord.plan_ready(plan, self.loop.time())
        assert coord.plan is not None
        self._record(coord.plan.to_record())
        self._pump()

    def _arm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        deadline = None if self.coordinator is None else self.coordinator.get_timer()
        if deadline is not None:
            self._timer = self.loop.call_at(deadline, self._on_timer, deadline)

    def _on_timer(self, deadline: float) -> None:
        self._timer = None
        if self.coordinator is not None:
            self.coordinator.handle_timer(max(deadline, self.loop.time()))
            self._pump()

    # ----------------------------------------------------------------- shared

    def _send(self, dest: bytes, prefix: bytes, data: bytes) -> None:
        self._msg_id += 1
        for payload in chunk(prefix, self._msg_id, data, self.max_payload):
            self.send(dest, payload)
        self.counters["messages_sent"] += 1

    def _record(self, rec: dict[str, Any]) -> None:
        if self.record_fn is None:
            self.counters["not_recorded"] += 1
            return
        self.record_fn(rec)
        self.counters["recorded"] += 1

    def status(self) -> dict[str, Any]:
        coord = self.coordinator
        out: dict[str, Any] = {"vehicle_id": self.config.vehicle_id or None,
                               "answers": self.answers[-20:],
                               "counters": dict(sorted((self.counters
                                                        + Counter({"chunks_dropped":
                                                                   self._reassembly.dropped}))
                                                       .items())),
                               "coordinator": None}
        if coord is not None:
            out["coordinator"] = {
                "state": coord.state, "version": coord.version, "scenario": coord.scenario.name,
                "plan_id": None if coord.plan is None else coord.plan.plan_id,
                "saved": None if coord.plan is None else coord.plan.figures.saved,
                "answers": dict(sorted(coord.answers.items())),
                "excluded": sorted(coord.excluded), "history": coord.history,
                "counters": dict(coord.counters)}
        return out

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._planning is not None:
            self._planning.cancel()
            self._planning = None

    # ----------------------------------------------------------------- charging sessions

    def session(self, req: Mapping[str, Any]) -> dict[str, Any]:
        """Start, stop or list charging sessions; starts and stops go to the ledger."""
        from agent.modules.charging.errors import ChargingError
        from agent.modules.charging.session import ChargingSession

        action = req.get("action")
        if action == "list":
            return {"open": [s.to_record() for s in self.sessions.values()]}
        vehicle = str(req.get("vehicle") or self.config.vehicle_id)
        if not vehicle:
            raise CommandError("vehicle is required (or set interchange.vehicle_id)")
        now = int(time.time())
        try:
            if action == "start":
                if vehicle in self.sessions:
                    raise CommandError(f"vehicle {vehicle} already has a session open")
                location = _text(req, "location")
                plan_id = str(req.get("plan_id") or hashlib.sha256(
                    f"{vehicle}|{location}|{now}".encode()).hexdigest()[:16])
                session = ChargingSession(
                    plan_id, vehicle, location, _text(req, "connector"), "charging", now, None,
                    0, None, str(req.get("currency", "")), _int(req, "planned_wh", 0),
                    _opt_int(req, "planned_cost_milli"))
                self.sessions[vehicle] = session
            elif action == "stop":
                if vehicle not in self.sessions:
                    raise CommandError(f"vehicle {vehicle} has no session open")
                session = self.sessions[vehicle].finished(
                    ended_at=now, metered_wh=_int(req, "metered_wh", 0),
                    cost_milli=_opt_int(req, "cost_milli"), aborted=bool(req.get("aborted")))
                del self.sessions[vehicle]
            else:
                raise CommandError("action must be start, stop or list")
        except ChargingError as exc:
            raise CommandError(str(exc)) from exc
        rec = session.to_record()
        self._record(rec)
        self.log.event("charging_session", vehicle=vehicle, status=session.status,
                       plan_id=session.plan_id)
        return rec

    async def _cmd_send(self, req: dict[str, Any]) -> Any:
        scenario = _text(req, "scenario")
        await asyncio.to_thread(_load_planner)  # the first import takes 1-1.5 s: off the loop
        return self.send_plan(scenario)

    async def _cmd_status(self, req: dict[str, Any]) -> Any:
        return self.status()

    async def _cmd_session(self, req: dict[str, Any]) -> Any:
        return self.session(req)


def _load_planner() -> None:
    """Import the planner and what its local search uses (numpy, scipy)."""
    import scipy.optimize  # noqa: F401

    import agent.modules.interchange.heuristic  # noqa: F401


def _plan_id_of(coord: Coordinator, version: int) -> str:
    return next((str(h["plan_id"]) for h in coord.history if h["version"] == version), "")


def _fields(event: Any) -> dict[str, Any]:
    return {name: ",".join(value) if isinstance(value, tuple) else value
            for name in event.__slots__ for value in (getattr(event, name),)}


def _text(req: Mapping[str, Any], key: str) -> str:
    value = req.get(key)
    if not isinstance(value, str) or not value:
        raise CommandError(f"{key} is required")
    return value


def _int(req: Mapping[str, Any], key: str, default: int) -> int:
    value = req.get(key, default)
    if type(value) is not int or value < 0:
        raise CommandError(f"{key} must be a non-negative integer")
    return value


def _opt_int(req: Mapping[str, Any], key: str) -> int | None:
    return None if req.get(key) is None else _int(req, key, 0)
