"""Contracts on the real ledger: signed feeds in SQLite, sync in any order, checkpoints."""

from __future__ import annotations

import random
from pathlib import Path

from ledger import Ledger
from ledger.checkpoint import Checkpoint as LedgerCheckpoint
from ledger.checkpoint import MerkleTree, decode_checkpoint, verify_proofs
from ledger.contracts import Engine
from ledger.contracts import payloads as P
from ledger.contracts.source import LedgerSource
from ledger.tx import default_registry
from mesh.identity import Identity, verify

T0 = 1_764_000_000.0          # seconds, as the ledger's `now`
NAMES = ("owner", "auditor", "v1", "v2", "op")


def ident(name: str) -> Identity:
    return Identity.from_seed(name.encode().ljust(32, b"\0"))


def open_all(tmp_path: Path) -> dict[str, LedgerSource]:
    return {n: LedgerSource(Ledger.open(tmp_path / f"{n}.sqlite", ident(n))) for n in NAMES}


def feeds(source: LedgerSource) -> dict[bytes, list[bytes]]:
    store = source.ledger.store
    return {h.author: list(store.iter_blocks(h.author)) for h in store.heads()}


def gossip(target: LedgerSource, sources: list[LedgerSource], now: float) -> None:
    for src in sources:
        for raws in feeds(src).values():
            target.ledger.receive_blocks(raws, now)


def workload(src: dict[str, LedgerSource]) -> None:
    """Each node writes to its own ledger; vehicles spawn competing children while apart."""
    node = {n: ident(n).hex_id for n in NAMES}
    create = src["owner"].submit(P.create(
        "agreement", {"children": ["agreement"], "select": "lowest:price",
                      "rules": {"services": ["charging", "interchange"], "limit_wh": 80_000}},
        {"member": [node["v1"], node["v2"]], "auditor": [node["auditor"]],
         "operator": [node["op"]]}), T0)
    cid = P.created_id(create.tx_id)
    gossip(src["auditor"], [src["owner"]], T0 + 1)
    src["auditor"].submit(P.call(cid, "approve", reason="tariff checked"), T0 + 2)
    for v in ("v1", "v2"):
        gossip(src[v], [src["owner"], src["auditor"]], T0 + 3)
    src["v1"].submit(P.call(cid, "spawn", template="agreement", slot="session-1",
                            params={"terms": {"price": 31}}), T0 + 10)
    src["v2"].submit(P.call(cid, "spawn", template="agreement", slot="session-1",
                            params={"terms": {"price": 29}}), T0 + 11)
    tokens = src["owner"].submit(P.create("tokens", {"fee_account": node["op"],
                                                     "tiers": [[0, 100]]},
                                          {"operator": [node["op"]]}), T0 + 20)
    tid = P.created_id(tokens.tx_id)
    gossip(src["op"], [src["owner"], src["auditor"]], T0 + 21)
    for i in range(4):
        src["op"].submit(P.call(cid, "record_usage", record={
            "service": "charging", "user": node["v1"], "kwh": 25.0,
            "time_ms": int(T0 * 1000) + i}), T0 + 30 + i)
    src["op"].submit(P.call(tid, "mint", account=node["v1"], amount=1000), T0 + 40)
    gossip(src["v1"], [src["op"]], T0 + 41)
    tr = src["v1"].submit(P.call(tid, "transfer", **{"from": node["v1"], "to": node["op"],
                                                     "amount": 300,
                                                     "at_ms": int((T0 + 60) * 1000)}), T0 + 50)
    src["v1"].submit(P.call(tid, "fee", transfer=tr.tx_id.hex(), fee=3), T0 + 51)


def test_nodes_that_sync_in_different_orders_compute_the_same_state(tmp_path: Path) -> None:
    src = open_all(tmp_path)
    assert "contract.tx" in default_registry().names()
    workload(src)
    rng = random.Random(3)
    for name in NAMES:
        others = [src[n] for n in NAMES if n != name]
        rng.shuffle(others)
        gossip(src[name], others, T0 + 100)
    as_of = int((T0 + 100) * 1000)              # after the scheduled transfer's time
    results = {n: Engine().replay(s.contract_txs(), s.checkpoints(), as_of_ms=as_of)
               for n, s in src.items()}
    hashes = {r.state_hash for r in results.values()}
    assert len(hashes) == 1
    r = results["owner"]
    assert r.failed == 0
    usage = [v["permitted"] for k, v in sorted(r.state.items()) if k.startswith("u/")]
    assert usage == [True, True, True, False]                  # 4 x 25 kWh against 80 kWh
    chosen = [c for c in r.contracts() if c["selection"] == "selected"]
    assert [c["params"]["terms"]["price"] for c in chosen] == [29]
    assert r.state[next(k for k in r.state if k.startswith("b/") and k.endswith(
        ident("op").hex_id))] == 303
    for s in src.values():
        s.ledger.close()


