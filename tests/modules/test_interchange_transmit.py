from collections.abc import Mapping
from typing import Any

import cbor2
import pytest

from agent.modules.interchange.generate import generated_case
from agent.modules.interchange.heuristic import solve_heuristic
from agent.modules.interchange.plan import check
from agent.modules.interchange.transmit import (
    Coordinator,
    MessageRejected,
    PlanSent,
    PlanSettled,
    Replanned,
    TransmitError,
    VehicleAccepted,
    VehicleDeclined,
    VehicleEndpoint,
    decode,
    encode,
)
from mesh.identity import Identity

SCENARIO = generated_case(5, 3, seed=11)


def serve_plans(coord: Coordinator, now: float) -> None:
    """Plan whenever the coordinator asks (the module host does it in a thread)."""
    while (excluded := coord.wants_plan) is not None:
        coord.plan_ready(solve_heuristic(coord.scenario, exclude=excluded), now)


def setup(checks: Mapping[str, Any] | None = None
          ) -> tuple[Coordinator, dict[str, VehicleEndpoint], Identity]:
    coord_id = Identity.from_seed(b"c" * 32)
    ids = {v.id: Identity.from_seed(bytes([65 + k]) * 32)
           for k, v in enumerate(SCENARIO.vehicles)}
    coord = Coordinator(SCENARIO, coord_id, {vid: i.public_key for vid, i in ids.items()},
                        retry_s=5.0, retries=1)
    ends = {vid: VehicleEndpoint(i, vid, coord_id.public_key, (checks or {}).get(vid))
            for vid, i in ids.items()}
    return coord, ends, coord_id


def deliver(coord: Coordinator, ends: dict[str, VehicleEndpoint], now: float,
            silent: frozenset[str] = frozenset()) -> None:
    """Carry messages both ways until nothing is left (the mesh, by hand)."""
    while True:
        serve_plans(coord, now)
        out = coord.datagrams_to_send()
        if not out:
            return
        for msg in out:
            if msg.vehicle in silent:
                continue
            reply = ends[msg.vehicle].receive(msg.data, now)
            if reply is not None:
                coord.receive(reply, now)


def events(coord: Coordinator) -> list[object]:
    out: list[object] = []
    while (ev := coord.next_event()) is not None:
        out.append(ev)
    return out


def test_all_vehicles_acknowledge() -> None:
    coord, ends, _ = setup()
    coord.start(now=0.0)
    deliver(coord, ends, 0.0)
    evs = events(coord)
    assert evs[0] == PlanSent(1, tuple(sorted(ends)))
    assert {e.vehicle for e in evs if isinstance(e, VehicleAccepted)} == set(ends)
    assert isinstance(evs[-1], PlanSettled) and coord.state == "settled"
    assert coord.get_timer() is None
    rec = coord.record()
    assert rec["answers"] == {vid: "ack" for vid in ends}
    assert rec["plan"]["version"] == 1 and cbor2.loads(cbor2.dumps(rec)) == rec
    for vid, end in ends.items():
        assert end.accepted is not None
        assert end.accepted["plan"] == coord.plan.vehicle_plan(vid).to_record()  # type: ignore


def test_decline_with_reason_triggers_a_replan() -> None:
    busy = SCENARIO.vehicles[0].id
    coord, ends, _ = setup({busy: lambda body: ("battery", "only 12 kWh left")})
    coord.start(now=0.0)
    deliver(coord, ends, 0.0)
    evs = events(coord)
    declined = [e for e in evs if isinstance(e, VehicleDeclined)]
    assert declined == [VehicleDeclined(busy, 1, "battery", "only 12 kWh left")]
    assert Replanned(2, (busy,)) in evs
    assert isinstance(evs[-1], PlanSettled) and evs[-1].version == 2
    assert coord.answers[busy] == "decline:battery"
    assert coord.plan is not None and check(SCENARIO, coord.plan) == []
    idle = coord.plan.vehicle_plan(busy)
    assert all(not s.charge and not s.discharge for s in idle.stops)
    assert [h["excluded"] for h in coord.record()["history"]] == [[], [busy]]


