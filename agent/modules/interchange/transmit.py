"""Sending a plan to its vehicles: signed messages, acks, declines with reasons, re-planning.

Sans-I/O, like the mesh core: the coordinator and each vehicle endpoint take bytes and `now`
and hand back bytes to carry (over the mesh or the backhaul, the caller's choice) and typed
events. Every message is a canonical CBOR envelope {v, t, from, body, sig}, signed with the
sender's Ed25519 identity over [v, t, from, body]. The coordinator sends each vehicle its part
of plan version n; when a vehicle declines (with a reason) or stays silent past its retries,
the coordinator re-plans without it and sends version n+1 to every vehicle. When all vehicles
in the current version have acknowledged it, the plan is settled and `record()` gives what
the ledger keeps. Planning itself is asked of the caller (`wants_plan`, then `plan_ready`), so
that a second of solving runs off the caller's event loop.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import cbor2

from agent.modules.interchange.model import Scenario
from agent.modules.interchange.plan import Plan
from mesh.identity import Identity, node_id_of, verify

VERSION = 1
MAX_MESSAGE = 64 * 1024
DECLINE_REASONS = frozenset({"unavailable", "battery", "window", "stale", "invalid", "timeout"})


class TransmitError(Exception):
    """A message that cannot be accepted: malformed, oversized, forged or unexpected."""


@dataclass(frozen=True, slots=True)
class Outgoing:
    vehicle: str
    data: bytes


@dataclass(frozen=True, slots=True)
class PlanSent:
    version: int
    vehicles: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class VehicleAccepted:
    vehicle: str
    version: int


@dataclass(frozen=True, slots=True)
class VehicleDeclined:
    vehicle: str
    version: int
    reason: str
    detail: str


@dataclass(frozen=True, slots=True)
class Replanned:
    version: int
    excluded: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class PlanSettled:
    version: int
    plan_id: str


@dataclass(frozen=True, slots=True)
class PlanFailed:
    version: int
    reason: str


@dataclass(frozen=True, slots=True)
class MessageRejected:
    reason: str


Event = (PlanSent | VehicleAccepted | VehicleDeclined | Replanned | PlanSettled | PlanFailed
         | MessageRejected)


def encode(identity: Identity, kind: str, body: Mapping[str, Any]) -> bytes:
    signed = [VERSION, kind, identity.node_id, dict(body)]
    sig = identity.sign(cbor2.dumps(signed, canonical=True))
    return cbor2.dumps({"v": VERSION, "t": kind, "from": identity.node_id, "body": dict(body),
                        "sig": sig}, canonical=True)


def decode(data: bytes, public_key: Callable[[bytes], bytes | None]
           ) -> tuple[str, bytes, dict[str, Any]]:
    """(kind, sender node id, body) of a verified message; TransmitError otherwise.
    `public_key` maps a sender's node id to its key (None when unknown)."""
    if len(data) > MAX_MESSAGE:
        raise TransmitError(f"message of {len(data)} bytes exceeds {MAX_MESSAGE}")
    try:
        msg = cbor2.loads(data)
    except (cbor2.CBORDecodeError, ValueError, TypeError, OverflowError) as exc:
        raise TransmitError(f"not CBOR: {exc}") from exc
    if not isinstance(msg, dict) or set(msg) != {"v", "t", "from", "body", "sig"}:
        raise TransmitError("not a plan envelope")
    if msg["v"] != VERSION:
        raise TransmitError(f"unsupported version {msg['v']!r}")
    kind, sender, body, sig = msg["t"], msg["from"], msg["body"], msg["sig"]
    if not (isinstance(kind, str) and isinstance(sender, bytes) and isinstance(body, dict)
            and isinstance(sig, bytes)):
        raise TransmitError("envelope fields have the wrong types")
    key = public_key(sender)
    if key is None or node_id_of(key) != sender:
        raise TransmitError(f"unknown sender {sender.hex()}")
    if not verify(key, sig, cbor2.dumps([VERSION, kind, sender, body], canonical=True)):
        raise TransmitError(f"bad signature from {sender.hex()}")
    return kind, sender, body


