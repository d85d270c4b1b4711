"""Snapshots of final state: replay from them after pruning, and keep final state final."""

from __future__ import annotations

import pytest

from ledger.contracts import Engine
from ledger.contracts import payloads as P
from ledger.contracts.errors import StoreError
from ledger.contracts.snapshot import Snapshot, load, save
from ledger.contracts.tx import Checkpoint

T0 = 1_764_000_000_000


def covering(txs, seq, time_ms):
    heights: dict[bytes, int] = {}
    for tx in txs:
        heights[tx.author] = max(heights.get(tx.author, -1), tx.height)
    return Checkpoint(seq=seq, time_ms=time_ms, heights=heights)


def fleet_history(n):
    tk = n.owner.tx(P.create("tokens", {"fee_account": n.op.node, "tiers": [[0, 100]]},
                             {"operator": [n.op.node]}), T0)
    tid = P.created_id(tk.tx_id)
    txs = [tk, n.op.tx(P.call(tid, "mint", account="shared:fleet", amount=100), T0 + 1),
           n.owner.tx(P.call(tid, "share", account="shared:fleet",
                             holders=[n.v1.node, n.v2.node]), T0 + 2)]
    return tid, txs


def spend(feed, tid, amount, at, t):
    tr = feed.tx(P.call(tid, "transfer", **{"from": "shared:fleet", "to": feed.node,
                                            "amount": amount, "at_ms": at}), t)
    return [tr, feed.tx(P.call(tid, "fee", transfer=tr.tx_id.hex(), fee=1), t)]


def test_replay_from_a_snapshot_equals_a_full_replay_and_survives_pruning(nodes, tmp_path):
    tid, early = fleet_history(nodes)
    early += spend(nodes.v1, tid, 30, T0 + 5_000, T0 + 10)     # settles after the checkpoint
    cp = covering(early, 1, T0 + 100)
    first = Engine().replay(early, [cp])
    snap = first.snapshot()
    assert snap is not None and snap.count == len(early)
    assert [t[4] for t in snap.timers] == ["settle"]          # pending at the checkpoint
    save(tmp_path / "final.snap", snap)
    loaded = load(tmp_path / "final.snap")
    assert loaded == snap
    late = spend(nodes.v2, tid, 50, T0 + 6_000, T0 + 200)
    full = Engine().replay(early + late, [cp], as_of_ms=T0 + 7_000)
    resumed = Engine().replay(early + late, [cp], as_of_ms=T0 + 7_000, base=loaded)
    pruned = Engine().replay(late, [cp], as_of_ms=T0 + 7_000, base=loaded)
    assert resumed.state_hash == full.state_hash == pruned.state_hash
    assert pruned.final_hash == full.final_hash == snap.state_hash
    assert full.state[f"b/{tid}/shared:fleet"] == 100 - 30 - 1 - 50 - 1
    assert len(pruned.history) == 4                           # 2 txs + 2 settlements


def test_snapshot_keeps_what_was_final_when_a_later_checkpoint_covers_a_backdated_spend(nodes):
    tid, txs = fleet_history(nodes)
    txs += spend(nodes.v1, tid, 80, T0 + 1_000, T0 + 100)
    cp1 = covering(txs, 1, T0 + 2_000)
    snap = Engine().replay(txs, [cp1]).snapshot()
    assert snap is not None
    backdated = spend(nodes.v2, tid, 80, T0 + 1_000, T0 + 50)  # older block time, seen later
    cp2 = covering(txs + backdated, 2, T0 + 3_000)
    # the ledger keeps only the newest covered heights: one aggregate checkpoint
    from_snapshot = Engine().replay(txs + backdated, [cp2], base=snap)
    assert from_snapshot.final_hash == from_snapshot.state_hash
    assert from_snapshot.state[f"b/{tid}/{nodes.v1.node}"] == 80
    assert [(h.author, h.code) for h in from_snapshot.history if not h.ok] == [
        (nodes.v2.node, "insufficient_funds"), (nodes.v2.node, "wrong_status")]
    # without the snapshot, the aggregate ordering would let the backdated spend win
    aggregate = Engine().replay(txs + backdated, [cp2])
    assert aggregate.state.get(f"b/{tid}/{nodes.v1.node}", 0) == 0


def test_corrupt_snapshots_are_refused(nodes, tmp_path):
    _, txs = fleet_history(nodes)
    snap = Engine().replay(txs, [covering(txs, 1, T0 + 10)]).snapshot()
    assert snap is not None
    data = bytearray(snap.encode())
    data[-40] ^= 0x01
    for bad in (bytes(data), b"\x00garbage", P.TX_TYPE.encode()):
        with pytest.raises(StoreError):
            Snapshot.decode(bad)
    assert load(tmp_path / "none.snap") is None


def test_no_checkpoint_no_snapshot(nodes):
    _, txs = fleet_history(nodes)
    assert Engine().replay(txs).snapshot() is None