def test_silent_vehicle_times_out_after_retries() -> None:
    quiet = SCENARIO.vehicles[1].id
    coord, ends, _ = setup()
    coord.start(now=0.0)
    deliver(coord, ends, 0.0, silent=frozenset({quiet}))
    assert coord.state == "sending" and coord.get_timer() == 5.0
    coord.handle_timer(5.0)  # resend once
    deliver(coord, ends, 5.0, silent=frozenset({quiet}))
    assert coord.counters["resent"] == 1 and coord.get_timer() == 10.0
    coord.handle_timer(10.0)  # retries exhausted: a decline for "timeout", then a re-plan
    deliver(coord, ends, 10.0, silent=frozenset({quiet}))
    evs = events(coord)
    assert VehicleDeclined(quiet, 1, "timeout", "no answer after 2 sends") in evs
    assert coord.state == "settled" and coord.version == 2


def test_forged_garbage_and_stale_messages_are_rejected() -> None:
    coord, ends, _ = setup()
    coord.start(now=0.0)
    assert coord.wants_plan == frozenset() and coord.datagrams_to_send() == []
    serve_plans(coord, 0.0)
    out = coord.datagrams_to_send()
    vid = out[0].vehicle
    # A reply signed by someone else, claiming to be the vehicle.
    mallory = Identity.from_seed(b"m" * 32)
    coord.receive(encode(mallory, "ack", {"plan_id": "x", "version": 1, "vehicle": vid}), 0.0)
    coord.receive(b"\xff\x00garbage", 0.0)
    coord.receive(b"\x00" * 70_000, 0.0)
    evs = events(coord)
    rejected = [e.reason for e in evs if isinstance(e, MessageRejected)]
    assert len(rejected) == 3 and "unknown sender" in rejected[0]
    assert "not CBOR" in rejected[1] and "exceeds" in rejected[2]
    assert coord.counters["rejected"] == 3 and coord.state == "sending"
    # A vehicle ignores a plan not signed by its coordinator, and older versions.
    end = ends[vid]
    assert end.receive(encode(mallory, "plan", {"version": 9, "vehicle": vid, "plan": {}}),
                       0.0) is None
    assert end.receive(out[0].data, 0.0) is not None
    end.last_version = 5
    assert end.receive(out[0].data, 0.0) is None
    assert end.counters == {"rejected": 1, "stale": 1}
    # A stale ack (old version) is counted, not applied.
    other = out[1].vehicle
    stale = ends[other].identity
    coord.receive(encode(stale, "ack", {"plan_id": "x", "version": 0, "vehicle": other}), 0.0)
    assert coord.counters["stale"] == 1


def test_decode_checks_the_signature() -> None:
    ident = Identity.from_seed(b"k" * 32)
    data = encode(ident, "ack", {"version": 1})
    kind, sender, body = decode(data, lambda nid: ident.public_key)
    assert (kind, sender, body) == ("ack", ident.node_id, {"version": 1})
    msg = cbor2.loads(data)
    msg["body"]["version"] = 2
    with pytest.raises(TransmitError, match="bad signature"):
        decode(cbor2.dumps(msg, canonical=True), lambda nid: ident.public_key)
    with pytest.raises(TransmitError, match="not a plan envelope"):
        decode(cbor2.dumps([1, 2]), lambda nid: ident.public_key)


def test_decoder_raises_only_its_own_error_on_mangled_input() -> None:
    import random

    ident = Identity.from_seed(b"f" * 32)
    good = encode(ident, "plan", {"version": 3, "vehicle": "ev0", "plan": {"stops": []}})
    rng = random.Random(5)
    samples = [bytes(rng.randrange(256) for _ in range(rng.randrange(1, 80)))
               for _ in range(300)]
    for _ in range(300):
        mangled = bytearray(good)
        for _ in range(rng.randrange(1, 4)):
            mangled[rng.randrange(len(mangled))] = rng.randrange(256)
        samples.append(bytes(mangled))
    samples += [good[:k] for k in range(len(good))]
    accepted = 0
    for data in samples:
        try:
            decode(data, lambda nid: ident.public_key)
            accepted += 1
        except TransmitError:
            pass
    assert accepted == 0  # every change breaks the envelope or the signature