def test_replay_from_an_empty_store_reproduces_the_state(tmp_path: Path) -> None:
    src = open_all(tmp_path)
    workload(src)
    gossip(src["owner"], [src[n] for n in NAMES if n != "owner"], T0 + 100)
    before = Engine().replay(src["owner"].contract_txs())
    blocks = feeds(src["owner"])
    for s in src.values():
        s.ledger.close()
    reopened = LedgerSource(Ledger.open(tmp_path / "owner.sqlite", ident("owner")))
    assert Engine().replay(reopened.contract_txs()).state_hash == before.state_hash
    fresh = LedgerSource(Ledger.open(tmp_path / "fresh.sqlite", ident("auditor")))
    assert Engine().replay(fresh.contract_txs()).applied == 0
    for raws in blocks.values():
        fresh.ledger.receive_blocks(raws, T0 + 200)
    again = Engine().replay(fresh.contract_txs())
    assert again.state_hash == before.state_hash
    assert [h.tx_id for h in again.history] == [h.tx_id for h in before.history]
    reopened.ledger.close()
    fresh.ledger.close()


def test_backhaul_checkpoint_makes_state_final(tmp_path: Path) -> None:
    src = open_all(tmp_path)
    workload(src)
    owner = src["owner"]
    gossip(owner, [src[n] for n in NAMES if n != "owner"], T0 + 100)
    cp_ms = int((T0 + 120) * 1000)
    provisional = Engine().replay(owner.contract_txs(), owner.checkpoints(), as_of_ms=cp_ms)
    assert provisional.final_count == 0 and not any(h.final for h in provisional.history)
    # the backhaul signs a checkpoint over the feed heads it holds; the owner verifies it
    backhaul = ident("backhaul")
    tree = MerkleTree(owner.ledger.store.heads())
    cp = LedgerCheckpoint.create(backhaul, 1, cp_ms, tree)
    checked = decode_checkpoint(cp.raw, backhaul.public_key, verify)
    heads = verify_proofs(checked, [tree.proof(h.author) for h in tree.heads])
    owner.ledger.store.put_checkpoint(checked.backhaul, checked.seq, checked.time_ms,
                                      checked.root, checked.raw, heads)
    final = Engine().replay(owner.contract_txs(), owner.checkpoints())
    assert final.state_hash == provisional.state_hash
    assert final.final_hash == final.state_hash
    assert all(h.final for h in final.history)
    # a new transaction after the checkpoint is provisional; the final hash stays put
    owner.submit(P.call(P.created_id(owner.contract_txs()[0].tx_id), "grant", role="member",
                        node=ident("op").hex_id), T0 + 130)
    later = Engine().replay(owner.contract_txs(), owner.checkpoints())
    assert later.final_hash == final.final_hash and later.state_hash != final.state_hash
    assert [h.final for h in later.history[-1:]] == [False]
    for s in src.values():
        s.ledger.close()


def test_equivocating_feed_does_not_count_from_the_forked_height(tmp_path: Path) -> None:
    """A vehicle signs two different blocks at one height (say, one spend per partition)."""
    v1 = ident("v1")
    honest = LedgerSource(Ledger.open(tmp_path / "owner.sqlite", ident("owner")))
    create = honest.submit(P.create("agreement", {}, {"member": [v1.hex_id]}), T0)
    cid = P.created_id(create.tx_id)
    fork_a = LedgerSource(Ledger.open(tmp_path / "a.sqlite", v1))
    fork_b = LedgerSource(Ledger.open(tmp_path / "b.sqlite", v1))
    record = {"service": "charging", "user": v1.hex_id, "kwh": 1.0, "time_ms": int(T0 * 1000)}
    fork_a.submit(P.call(cid, "record_usage", record=record), T0 + 1)
    fork_b.submit(P.call(cid, "record_usage", record={**record, "kwh": 2.0}), T0 + 1)
    for fork in (fork_a, fork_b):
        gossip(honest, [fork], T0 + 2)
    assert len(honest.ledger.store.equivocations()) == 1
    result = Engine().replay(honest.contract_txs())
    assert result.applied == 1 and f"n/{cid}" not in result.state
    for s in (honest, fork_a, fork_b):
        s.ledger.close()
