"""Contract replay throughput and the time to rebuild state from 100,000 transactions (JSON).

    .venv/bin/python benchmarks/contracts.py [--n 100000] [--nodes 50] [--no-ledger]

The workload is mixed, from `--nodes` vehicles and one operator: usage records checked
against rules (half), scheduled transfers with their linked fee transactions (a third),
children spawned into competing slots, and role grants. `replay_tx_per_s` is the engine alone
(canonical sort and final state hash included) over transactions already in memory, in
wall time and in CPU time of its one thread (the machine may be shared), with the cyclic
garbage collector paused as `contracts replay` does, and once more with it running.
`rebuild_s` is the whole `contracts replay` path: read the contract transactions from a
real SQLite ledger (signed blocks, one transaction each: the worst case for reading),
decode them, and replay.
Target (issue 7): replay >= 20,000 tx/s on one core.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import random
import sys
import tempfile
import time
from pathlib import Path

# Run as a script, this folder is sys.path[0], and benchmarks/ledger.py would shadow the
# ledger package: import from the installed packages only.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

from ledger import Ledger, LedgerConfig  # noqa: E402
from ledger.block import GENESIS_PREV, Block  # noqa: E402
from ledger.contracts import ContractTx, Engine  # noqa: E402
from ledger.contracts import payloads as P  # noqa: E402
from ledger.contracts.cli import gc_paused  # noqa: E402
from ledger.contracts.harness import Feed  # noqa: E402
from ledger.contracts.source import LedgerSource  # noqa: E402

T0 = 1_764_028_800_000


def workload(n: int, nodes: int, seed: int) -> tuple[list[ContractTx], list[Feed]]:
    rng = random.Random(seed)
    owner, op = Feed.from_seed("owner"), Feed.from_seed("operator")
    vehicles = [Feed.from_seed(f"vehicle-{i}") for i in range(nodes)]
    members = [v.node for v in vehicles]
    c = owner.tx(P.create("agreement", {
        "children": ["agreement"], "select": "lowest:price",
        "rules": {"services": ["charging", "interchange"], "limit_wh": 200_000,
                  "windows": [[300, 1380]]}}, {"member": members, "operator": [op.node]}), T0)
    cid = P.created_id(c.tx_id)
    k = owner.tx(P.create("tokens", {"fee_account": op.node, "window_ms": 7 * 86_400_000,
                                     "tiers": [[0, 200], [5_000, 100], [50_000, 50]],
                                     "min_fee": 1}, {"operator": [op.node]}), T0 + 1)
    tid = P.created_id(k.tx_id)
    txs = [c, k] + [op.tx(P.call(tid, "mint", account=m, amount=10_000_000), T0 + 2)
                    for m in members]
    t = T0 + 10
    while len(txs) < n:
        t += rng.randint(1, 4000)
        v = rng.choice(vehicles)
        roll = rng.random()
        if roll < 0.5:
            txs.append(op.tx(P.call(cid, "record_usage", record={
                "service": rng.choice(("charging", "interchange")), "user": v.node,
                "kwh": round(rng.uniform(0.5, 60), 3), "time_ms": t - rng.randint(0, 60_000)}),
                t))
        elif roll < 0.84:
            tr = v.tx(P.call(tid, "transfer", **{"from": v.node, "to": rng.choice(members),
                                                 "amount": rng.randint(10, 5000),
                                                 "at_ms": t + rng.randint(0, 600_000)}), t)
            txs += [tr, v.tx(P.call(tid, "fee", transfer=tr.tx_id.hex(), fee=100), t)]
        elif roll < 0.97:
            txs.append(v.tx(P.call(cid, "spawn", template="agreement",
                                   slot=f"session-{rng.randint(0, n // 40)}",
                                   params={"terms": {"price": rng.randint(10, 60)}}), t))
        else:
            txs.append(owner.tx(P.call(cid, "grant", role="member", node=v.node), t))
    return txs[:n], [owner, op, *vehicles]


def bench_engine(txs: list[ContractTx]) -> dict[str, float | str]:
    shuffled = list(txs)
    random.Random(1).shuffle(shuffled)
    start = time.perf_counter()
    Engine().replay(shuffled)
    with_gc = time.perf_counter() - start
    gc.collect()
    with gc_paused():
        start, cpu = time.perf_counter(), time.process_time()
        result = Engine().replay(shuffled)
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    return {"replay_s": round(elapsed, 3), "replay_tx_per_s": round(len(txs) / elapsed),
            "replay_cpu_s": round(cpu, 3), "replay_tx_per_cpu_s": round(len(txs) / cpu),
            "replay_with_gc_s": round(with_gc, 3),
            "replay_with_gc_tx_per_s": round(len(txs) / with_gc),
            "failed": result.failed, "history_entries": len(result.history),
            "state_keys": len(result.state), "state_hash": result.state_hash}


def bench_ledger(txs: list[ContractTx], feeds: list[Feed]) -> dict[str, float | str]:
    """Sign the same transactions into real feeds (one per block, so ids and block times are
    the ones replayed above), store them in one SQLite ledger, then rebuild from it."""
    keys = {f.identity.node_id: f.identity for f in feeds}
    with tempfile.TemporaryDirectory() as tmp:
        cfg = LedgerConfig(check_on_open=False)
        led = Ledger.open(Path(tmp) / "node.sqlite", feeds[0].identity, config=cfg)
        start = time.perf_counter()
        prev: dict[bytes, bytes] = {}
        blocks: list[Block] = []
        for tx in txs:
            assert not isinstance(tx.payload, bytes)
            block = Block.create(keys[tx.author], tx.height,
                                 prev.get(tx.author, GENESIS_PREV), tx.time_ms,
                                 (led.registry.make(P.TX_TYPE, tx.payload),))
            prev[tx.author] = block.hash
            blocks.append(block)
        blocks.sort(key=lambda b: (b.author, b.height))
        led.store.put_blocks(blocks)
        written = time.perf_counter() - start
        del blocks
        source = LedgerSource(led)
        with gc_paused():
            start = time.perf_counter()
            loaded = source.contract_txs()
            read = time.perf_counter() - start
            result = Engine().replay(loaded, source.checkpoints())
            total = time.perf_counter() - start
        size = os.path.getsize(Path(tmp) / "node.sqlite")
        led.close()
    return {"ledger_sign_and_store_s": round(written, 2), "ledger_read_s": round(read, 3),
            "rebuild_s": round(total, 3), "rebuild_tx_per_s": round(len(loaded) / total),
            "ledger_bytes": size, "rebuild_state_hash": result.state_hash}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--nodes", type=int, default=50)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--no-ledger", action="store_true", help="engine figures only")
    args = parser.parse_args()
    txs, feeds = workload(args.n, args.nodes, args.seed)
    out: dict[str, object] = {"transactions": len(txs), "nodes": args.nodes + 2,
                              "python": platform.python_version(),
                              "machine": f"{platform.machine()} {os.cpu_count()} cpu"}
    out.update(bench_engine(txs))
    if not args.no_ledger:
        out.update(bench_ledger(txs, feeds))
        out["same_state"] = out["rebuild_state_hash"] == out["state_hash"]
    out["target_tx_per_s"] = 20_000
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
