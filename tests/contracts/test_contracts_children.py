"""Parent and child contracts: competing children from a partition converge to one selection."""

from __future__ import annotations

import random

from ledger.contracts import Engine
from ledger.contracts import payloads as P

T0 = 1_764_000_000_000


def parent(n, select="first", **extra):
    tx = n.owner.tx(P.create("agreement", {"title": "charging service", "children": ["agreement"],
                                           "select": select, **extra},
                              {"member": [n.v1.node, n.v2.node, n.v3.node],
                               "auditor": [n.auditor.node]}), T0)
    cid = P.created_id(tx.tx_id)
    return cid, [tx, n.auditor.tx(P.call(cid, "approve", reason="tariff checked"), T0 + 1)]


def spawn(feed, cid, slot, t, **terms):
    return feed.tx(P.call(cid, "spawn", template="agreement", slot=slot,
                          params={"title": f"session by {feed.node}", "terms": terms}), t)


def selection(result, cid, slot):
    return result.state[f"s/{cid}/{slot}"]["selected"]


def test_partition_spawns_competing_children_and_merge_converges(nodes):
    cid, base = parent(nodes)
    # Partition A (v1) and partition B (v2, v3) each generate a child for the same session.
    side_a = [spawn(nodes.v1, cid, "session-7", T0 + 500, price=30)]
    side_b = [spawn(nodes.v2, cid, "session-7", T0 + 400, price=35),
              spawn(nodes.v3, cid, "session-7", T0 + 600, price=20)]
    engine = Engine()
    a = engine.replay(base + side_a)
    b = engine.replay(base + side_b)
    child_a = P.child_id(cid, "agreement", "session-7",
                         {"title": f"session by {nodes.v1.node}", "terms": {"price": 30}})
    # each side selected its own child while apart
    assert selection(a, cid, "session-7") == child_a
    assert selection(b, cid, "session-7") != child_a
    merged = []
    for seed in range(4):
        txs = base + side_a + side_b
        random.Random(seed).shuffle(txs)
        merged.append(engine.replay(txs))
    assert len({m.state_hash for m in merged}) == 1
    m = merged[0]
    winner = selection(m, cid, "session-7")
    # rule "first": the earliest in canonical order, v2's at T0+400
    assert m.state[f"c/{winner}"]["created_by"] == nodes.v2.node
    children = [c for c in m.contracts() if c["parent"] == cid]
    assert len(children) == 3                                    # all recorded
    assert sorted(c["selection"] for c in children) == ["selected", "superseded", "superseded"]


def test_lowest_term_rule_selects_cheapest_whatever_the_order(nodes):
    cid, base = parent(nodes, select="lowest:price")
    kids = [spawn(nodes.v1, cid, "s", T0 + 10, price=30), spawn(nodes.v2, cid, "s", T0 + 20,
                                                                  price=20),
            spawn(nodes.v3, cid, "s", T0 + 30, price=25)]
    result = Engine().replay(base + kids)
    assert result.state[f"c/{selection(result, cid, 's')}"]["params"]["terms"]["price"] == 20
    flips = [e.kind for h in result.history for e in h.events
             if e.kind in ("selected", "superseded")]
    # v1's child wins, v2's cheaper one displaces it, v3's dearer one loses at once
    assert flips == ["selected", "superseded", "selected", "superseded"]
    for seed in range(3):
        shuffled = base + kids
        random.Random(seed).shuffle(shuffled)
        assert Engine().replay(shuffled).state_hash == result.state_hash


def test_rejected_child_is_never_selected(nodes):
    cid, base = parent(nodes, audit_children=True)
    k1 = spawn(nodes.v1, cid, "s", T0 + 10, price=1)
    k2 = spawn(nodes.v2, cid, "s", T0 + 20, price=2)
    c1 = P.child_id(cid, "agreement", "s", {"title": f"session by {nodes.v1.node}",
                                            "terms": {"price": 1}})
    before = Engine().replay([*base, k1, k2])
    assert selection(before, cid, "s") == c1
    assert before.state[f"c/{c1}"]["status"] == "provisional"
    after = Engine().replay([*base, k1, k2,
                             nodes.auditor.tx(P.call(c1, "reject", reason="meter fault"),
                                              T0 + 30)])
    winner = selection(after, cid, "s")
    assert winner != c1
    assert after.state[f"c/{c1}"]["status"] == "rejected"
    assert after.state[f"c/{c1}"]["selection"] == "superseded"


def test_same_child_spawned_twice_is_one_contract(nodes):
    cid, base = parent(nodes)
    params = {"title": "shared", "terms": {"price": 5}}
    t1 = nodes.v1.tx(P.call(cid, "spawn", template="agreement", slot="s", params=params), T0 + 5)
    t2 = nodes.v2.tx(P.call(cid, "spawn", template="agreement", slot="s", params=params), T0 + 6)
    result = Engine().replay([*base, t1, t2])
    assert [e.kind for e in result.history[-1].events] == ["duplicate_child"]
    assert result.state[f"s/{cid}/s"]["candidates"] == [P.child_id(cid, "agreement", "s", params)]


def test_only_roles_of_the_parent_may_spawn_and_only_allowed_templates(nodes):
    cid, base = parent(nodes)
    bad = [spawn(nodes.stranger, cid, "s", T0 + 5, price=1),
           nodes.v1.tx(P.call(cid, "spawn", template="tokens", slot="s",
                               params={"fee_account": nodes.v1.node}), T0 + 6)]
    result = Engine().replay(base + bad)
    assert [h.code for h in result.history[-2:]] == ["permission_denied", "permission_denied"]


def test_provisional_parent_cannot_spawn(nodes):
    cid, base = parent(nodes)
    result = Engine().replay([base[0], spawn(nodes.v1, cid, "s", T0 + 5, price=1)])
    assert result.history[-1].code == "wrong_status"
