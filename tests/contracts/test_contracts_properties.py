"""Properties over random workloads: order independence, and snapshot = full replay."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.contracts import ContractTx, Engine
from ledger.contracts import payloads as P
from ledger.contracts.harness import Feed
from ledger.contracts.tx import Checkpoint

T0 = 1_764_028_800_000
NAMES = ("owner", "auditor", "op", "v1", "v2", "v3")


def random_workload(seed: int, size: int) -> list[ContractTx]:
    rng = random.Random(seed)
    f = {n: Feed.from_seed(n) for n in NAMES}
    vehicles = [f["v1"], f["v2"], f["v3"]]
    c = f["owner"].tx(P.create("agreement", {
        "children": ["agreement"], "select": rng.choice(["first", "lowest:price"]),
        "audit_children": rng.random() < 0.5,
        "rules": {"limit_wh": 30_000, "limit_count": 5}},
        {"member": [v.node for v in vehicles], "operator": [f["op"].node],
         "auditor": [f["auditor"].node]}), T0)
    cid = P.created_id(c.tx_id)
    k = f["owner"].tx(P.create("tokens", {"fee_account": f["op"].node,
                                          "tiers": [[0, 300], [500, 100]]}), T0 + 1)
    tid = P.created_id(k.tx_id)
    txs = [c, k, f["owner"].tx(P.call(tid, "mint", account="shared:fleet", amount=1_000), T0 + 2),
           f["owner"].tx(P.call(tid, "share", account="shared:fleet",
                                holders=[v.node for v in vehicles]), T0 + 3),
           f["auditor"].tx(P.call(cid, "approve", reason="ok"), T0 + 4)]
    txs += [f["owner"].tx(P.call(tid, "mint", account=v.node, amount=300), T0 + 5)
            for v in vehicles]
    children = [cid]
    t = T0 + 10
    for _ in range(size):
        t += rng.randint(0, 3) * 1000
        v = rng.choice(vehicles)
        roll = rng.random()
        if roll < 0.1:
            txs.append(f["auditor"].tx(P.call(rng.choice(children),
                                              rng.choice(["approve", "reject"]),
                                              reason="r"), t))
        elif roll < 0.35:
            slot, params = f"s{rng.randint(0, 2)}", {"terms": {"price": rng.randint(1, 9)}}
            txs.append(v.tx(P.call(cid, "spawn", template="agreement", slot=slot,
                                   params=params), t))
            children.append(P.child_id(cid, "agreement", slot, params))
        elif roll < 0.6:
            txs.append(f["op"].tx(P.call(rng.choice(children), "record_usage", record={
                "service": rng.choice(["charging", "interchange"]), "user": v.node,
                "kwh": rng.randint(1, 20), "time_ms": t - 500}), t))
        else:
            tr = v.tx(P.call(tid, "transfer", **{
                "from": rng.choice(["shared:fleet", v.node]), "to": f["op"].node,
                "amount": rng.randint(1, 400), "at_ms": t + rng.randint(0, 5) * 1000}), t)
            txs.append(tr)
            if rng.random() < 0.9:
                txs.append(v.tx(P.call(tid, "fee", transfer=tr.tx_id.hex(),
                                       fee=rng.randint(0, 15)), t))
    return txs


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**32), st.integers(1, 60), st.randoms(use_true_random=False))
def test_any_arrival_order_gives_the_same_state(seed, size, rng):
    txs = random_workload(seed, size)
    shuffled = list(txs)
    rng.shuffle(shuffled)
    a = Engine().replay(txs)
    b = Engine().replay(shuffled + shuffled[: len(shuffled) // 3])     # with duplicates
    assert a.state_hash == b.state_hash
    for key, value in a.state.items():                                 # never negative
        if key.startswith(("b/", "h/")):
            assert value >= 0


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**32), st.integers(1, 60), st.data())
def test_replay_from_a_snapshot_equals_a_full_replay(seed, size, data):
    txs = random_workload(seed, size)
    heights: dict[bytes, int] = {}
    for tx in txs:
        heights[tx.author] = max(heights.get(tx.author, -1), tx.height)
    # the checkpoint covers a random prefix of each feed
    covered = {a: data.draw(st.integers(-1, h)) for a, h in sorted(heights.items())}
    cp = Checkpoint(seq=1, time_ms=T0 + data.draw(st.integers(0, 200_000)), heights=covered)
    as_of = T0 + 400_000
    full = Engine().replay(txs, [cp], as_of_ms=as_of)
    snap = full.snapshot()
    assert snap is not None and snap.state_hash == full.final_hash
    rest = [tx for tx in txs if not cp.covers(tx)]
    resumed = Engine().replay(rest, [cp], as_of_ms=as_of, base=snap)
    assert resumed.state_hash == full.state_hash
    assert resumed.final_hash == full.final_hash


PLAIN = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | st.text(max_size=20)
    | st.binary(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner,
                                                                max_size=4),
    max_leaves=12)
FIELDS = st.sampled_from(["v", "op", "template", "params", "roles", "contract", "method",
                          "args", "record", "amount", "from", "to", "at_ms", "fee", "transfer",
                          "slot", "rules", "reason", "role", "node", "account", "holders"])


@settings(max_examples=150, deadline=None)
@given(st.lists(st.one_of(
    st.dictionaries(FIELDS, PLAIN, max_size=6),
    st.fixed_dictionaries({"v": st.just(1), "op": st.just("call"),
                           "contract": st.just("CID"),
                           "method": st.sampled_from(["record_usage", "spawn", "approve",
                                                      "grant", "mint", "transfer", "fee"]),
                           "args": st.dictionaries(FIELDS, PLAIN, max_size=5)}),
    st.binary(max_size=40)), max_size=12))
def test_untrusted_payloads_only_ever_give_recorded_refusals(bodies):
    """Whatever the payloads, replay finishes and each transaction is applied or refused."""
    owner = Feed.from_seed("owner")
    c = owner.tx(P.create("agreement", {"children": ["agreement"]}), T0)
    k = owner.tx(P.create("tokens", {"fee_account": owner.node}), T0)
    cid = P.created_id(c.tx_id)
    txs = [c, k]
    for i, body in enumerate(bodies):
        if isinstance(body, dict) and body.get("contract") == "CID":
            body = {**body, "contract": cid}
        txs.append(owner.tx(body, T0 + 1 + i))
    result = Engine().replay(txs)
    assert result.applied == len(txs)
    assert all(h.code == "ok" or h.message for h in result.history)
    assert Engine().replay(list(reversed(txs))).state_hash == result.state_hash
