"""The model's guarantees: order independence, typed refusals, step budget, roles."""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any, ClassVar

import cbor2
import pytest

from ledger.contracts import ContractTx, Engine, canonical_order, make_tx
from ledger.contracts import payloads as P
from ledger.contracts.errors import StepBudgetExceeded
from ledger.contracts.model import Context, Meter, Result, StateView, Template
from ledger.contracts.tx import Checkpoint

T0 = 1_764_000_000_000


def scenario(n: Any) -> list[ContractTx]:
    """A mixed workload from five nodes: agreement, children, usage, tokens."""
    txs = []
    c = n.owner.tx(P.create("agreement", {"children": ["agreement"], "rules": {
        "services": ["charging"], "limit_wh": 40_000}},
        {"member": [n.v1.node, n.v2.node], "operator": [n.op.node]}), T0)
    cid = P.created_id(c.tx_id)
    txs.append(c)
    for i, v in enumerate((n.v1, n.v2, n.v1)):
        txs.append(v.tx(P.call(cid, "spawn", template="agreement", slot="s1",
                               params={"terms": {"price": 10 + i}}), T0 + 10 + i))
    for i in range(20):
        user = (n.v1, n.v2)[i % 2].node
        txs.append(n.op.tx(P.call(cid, "record_usage", record={
            "service": "charging" if i % 5 else "interchange", "user": user,
            "kwh": 3.5, "time_ms": T0 + 100 + i}), T0 + 200 + i))
    tk = n.owner.tx(P.create("tokens", {"fee_account": n.op.node, "tiers": [[0, 100]]}),
                    T0 + 300)
    tid = P.created_id(tk.tx_id)
    txs += [tk, n.owner.tx(P.call(tid, "mint", account=n.v1.node, amount=500), T0 + 301)]
    for i in range(5):
        t = n.v1.tx(P.call(tid, "transfer", **{"from": n.v1.node, "to": n.v2.node,
                                               "amount": 60, "at_ms": T0 + 400 + i}), T0 + 310 + i)
        txs += [t, n.v1.tx(P.call(tid, "fee", transfer=t.tx_id.hex(), fee=1), T0 + 320 + i)]
    return txs


def test_same_transactions_any_arrival_order_same_state_hash(nodes, engine):
    txs = scenario(nodes)
    reference = engine.replay(txs)
    assert reference.failed == 0
    rng = random.Random(7)
    for _node in range(6):
        arrived = list(txs)
        rng.shuffle(arrived)
        # some transactions arrive twice (from two peers): duplicates collapse
        arrived += rng.sample(txs, 5)
        result = Engine().replay(arrived)
        assert result.state_hash == reference.state_hash
        assert [h.tx_id for h in result.history] == [h.tx_id for h in reference.history]


def test_canonical_order_is_time_author_height_index(nodes):
    a = nodes.v1.tx(P.call("x", "m"), 5)
    b = nodes.v2.tx(P.call("x", "m"), 5)
    c = nodes.v1.tx(P.call("x", "m"), 4)
    order = [tx for _, tx in canonical_order([a, b, c])]
    assert order[0] is c
    assert order[1:] == sorted([a, b], key=lambda t: t.author)


def test_checkpointed_transactions_come_first(nodes):
    late = nodes.v1.tx(P.call("x", "m"), 1)          # old block time, not checkpointed
    early = nodes.v2.tx(P.call("x", "m"), 50)
    cp = Checkpoint(seq=1, time_ms=60, heights={nodes.v2.identity.node_id: 0})
    order = canonical_order([late, early], [cp])
    assert [tx for _, tx in order] == [early, late]
    assert order[0][0] == 1


