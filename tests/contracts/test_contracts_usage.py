"""Usage records from the charging and interchange services checked against contract rules."""

from __future__ import annotations

from ledger.contracts import Engine
from ledger.contracts import payloads as P

DAY = 86_400_000
T0 = 1_764_028_800_000          # 2025-11-25 00:00 UTC
HOUR = 3_600_000


def agreement(n, rules, **extra):
    tx = n.owner.tx(P.create("agreement", {"rules": rules, "children": ["agreement"], **extra},
                             {"member": [n.v1.node, n.v2.node], "operator": [n.op.node]}), T0)
    return P.created_id(tx.tx_id), tx


def usage(feed, cid, user, kwh, at, block_time, service="charging"):
    return feed.tx(P.call(cid, "record_usage", record={
        "service": service, "user": user, "kwh": kwh, "time_ms": at}), block_time)


def records(result, cid):
    n = result.state.get(f"n/{cid}", 0)
    return [result.state[f"u/{cid}/{i:08d}"] for i in range(n)]


def test_each_record_gets_a_determination_and_flagged_ones_are_kept(nodes):
    cid, create = agreement(nodes, {"services": ["charging"], "limit_wh": 30_000,
                                    "limit_count": 3, "windows": [[6 * 60, 22 * 60]]})
    v1, v2 = nodes.v1.node, nodes.v2.node
    txs = [create,
           usage(nodes.op, cid, v1, 12.0, T0 + 8 * HOUR, T0 + 9 * HOUR),       # ok
           usage(nodes.op, cid, v2, 5.0, T0 + 8 * HOUR, T0 + 9 * HOUR + 1, "interchange"),
           usage(nodes.op, cid, nodes.stranger.node, 5.0, T0 + 8 * HOUR, T0 + 9 * HOUR + 2),
           usage(nodes.op, cid, v1, 12.0, T0 + 10 * HOUR, T0 + 11 * HOUR),     # ok, 24 kWh
           usage(nodes.op, cid, v1, 7.5, T0 + 12 * HOUR, T0 + 13 * HOUR),      # over 30 kWh
           usage(nodes.op, cid, v1, 2.0, T0 + 20 * HOUR, T0 + 14 * HOUR),      # future time
           usage(nodes.op, cid, v1, 1.0, T0 + 23 * HOUR, T0 + 23 * HOUR + 5),  # night
           usage(nodes.op, cid, v1, 12.0, T0 + DAY + 8 * HOUR, T0 + DAY + 9 * HOUR)]  # new day
    result = Engine().replay(txs)
    recs = records(result, cid)
    assert [r["permitted"] for r in recs] == [True, False, False, True, False, False, False,
                                              True]
    assert recs[1]["reasons"][0].startswith("service 'interchange' not allowed")
    assert recs[2]["reasons"] == [f"user {nodes.stranger.node} is not a member of the group"]
    assert recs[4]["reasons"] == ["energy limit: 24000 + 7500 Wh > 30000 Wh per 86400000 ms"]
    assert recs[5]["reasons"] == ["usage time is after the block time"]
    assert recs[6]["reasons"] == ["usage time is outside the allowed time windows"]
    # flagged records do not count towards the period's totals
    assert result.state[f"q/{cid}/{v1}/{(T0 + 8 * HOUR) // DAY}"] == [24_000, 2]
    assert all(h.ok for h in result.history)


def test_count_limit_and_window_wrapping_midnight(nodes):
    cid, create = agreement(nodes, {"limit_count": 2, "windows": [[22 * 60, 6 * 60]]})
    v1 = nodes.v1.node
    txs = [create] + [usage(nodes.op, cid, v1, 1, T0 + h * HOUR, T0 + 12 * HOUR)
                      for h in (1, 2, 3, 7)]
    recs = records(Engine().replay(txs), cid)
    assert [r["permitted"] for r in recs] == [True, True, False, False]
    assert recs[2]["reasons"] == [f"count limit: 2 uses per {DAY} ms"]
    assert "outside the allowed time windows" in recs[3]["reasons"][0]


