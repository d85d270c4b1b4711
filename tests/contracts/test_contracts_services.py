"""Usage records made from the charging and interchange modules' own ledger records."""

from __future__ import annotations

import pytest

from agent.modules.charging.session import ChargingSession
from agent.modules.interchange.plan import Stop, VehiclePlan
from ledger.contracts import Engine
from ledger.contracts import payloads as P
from ledger.contracts.errors import ContractError, InvalidTransaction
from ledger.contracts.services import charging_usage, determination, interchange_usage

T0 = 1_764_028_800_000          # 00:00 UTC


def test_module_records_become_checked_usage(nodes):
    session = ChargingSession("plan-1", "car-7", "LOC1", "EVSE1*1", "completed",
                              started_at=T0 // 1000 + 8 * 3600, ended_at=T0 // 1000 + 9 * 3600,
                              metered_wh=22_500, cost_milli=7_000, currency="EUR",
                              planned_wh=22_000, planned_cost_milli=6_900)
    plan = VehiclePlan("car-7", (Stop("siteA", 4, 6, charge={4: 8_000}),
                                 Stop("siteB", 9, 10, discharge={9: 7_200}),
                                 Stop("siteA", 12, 16)))
    usage = [charging_usage(session.to_record(), nodes.v1.node),
             *interchange_usage(plan.to_record(), nodes.v1.node, slot0_ms=T0, slot_minutes=60)]
    assert [(u["service"], u["kwh"]) for u in usage] == [
        ("charging", 22.5), ("interchange", 8.0), ("interchange", 7.2)]
    create = nodes.owner.tx(P.create("agreement", {"rules": {
        "services": ["charging", "interchange"], "limit_wh": 35_000}},
        {"member": [nodes.v1.node], "operator": [nodes.op.node]}), T0)
    cid = P.created_id(create.tx_id)
    txs = [create] + [nodes.op.tx(P.call(cid, "record_usage", record=u), T0 + 20 * 3_600_000 + i)
                      for i, u in enumerate(usage)]
    result = Engine().replay(txs)
    recs = [result.state[f"u/{cid}/{i:08d}"] for i in range(3)]
    assert [(r["service"], r["wh"], r["permitted"]) for r in recs] == [
        ("charging", 22_500, True), ("interchange", 8_000, True), ("interchange", 7_200, False)]


def test_unfinished_or_malformed_records_are_refused(nodes):
    planned = {"type": "charging.session", "status": "planned", "metered_wh": 0,
               "ended_at": None}
    with pytest.raises(InvalidTransaction):
        charging_usage(planned, nodes.v1.node)
    with pytest.raises(InvalidTransaction):
        charging_usage({"type": "other"}, nodes.v1.node)
    with pytest.raises(InvalidTransaction):
        interchange_usage({"stops": [{"arrive": 1}]}, nodes.v1.node, slot0_ms=0, slot_minutes=15)
    with pytest.raises(InvalidTransaction):
        interchange_usage({"stops": []}, "car-7", slot0_ms=0, slot_minutes=15)


def test_operator_forwards_its_determination_and_every_node_checks_it(nodes):
    create = nodes.owner.tx(P.create("agreement", {"rules": {"services": ["charging"],
                                                             "limit_wh": 10_000}},
                                     {"member": [nodes.v1.node], "operator": [nodes.op.node]}),
                            T0)
    cid = P.created_id(create.tx_id)
    engine = Engine()
    before = engine.replay([create])
    ok = {"service": "charging", "user": nodes.v1.node, "kwh": 4.0, "time_ms": T0 + 5}
    big = {**ok, "kwh": 40.0}
    said_ok = determination(engine, before.state, nodes.op.identity.node_id, T0 + 10, cid, ok)
    said_big = determination(engine, before.state, nodes.op.identity.node_id, T0 + 10, cid, big)
    assert said_ok == {"permitted": True, "reasons": []}
    assert said_big["permitted"] is False
    assert before.state_hash == engine.replay([create]).state_hash     # preview changed nothing
    lying = {"permitted": True, "reasons": []}
    txs = [create,
           nodes.op.tx(P.call(cid, "record_usage", record=ok, determination=said_ok), T0 + 10),
           nodes.op.tx(P.call(cid, "record_usage", record=big, determination=lying), T0 + 11)]
    result = engine.replay(txs)
    first, second = (result.state[f"u/{cid}/{i:08d}"] for i in range(2))
    assert first["agrees"] is True and first["claimed"] == said_ok
    assert second["agrees"] is False and second["permitted"] is False
    assert "determination_differs" in [e.kind for e in result.history[-1].events]
    with pytest.raises(ContractError):
        determination(engine, before.state, nodes.stranger.identity.node_id, T0 + 10, cid, ok)
