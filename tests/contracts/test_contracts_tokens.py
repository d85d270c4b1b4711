"""Fees and tokens: scheduled transfers, fee tiers from settled history, double spends."""

from __future__ import annotations

import random
from types import SimpleNamespace

from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.contracts import Engine
from ledger.contracts import payloads as P
from ledger.contracts.harness import Feed
from ledger.contracts.tokens import fee_for, quote_fee, window_volume, with_entry
from ledger.contracts.tx import Checkpoint

T0 = 1_764_000_000_000
DAY = 86_400_000
TIERS = [[0, 200], [1_000, 100], [5_000, 50]]


def token(n, **params):
    p = {"fee_account": n.op.node, "tiers": TIERS, "min_fee": 1, "window_ms": 7 * DAY, **params}
    tx = n.owner.tx(P.create("tokens", p, {"operator": [n.op.node]}), T0)
    return P.created_id(tx.tx_id), tx


def pay(feed, tid, source, to, amount, at, t, fee):
    """The two linked transactions of one transfer (amount, then fee), signed at time t."""
    tr = feed.tx(P.call(tid, "transfer", **{"from": source, "to": to, "amount": amount,
                                            "at_ms": at}), t)
    return [tr, feed.tx(P.call(tid, "fee", transfer=tr.tx_id.hex(), fee=fee), t)]


def bal(result, tid, account):
    return result.state.get(f"b/{tid}/{account}", 0)


def test_fee_schedule_is_a_pure_function_of_volume() -> None:
    assert fee_for(1000, 0, TIERS, 1) == 20
    assert fee_for(1000, 999, TIERS, 1) == 20
    assert fee_for(1000, 1000, TIERS, 1) == 10
    assert fee_for(1000, 10_000, TIERS, 1) == 5
    assert fee_for(10, 10_000, TIERS, 1) == 1            # min fee
    assert fee_for(101, 0, TIERS, 0) == 3                # rounded up


def test_fee_tiers_come_from_settled_history_in_the_window(nodes):
    tid, create = token(nodes)
    v1, v2 = nodes.v1.node, nodes.v2.node
    txs = [create, nodes.op.tx(P.call(tid, "mint", account=v1, amount=100_000), T0 + 1)]
    # 1200 settled 10 days ago: outside the 7-day window
    txs += pay(nodes.v1, tid, v1, v2, 1200, T0 + 10, T0 + 10, 24)
    # 600 + 600 settled within the window
    txs += pay(nodes.v1, tid, v1, v2, 600, T0 + 9 * DAY, T0 + 9 * DAY, 12)
    txs += pay(nodes.v1, tid, v1, v2, 600, T0 + 9 * DAY + 5, T0 + 9 * DAY + 2, 12)
    mid = Engine().replay(txs, as_of_ms=T0 + 10 * DAY)
    at = T0 + 10 * DAY + 100
    quoted = quote_fee(mid.state, tid, v1, 2000, at)
    assert quoted == 20                                      # 1200 in window: 100 bps
    txs += pay(nodes.v1, tid, v1, v2, 2000, at, T0 + 10 * DAY, quoted)
    result = Engine().replay(txs, as_of_ms=at)
    transfers = sorted((v for k, v in result.state.items() if k.startswith("t/")),
                       key=lambda t: t["at_ms"])
    assert [(t["amount"], t["fee_charged"], t["status"]) for t in transfers] == [
        (1200, 24, "settled"), (600, 12, "settled"), (600, 12, "settled"),
        (2000, 20, "settled")]
    assert bal(result, tid, nodes.op.node) == 24 + 12 + 12 + 20
    assert bal(result, tid, v1) == 100_000 - 4400 - 68
    assert bal(result, tid, v2) == 4400
    # the transfer and its fee are two ledger transactions, linked
    fee_records = [v for k, v in result.state.items() if k.startswith("f/")]
    assert {f["transfer"] for f in fee_records} == {
        k.split("/")[2] for k in result.state if k.startswith("t/")}


def test_scheduled_transfer_holds_tokens_until_its_time(nodes):
    tid, create = token(nodes)
    v1, v2 = nodes.v1.node, nodes.v2.node
    txs = [create, nodes.op.tx(P.call(tid, "mint", account=v1, amount=1000), T0 + 1),
           *pay(nodes.v1, tid, v1, v2, 900, T0 + DAY, T0 + 10, 18),
           *pay(nodes.v1, tid, v1, v2, 200, T0 + DAY, T0 + 20, 4)]     # only 82 available
    before = Engine().replay(txs, as_of_ms=T0 + DAY - 1)
    assert bal(before, tid, v1) == 1000 and bal(before, tid, v2) == 0
    assert before.state[f"h/{tid}/{v1}"] == 918
    assert [h.code for h in before.history[-2:]] == ["insufficient_funds", "wrong_status"]
    after = Engine().replay(txs, as_of_ms=T0 + DAY)
    assert bal(after, tid, v1) == 82 and bal(after, tid, v2) == 900
    assert after.state[f"h/{tid}/{v1}"] == 0