def test_child_rules_narrow_the_parents_and_superseded_child_flags_usage(nodes):
    cid, create = agreement(nodes, {"services": ["charging", "interchange"], "limit_wh": 50_000})
    spawn_a = nodes.v1.tx(P.call(cid, "spawn", template="agreement", slot="s", params={
        "rules": {"services": ["interchange", "charging"], "limit_wh": 10_000}}), T0 + 10)
    spawn_b = nodes.v2.tx(P.call(cid, "spawn", template="agreement", slot="s", params={
        "rules": {"services": ["charging"], "limit_wh": 90_000}}), T0 + 20)
    a = P.child_id(cid, "agreement", "s", {"rules": {"services": ["interchange", "charging"],
                                                     "limit_wh": 10_000}})
    b = P.child_id(cid, "agreement", "s", {"rules": {"services": ["charging"],
                                                     "limit_wh": 90_000}})
    txs = [create, spawn_a, spawn_b,
           usage(nodes.v1, a, nodes.v1.node, 12, T0 + 30, T0 + 40),     # over child's 10 kWh
           usage(nodes.v2, b, nodes.v2.node, 60, T0 + 30, T0 + 40),     # over parent's 50 kWh
           usage(nodes.v2, b, nodes.v2.node, 1, T0 + 30, T0 + 41, "interchange")]
    result = Engine().replay(txs)
    ra, rb = records(result, a), records(result, b)
    assert "energy limit: 0 + 12000 Wh > 10000 Wh per 86400000 ms" in ra[0]["reasons"]
    assert rb[0]["reasons"] == ["contract was superseded by another child",
                                "energy limit: 0 + 60000 Wh > 50000 Wh per 86400000 ms"]
    assert rb[1]["reasons"][1] == "service 'interchange' not allowed (allowed: charging)"


def test_member_records_only_its_own_usage_and_bad_records_are_refused(nodes):
    cid, create = agreement(nodes, {})
    txs = [create, usage(nodes.v1, cid, nodes.v2.node, 1, T0, T0 + 1),
           usage(nodes.stranger, cid, nodes.stranger.node, 1, T0, T0 + 2),
           nodes.op.tx(P.call(cid, "record_usage", record={"service": "charging",
                                                           "user": nodes.v1.node,
                                                           "kwh": float("nan"),
                                                           "time_ms": T0}), T0 + 3),
           nodes.op.tx(P.call(cid, "record_usage", record={"service": "charging",
                                                           "user": "not-a-node",
                                                           "kwh": 1, "time_ms": T0}), T0 + 4)]
    result = Engine().replay(txs)
    assert [h.code for h in result.history[1:]] == ["permission_denied", "permission_denied",
                                                    "invalid", "invalid"]
    assert f"n/{cid}" not in result.state


def test_child_keeps_the_parents_period_unless_it_sets_its_own(nodes):
    cid, create = agreement(nodes, {"period_ms": 3_600_000, "limit_wh": 5_000})
    same = {"rules": {"limit_wh": 4_000}}
    own = {"rules": {"period_ms": 60_000}}
    txs = [create,
           nodes.v1.tx(P.call(cid, "spawn", template="agreement", slot="a", params=same), T0 + 1),
           nodes.v1.tx(P.call(cid, "spawn", template="agreement", slot="b", params=own), T0 + 2)]
    result = Engine().replay(txs)
    a = result.state[f"c/{P.child_id(cid, 'agreement', 'a', same)}"]["rules"]
    b = result.state[f"c/{P.child_id(cid, 'agreement', 'b', own)}"]["rules"]
    assert (a["period_ms"], a["limit_wh"]) == (3_600_000, 4_000)
    assert (b["period_ms"], b["limit_wh"]) == (60_000, 5_000)