def _field(body: Mapping[str, Any], name: str, kind: type) -> Any:
    value = body.get(name)
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is int):
        raise TransmitError(f"field {name!r} missing or not {kind.__name__}")
    return value


class Coordinator:
    """The aggregator's side: plan, send, collect answers, re-plan on a decline."""

    def __init__(self, scenario: Scenario, identity: Identity,
                 vehicle_keys: Mapping[str, bytes], *,
                 retry_s: float = 10.0, retries: int = 2, max_replans: int = 5) -> None:
        missing = [v.id for v in scenario.vehicles if v.id not in vehicle_keys]
        if missing:
            raise TransmitError(f"no public key for vehicles {missing}")
        self.scenario = scenario
        self.identity = identity
        self._keys = dict(vehicle_keys)
        self._by_node = {node_id_of(k): vid for vid, k in vehicle_keys.items()}
        self.retry_s = retry_s
        self.retries = retries
        self.max_replans = max_replans
        self.version = 0
        self.plan: Plan | None = None
        self.state = "idle"  # idle -> planning -> sending -> settled | failed (planning again
        # after a decline)
        self.excluded: set[str] = set()
        self.answers: dict[str, str] = {}  # vehicle -> "ack" or "decline:reason"
        self.history: list[dict[str, Any]] = []
        self.counters: Counter[str] = Counter()
        self._pending: dict[str, tuple[bytes, float, int]] = {}  # data, next try, tries
        self._out: deque[Outgoing] = deque()
        self._events: deque[Event] = deque()

    # -- the sans-I/O surface ---------------------------------------------------------
    def start(self, now: float) -> None:
        if self.state != "idle":
            raise TransmitError(f"start() in state {self.state}")
        self._want_plan()

    @property
    def wants_plan(self) -> frozenset[str] | None:
        """The vehicles to leave out of the plan we wait for, or None when we wait for none.

        Planning takes up to a second, so the caller runs it where it does not stall its
        loop (a thread) and hands the result to `plan_ready`.
        """
        return frozenset(self.excluded) if self.state == "planning" else None

    def plan_ready(self, plan: Plan, now: float) -> None:
        """The plan asked for by `wants_plan`: sign each vehicle's part and send it."""
        if self.state != "planning":
            raise TransmitError(f"plan_ready() in state {self.state}")
        self.plan = Plan(plan.scenario, plan.solver, plan.vehicles, plan.figures,
                         plan.runtime_s, plan.status, plan.bound, self.version)
        self.state = "sending"
        for v in self.scenario.vehicles:
            if v.id in self.excluded:
                continue
            body = {"plan_id": self.plan.plan_id, "version": self.version, "vehicle": v.id,
                    "scenario": self.scenario.name,
                    "plan": self.plan.vehicle_plan(v.id).to_record()}
            data = encode(self.identity, "plan", body)
            self._pending[v.id] = (data, now + self.retry_s, 1)
            self._out.append(Outgoing(v.id, data))
        self.history.append({"version": self.version, "plan_id": self.plan.plan_id,
                             "excluded": sorted(self.excluded)})
        self._events.append(PlanSent(self.version, tuple(sorted(self._pending))))
        if not self._pending:
            self._settle()

    def datagrams_to_send(self) -> list[Outgoing]:
        out = list(self._out)
        self._out.clear()
        return out

    def next_event(self) -> Event | None:
        return self._events.popleft() if self._events else None

    def get_timer(self) -> float | None:
        return min((t for _, t, _ in self._pending.values()), default=None)

    def handle_timer(self, now: float) -> None:
        for vid, (data, due, tries) in list(self._pending.items()):
            if due > now:
                continue
            if tries > self.retries:
                del self._pending[vid]
                self._declined(vid, "timeout", f"no answer after {tries} sends")
                if self.state != "sending":
                    return
                continue
            self._pending[vid] = (data, now + self.retry_s, tries + 1)
            self._out.append(Outgoing(vid, data))
            self.counters["resent"] += 1

    def receive(self, data: bytes, now: float) -> None:
        """An answer from a vehicle; bad input is counted and reported as an event."""
        try:
            kind, sender, body = decode(data, lambda nid: self._keys.get(
                self._by_node.get(nid, "")))
            vid = _field(body, "vehicle", str)
            if self._by_node.get(sender) != vid:
                raise TransmitError(f"{sender.hex()} answered for vehicle {vid}")
            version = _field(body, "version", int)
            if kind not in ("ack", "decline"):
                raise TransmitError(f"unexpected message type {kind!r}")
        except TransmitError as exc:
            self.counters["rejected"] += 1
            self._events.append(MessageRejected(str(exc)))
            return
        if version != self.version or self.state != "sending" or vid not in self._pending:
            self.counters["stale"] += 1
            return
        del self._pending[vid]
        if kind == "ack":
            self.answers[vid] = "ack"
            self._events.append(VehicleAccepted(vid, version))
            if not self._pending:
                self._settle()
            return
        reason = body.get("reason")
        detail = body.get("detail", "")
        if reason not in DECLINE_REASONS or not isinstance(detail, str):
            reason, detail = "invalid", f"unreadable decline: {reason!r}"
        self._declined(vid, str(reason), detail)

    def record(self) -> dict[str, Any]:
        """What the ledger keeps: the final plan, every vehicle's answer, the version history."""
        return {"type": "interchange.transmission", "state": self.state,
                "version": self.version, "coordinator": self.identity.node_id,
                "plan": None if self.plan is None else self.plan.to_record(),
                "answers": dict(sorted(self.answers.items())), "history": self.history}

    # -- internals --------------------------------------------------------------------
    def _want_plan(self) -> None:
        self.version += 1
        self.state = "planning"
        self._pending.clear()

    def _declined(self, vid: str, reason: str, detail: str) -> None:
        self.answers[vid] = f"decline:{reason}"
        self._events.append(VehicleDeclined(vid, self.version, reason, detail))
        self.excluded.add(vid)
        if self.version > self.max_replans:
            self.state = "failed"
            self._pending.clear()
            self._events.append(PlanFailed(self.version, "too many re-plans"))
            return
        self._events.append(Replanned(self.version + 1, tuple(sorted(self.excluded))))
        self._want_plan()

    def _settle(self) -> None:
        self.state = "settled"
        assert self.plan is not None
        self._events.append(PlanSettled(self.version, self.plan.plan_id))