def test_malformed_payloads_are_recorded_failures_not_crashes(nodes, engine):
    bad = [
        make_tx(nodes.stranger.identity.node_id, 0, 0, 1, b"\xff\x00garbage"),
        make_tx(nodes.stranger.identity.node_id, 1, 0, 2, cbor2.dumps([1, 2, 3])),
        nodes.v1.tx({"v": 2, "op": "create"}, 3),
        nodes.v1.tx({"v": 1, "op": "explode"}, 4),
        nodes.v1.tx({"v": 1, "op": "call", "contract": 5, "method": "x"}, 5),
        nodes.v1.tx(P.create("no-such-template", {}), 6),
        nodes.v1.tx(P.create("agreement", {"rules": {"limit_wh": -3}}), 7),
        nodes.v1.tx(P.create("agreement", {"rules": "all"}), 8),
        nodes.v1.tx(P.create("tokens", {"fee_account": "nobody"}), 9),
        nodes.v1.tx(P.call("000000000000000000000000", "approve", reason="x"), 10),
    ]
    result = engine.replay(bad)
    codes = [h.code for h in result.history]
    assert codes == ["invalid", "invalid", "invalid", "invalid", "invalid",
                     "unknown_contract", "invalid", "invalid", "invalid", "unknown_contract"]
    assert not any(k.startswith("c/") for k in result.state)
    assert sum(k.startswith("x/") for k in result.state) == len(bad)


def test_unknown_method_and_private_attributes_cannot_be_called(nodes, engine):
    c = nodes.owner.tx(P.create("agreement", {}), 1)
    cid = P.created_id(c.tx_id)
    txs = [c, nodes.owner.tx(P.call(cid, "validate_params", params={}), 2),
           nodes.owner.tx(P.call(cid, "settle", transfer="x"), 3)]
    result = engine.replay(txs)
    assert [h.code for h in result.history] == ["ok", "unknown_method", "unknown_method"]


class Looper(Template):
    """A template that loops, to show the step budget stops it."""

    NAME = "looper"
    ROLES_FOR: ClassVar[Mapping[str, frozenset[str]]] = {"spin": frozenset({"owner"})}

    def call_spin(self, ctx: Context, state: StateView, cid: str,
                  args: Mapping[str, Any]) -> Result:
        total = 0
        for i in range(int(args["n"])):
            ctx.meter.step()
            total += i
        return Result(writes={f"spin/{cid}": total})


def test_step_budget_stops_a_runaway_call_and_drops_its_writes(nodes):
    engine = Engine(templates={"looper": Looper()}, step_budget=1000)
    c = nodes.owner.tx(P.create("looper", {}), 1)
    cid = P.created_id(c.tx_id)
    result = engine.replay([c, nodes.owner.tx(P.call(cid, "spin", n=10), 2),
                            nodes.owner.tx(P.call(cid, "spin", n=5000), 3)])
    assert [h.code for h in result.history] == ["ok", "ok", "step_budget"]
    assert result.state[f"spin/{cid}"] == 45


def test_meter_counts_state_reads() -> None:
    meter = Meter(2)
    view = StateView({"a": 1}, meter)
    assert view.get("a") == 1
    assert "a" in view
    with pytest.raises(StepBudgetExceeded):
        view.get("b")


def test_roles_grant_revoke_and_only_owner_grants(nodes, engine):
    c = nodes.owner.tx(P.create("agreement", {"rules": {"services": ["charging"]}}), 1)
    cid = P.created_id(c.tx_id)
    rec = {"service": "charging", "user": nodes.v1.node, "kwh": 1, "time_ms": 1}
    txs = [c,
           nodes.v1.tx(P.call(cid, "record_usage", record=rec), 2),            # no role yet
           nodes.v1.tx(P.call(cid, "grant", role="member", node=nodes.v1.node), 3),
           nodes.owner.tx(P.call(cid, "grant", role="member", node=nodes.v1.node), 4),
           nodes.v1.tx(P.call(cid, "record_usage", record=rec), 5),
           nodes.owner.tx(P.call(cid, "revoke", role="member", node=nodes.v1.node), 6),
           nodes.v1.tx(P.call(cid, "record_usage", record=rec), 7),
           nodes.owner.tx(P.call(cid, "revoke", role="owner", node=nodes.owner.node), 8)]
    result = engine.replay(txs)
    assert [h.code for h in result.history] == [
        "ok", "permission_denied", "permission_denied", "ok", "ok", "ok",
        "permission_denied", "invalid"]
