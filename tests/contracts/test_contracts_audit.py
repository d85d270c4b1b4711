"""Provisional contracts, definitive only when an auditor approves; records are appended."""

from __future__ import annotations

from ledger.contracts import Engine
from ledger.contracts import payloads as P

T0 = 1_764_000_000_000


def provisional(n):
    tx = n.owner.tx(P.create("agreement", {"title": "interchange pilot"},
                             {"auditor": [n.auditor.node], "member": [n.v1.node]}), T0)
    return P.created_id(tx.tx_id), tx


def test_only_an_auditor_can_approve(nodes):
    cid, create = provisional(nodes)
    attempts = [nodes.owner.tx(P.call(cid, "approve", reason="mine"), T0 + 1),
                nodes.v1.tx(P.call(cid, "approve", reason="member"), T0 + 2),
                nodes.stranger.tx(P.call(cid, "approve", reason="anyone"), T0 + 3)]
    result = Engine().replay([create, *attempts])
    assert [h.code for h in result.history[1:]] == ["permission_denied"] * 3
    assert result.state[f"c/{cid}"]["status"] == "provisional"
    assert [c["id"] for c in result.pending_for(nodes.auditor.node)] == [cid]
    assert result.pending_for(nodes.v1.node) == []
    ok = Engine().replay([create, *attempts,
                          nodes.auditor.tx(P.call(cid, "approve", reason="checked"), T0 + 9)])
    rec = ok.state[f"c/{cid}"]
    assert rec["status"] == "definitive"
    assert [(e["flag"], e["by"], e["reason"]) for e in rec["log"]] == [
        ("provisional", nodes.owner.node, "created"),
        ("definitive", nodes.auditor.node, "checked")]
    assert ok.pending_for(None) == []


def test_reject_is_final_for_the_contract_and_keeps_the_reason(nodes):
    cid, create = provisional(nodes)
    txs = [create, nodes.auditor.tx(P.call(cid, "reject", reason="no tariff attached"), T0 + 1),
           nodes.auditor.tx(P.call(cid, "approve", reason="changed my mind"), T0 + 2),
           nodes.v1.tx(P.call(cid, "record_usage", record={
               "service": "charging", "user": nodes.v1.node, "kwh": 1, "time_ms": T0}), T0 + 3)]
    result = Engine().replay(txs)
    assert [h.code for h in result.history] == ["ok", "ok", "wrong_status", "ok"]
    rec = result.state[f"c/{cid}"]
    assert rec["status"] == "rejected"
    assert rec["log"][-1]["reason"] == "no tariff attached"
    usage = result.state[f"u/{cid}/00000000"]
    assert usage["permitted"] is False
    assert "contract is rejected, not definitive" in usage["reasons"]


def test_reason_is_required(nodes):
    cid, create = provisional(nodes)
    result = Engine().replay([create, nodes.auditor.tx(P.call(cid, "approve"), T0 + 1)])
    assert result.history[-1].code == "invalid"


def test_contract_without_auditor_is_definitive_at_once(nodes):
    tx = nodes.owner.tx(P.create("agreement", {}), T0)
    result = Engine().replay([tx])
    assert result.state[f"c/{P.created_id(tx.tx_id)}"]["status"] == "definitive"