def test_fee_below_the_schedule_or_missing_fails_the_transfer_visibly(nodes):
    tid, create = token(nodes)
    v1, v2 = nodes.v1.node, nodes.v2.node
    low = pay(nodes.v1, tid, v1, v2, 500, T0 + 100, T0 + 10, 9)          # 10 due
    bare = nodes.v1.tx(P.call(tid, "transfer", **{"from": v1, "to": v2, "amount": 100,
                                                  "at_ms": T0 + 100}), T0 + 20)
    txs = [create, nodes.op.tx(P.call(tid, "mint", account=v1, amount=1000), T0 + 1), *low, bare]
    result = Engine().replay(txs, as_of_ms=T0 + 200)
    statuses = sorted((t["amount"], t["status"], t["reason"]) for k, t in result.state.items()
                      if k.startswith("t/"))
    assert statuses == [
        (100, "failed", f"fee_mismatch: no fee transaction before {T0 + 100}; 2 due"),
        (500, "failed", "fee_mismatch: fee 9 does not cover the 10 due")]
    assert bal(result, tid, v1) == 1000 and result.state[f"h/{tid}/{v1}"] == 0
    assert [e.kind for h in result.history if h.op == "timer" for e in h.events] == [
        "transfer_failed", "transfer_failed"]


def test_excess_fee_is_released(nodes):
    tid, create = token(nodes)
    v1, v2 = nodes.v1.node, nodes.v2.node
    txs = [create, nodes.op.tx(P.call(tid, "mint", account=v1, amount=1000), T0 + 1),
           *pay(nodes.v1, tid, v1, v2, 500, T0 + 100, T0 + 10, 50)]
    result = Engine().replay(txs, as_of_ms=T0 + 100)
    assert bal(result, tid, v1) == 490 and bal(result, tid, nodes.op.node) == 10


def test_only_holders_spend_and_only_minters_mint(nodes):
    tid, create = token(nodes)
    txs = [create,
           nodes.v1.tx(P.call(tid, "mint", account=nodes.v1.node, amount=10), T0 + 1),
           nodes.op.tx(P.call(tid, "mint", account="shared:fleet", amount=10), T0 + 2),
           *pay(nodes.v2, tid, "shared:fleet", nodes.v2.node, 5, T0 + 3, T0 + 3, 1),
           *pay(nodes.v2, tid, nodes.v1.node, nodes.v2.node, 5, T0 + 5, T0 + 5, 1)]
    result = Engine().replay(txs)
    assert [h.code for h in result.history if h.op != "timer"] == [
        "ok", "permission_denied", "ok", "permission_denied", "wrong_status",
        "permission_denied", "wrong_status"]


def fleet(n, amount=100):
    """A shared fleet account that vehicles 1 and 2 may both spend from."""
    tid, create = token(n)
    base = [create,
            n.op.tx(P.call(tid, "mint", account="shared:fleet", amount=amount), T0 + 1),
            n.owner.tx(P.call(tid, "share", account="shared:fleet",
                              holders=[n.v1.node, n.v2.node, n.v3.node]), T0 + 2)]
    return tid, base


def test_double_spend_across_a_partition_fails_the_later_one_when_they_merge(nodes):
    tid, base = fleet(nodes)
    # partition A: vehicle 1 pays the charging operator; partition B: vehicle 2 pays v3
    side_a = pay(nodes.v1, tid, "shared:fleet", nodes.op.node, 80, T0 + 1000, T0 + 100, 2)
    side_b = pay(nodes.v2, tid, "shared:fleet", nodes.v3.node, 80, T0 + 1000, T0 + 120, 2)
    a = Engine().replay(base + side_a)
    b = Engine().replay(base + side_b)
    assert a.failed == 0 and b.failed == 0                 # each valid on its own side
    merged = set()
    for seed in range(4):
        txs = base + side_a + side_b
        random.Random(seed).shuffle(txs)
        m = Engine().replay(txs, as_of_ms=T0 + 1000)
        merged.add(m.state_hash)
    assert len(merged) == 1
    failed = [h for h in m.history if not h.ok]
    assert [(h.author, h.method, h.code) for h in failed] == [
        (nodes.v2.node, "transfer", "insufficient_funds"), (nodes.v2.node, "fee", "wrong_status")]
    assert "shared:fleet has 18 available, transfer needs 80" in failed[0].message
    assert bal(m, tid, "shared:fleet") == 18 and bal(m, tid, nodes.op.node) == 82
    assert bal(m, tid, nodes.v3.node) == 0
    assert m.state[f"x/{failed[0].tx_id}"][0] == "insufficient_funds"