VehicleCheck = Callable[[Mapping[str, Any]], tuple[str, str] | None]


class VehicleEndpoint:
    """The vehicle's side: verify the coordinator's plan, check it can do it, answer."""

    def __init__(self, identity: Identity, vehicle_id: str, coordinator_key: bytes,
                 check: VehicleCheck | None = None) -> None:
        self.identity = identity
        self.vehicle_id = vehicle_id
        self.coordinator_key = coordinator_key
        self.check = check
        self.accepted: dict[str, Any] | None = None  # the plan body it acknowledged
        self.last_version = 0
        self.counters: Counter[str] = Counter()

    def receive(self, data: bytes, now: float) -> bytes | None:
        """The answer to send back, or None when the message is ignored (counted)."""
        try:
            kind, _, body = decode(data, lambda nid: self.coordinator_key
                                   if nid == node_id_of(self.coordinator_key) else None)
            if kind != "plan":
                raise TransmitError(f"unexpected message type {kind!r}")
            version = _field(body, "version", int)
            if _field(body, "vehicle", str) != self.vehicle_id:
                raise TransmitError("plan addressed to another vehicle")
            _field(body, "plan", dict)
        except TransmitError:
            self.counters["rejected"] += 1
            return None
        if version < self.last_version:
            self.counters["stale"] += 1
            return None
        self.last_version = version
        answer = {"plan_id": body.get("plan_id", ""), "version": version,
                  "vehicle": self.vehicle_id}
        verdict = self.check(body) if self.check is not None else None
        if verdict is not None:
            reason, detail = verdict
            self.accepted = None
            return encode(self.identity, "decline", {**answer, "reason": reason,
                                                     "detail": detail})
        self.accepted = body
        return encode(self.identity, "ack", answer)