def test_double_spend_resolution_is_final_once_checkpointed(nodes):
    tid, base = fleet(nodes)
    side_a = pay(nodes.v1, tid, "shared:fleet", nodes.op.node, 80, T0 + 1000, T0 + 100, 2)
    side_b = pay(nodes.v2, tid, "shared:fleet", nodes.v3.node, 80, T0 + 1000, T0 + 120, 2)
    txs = base + side_a + side_b
    heights = {}
    for tx in txs:
        heights[tx.author] = max(heights.get(tx.author, -1), tx.height)
    cp = Checkpoint(seq=1, time_ms=T0 + 2000, heights=heights)
    final = Engine().replay(txs, [cp])
    assert final.final_hash == final.state_hash
    assert all(h.final for h in final.history)
    # vehicle 3 shows up later with a transfer backdated before both: it cannot win any more
    late = pay(nodes.v3, tid, "shared:fleet", nodes.v3.node, 80, T0 + 1000, T0 + 50, 2)
    after = Engine().replay(txs + late, [cp])
    assert after.final_hash == final.final_hash
    assert [(h.author, h.code) for h in after.history if not h.final] == [
        (nodes.v3.node, "insufficient_funds"), (nodes.v3.node, "wrong_status")]
    assert after.is_final(f"b/{tid}/{nodes.op.node}")
    # without the checkpoint the backdated spend would have been first
    unchecked = Engine().replay(txs + late, as_of_ms=T0 + 2000)
    assert bal(unchecked, tid, nodes.v3.node) == 80


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2), st.integers(1, 60), st.integers(0, 40),
                          st.integers(0, 3), st.booleans()), max_size=25),
       st.randoms(use_true_random=False))
def test_no_balance_or_hold_ever_goes_negative(ops, rng):
    # hypothesis runs many examples per call, so fresh feeds are built here, not in a fixture
    n = SimpleNamespace(**{k: Feed.from_seed(k) for k in ("owner", "op", "v1", "v2", "v3")})
    tid, base = fleet(n, amount=150)
    spenders = [n.v1, n.v2, n.v3]
    txs = list(base)
    for who, amount, delay, fee, with_fee in ops:
        tr = spenders[who].tx(P.call(tid, "transfer", **{
            "from": "shared:fleet", "to": n.op.node, "amount": amount,
            "at_ms": T0 + 500 + delay}), T0 + 10 + delay)
        txs.append(tr)
        if with_fee:
            txs.append(spenders[who].tx(P.call(tid, "fee", transfer=tr.tx_id.hex(), fee=fee),
                                        T0 + 11 + delay))
    rng.shuffle(txs)
    result = Engine().replay(txs)
    held = {k: v for k, v in result.state.items() if k.startswith("h/")}
    for key, value in result.state.items():
        if key.startswith("b/"):
            assert value >= 0
            assert value >= held.get("h/" + key[2:], 0)
    assert all(v >= 0 for v in held.values())
    assert sum(v for k, v in result.state.items() if k.startswith("b/")) == 150


def test_settled_history_keeps_running_totals_in_time_order() -> None:
    history: list[list[int]] = []
    for t, a in ((10, 5), (20, 7), (30, 11)):
        history = with_entry(history, t, a)
    assert history == [[10, 5, 5], [20, 7, 12], [30, 11, 23]]
    assert window_volume(history, 30, 15) == 7            # [15, 30)
    assert window_volume(history, 31, 100) == 23
    assert window_volume(history, 10, 100) == 0
    late = with_entry(history, 15, 100)                     # out of order: totals redone
    assert late == [[10, 5, 5], [15, 100, 105], [20, 7, 112], [30, 11, 123]]
    assert window_volume(late[1:], 25, 11) == 107           # a pruned prefix still works


def test_transfer_cannot_hold_tokens_for_more_than_a_year(nodes):
    tid, create = token(nodes)
    v1 = nodes.v1.node
    txs = [create, nodes.op.tx(P.call(tid, "mint", account=v1, amount=100), T0 + 1),
           *pay(nodes.v1, tid, v1, nodes.v2.node, 10, T0 + 400 * DAY, T0 + 2, 1)]
    result = Engine().replay(txs)
    assert [h.code for h in result.history[-2:]] == ["invalid", "wrong_status"]
    assert f"h/{tid}/{v1}" not in result.state
