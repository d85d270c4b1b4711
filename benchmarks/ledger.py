"""Ledger benchmark: prints one JSON object.

    .venv/bin/python benchmarks/ledger.py [--quick] [--agents 1000] [--no-postgres]

Figures, beside the raw Ed25519 sign/verify rates measured in the same run (PyNaCl/libsodium,
the fastest library here, and `cryptography`/OpenSSL):
- append_tx_per_s: transactions appended and made durable (blocks of 256, fsync per block);
- ingest_blocks_per_s: blocks verified and stored by a sync session (one feed, 8 tx/block),
  and its ratio to the raw verify rate (target >= 0.7), all in one thread ("ingest") and with
  signatures checked in one child process beside it (`LedgerConfig(verify_processes=1)`, the
  backhaul's default on a machine with a second core: "ingest_pooled"), with the CPU time
  per block of this process and of the child (comparable under load), and the CPU ratio:
  raw verifications per CPU second against blocks per CPU second of this process (with a
  child, what the wall rate becomes when the child has a core of its own and keeps up);
- wire_ratio: session bytes on the wire / bytes of the missing blocks, per case with the
  limit 1.1x + 2 KB and whether it held, and how the difference was found (sketch or ranges);
- round trips to find 1 and 100 differences among 10,000 feeds (target <= 4 for a small one),
  and the 100-difference case over 20 different sets of missing feeds (sketch_trials);
- backhaul: N concurrent agents (async clients in this process) each syncing 100 new blocks
  with a `manet-backhaul serve` child process, SQLite and PostgreSQL: throughput and p99.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# This file is named like the package: drop its folder from the path so `import ledger` finds
# the package, not this script.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import nacl.bindings as sodium  # noqa: E402
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: E402

from ledger import Ledger, LedgerConfig, Transaction  # noqa: E402
from ledger.backhaul.client import sync_with_backhaul  # noqa: E402
from ledger.block import GENESIS_PREV, Block  # noqa: E402
from ledger.local import sync_pair  # noqa: E402
from ledger.sigpool import SignaturePool  # noqa: E402
from ledger.sync import SyncConfig, SyncStats  # noqa: E402
from mesh.identity import Identity  # noqa: E402

PG_DSN = "postgresql://postgres@127.0.0.1:5432/test"
PG_SCHEMA = "ledger_bench"
"""The benchmark's tables live in their own schema: the tests' PostgreSQL store drops the
ledger tables of the default schema, and a test run beside a benchmark broke it once."""
PG_BENCH_DSN = f"{PG_DSN}?options=-csearch_path%3D{PG_SCHEMA}"
NOW = time.time()


def rate(fn: Any, seconds: float = 1.0, clock: Any = time.perf_counter) -> float:
    n, start = 0, clock()
    while clock() - start < seconds:
        for _ in range(200):
            fn()
        n += 200
    return n / (clock() - start)


def raw_rates() -> dict[str, float]:
    msg = os.urandom(200)
    pk, sk = sodium.crypto_sign_seed_keypair(b"\x01" * 32)
    sig = sodium.crypto_sign(msg, sk)[:64]
    key = Ed25519PrivateKey.from_private_bytes(b"\x01" * 32)
    pub = key.public_key()
    sig2 = key.sign(msg)
    return {
        "nacl_sign_per_s": round(rate(lambda: sodium.crypto_sign(msg, sk))),
        "nacl_verify_per_s": round(rate(lambda: sodium.crypto_sign_open(sig + msg, pk))),
        # per CPU second: what a share of a busy core does not change (compare CPU per block)
        "nacl_verify_per_cpu_s": round(rate(lambda: sodium.crypto_sign_open(sig + msg, pk),
                                            clock=time.process_time)),
        "cryptography_sign_per_s": round(rate(lambda: key.sign(msg))),
        "cryptography_verify_per_s": round(rate(lambda: pub.verify(sig2, msg))),
    }


def route_tx(i: int) -> Transaction:
    return Transaction("mesh.route_added", {"dest": i.to_bytes(8, "big"), "next_hop": b"n" * 8,
                                            "hops": 3, "seq": i, "lifetime_s": 6.0,
                                            "t": float(i)})


def bench_append(tmp: Path, count: int) -> dict[str, float]:
    led = Ledger.open(tmp / "append.sqlite", Identity.from_seed(b"\x02" * 32),
                      config=LedgerConfig(max_block_txs=256))
    start = time.perf_counter()
    for i in range(count):
        led.append(route_tx(i), NOW)
    led.flush(NOW)
    elapsed = time.perf_counter() - start
    blocks = led.height() + 1
    led.close()
    return {"append_tx_per_s": round(count / elapsed), "append_blocks": blocks,
            "append_blocks_per_s": round(blocks / elapsed, 1)}


def children_cpu() -> float:
    """CPU seconds of this process's finished children (the signature pool's, once closed)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def pool_start_cpu() -> float:
    """CPU seconds a signature child spends starting and stopping (taken out of the figures)."""
    before = children_cpu()
    SignaturePool(1).close()
    return children_cpu() - before


def bench_ingest(tmp: Path, blocks: int, verify_rate: float, verify_cpu_rate: float,
                 processes: int = 0) -> dict[str, float]:
    """`processes` > 0: signatures checked in that many child processes (`ledger.sigpool`)
    beside the decoding on this thread; their CPU time is reported apart."""
    start_cpu = pool_start_cpu() if processes else 0.0
    src = Ledger.open(tmp / f"src{processes}.sqlite", Identity.from_seed(b"\x03" * 32),
                      config=LedgerConfig(max_block_txs=8))
    for i in range(blocks * 8):
        src.append(route_tx(i), NOW)
    src.flush(NOW)
    cfg = LedgerConfig(verify_processes=processes)
    child = children_cpu()
    dst = Ledger.open(tmp / f"dst{processes}.sqlite", Identity.from_seed(b"\x04" * 32),
                      config=cfg)
    start, cpu = time.perf_counter(), time.process_time()
    result = sync_pair(dst, src, NOW)
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    assert result.error is None and dst.height() == -1 and len(dst.heads()) == 1
    dst.close()
    child = children_cpu() - child - start_cpu
    got = result.initiator.stats.blocks_in
    per_s = got / elapsed
    out = {"verify_processes": processes, "ingest_blocks": got,
           "ingest_blocks_per_s": round(per_s),
           "ingest_vs_raw_verify": round(per_s / verify_rate, 3),
           "ingest_cpu_us_per_block": round(1e6 * cpu / got, 1),
           "ingest_vs_raw_verify_cpu": round(got / cpu / verify_cpu_rate, 3),
           "ingest_child_cpu_us_per_block": round(1e6 * child / got, 1),
           "ingest_block_bytes": round(result.initiator.stats.block_bytes_in / got),
           "wire_bytes_one_feed": result.wire_bytes,
           "missing_block_bytes_one_feed": result.initiator.stats.block_bytes_in,
           "wire_ratio_one_feed": round(result.wire_bytes
                                        / result.initiator.stats.block_bytes_in, 4),
           **wire_target(result.wire_bytes, result.initiator.stats.block_bytes_in),
           **recon_path(result.initiator.stats)}
    # The receiver alone (in a real sync the sender is another machine): decode, schema checks,
    # link and signature checks, durable store, in batches of 1,000 blocks.
    raws = list(src.store.iter_blocks(src.author))
    child = children_cpu()
    alone = Ledger.open(tmp / f"alone{processes}.sqlite", Identity.from_seed(b"\x09" * 32),
                        config=cfg)
    start, cpu = time.perf_counter(), time.process_time()
    for k in range(0, len(raws), 1000):
        alone.receive_blocks(raws[k:k + 1000], NOW)
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    alone.close()
    child = children_cpu() - child - start_cpu
    out["receiver_only_blocks_per_s"] = round(len(raws) / elapsed)
    out["receiver_only_vs_raw_verify"] = round(len(raws) / elapsed / verify_rate, 3)
    out["receiver_only_cpu_us_per_block"] = round(1e6 * cpu / len(raws), 1)
    out["receiver_only_vs_raw_verify_cpu"] = round(len(raws) / cpu / verify_cpu_rate, 3)
    out["receiver_only_child_cpu_us_per_block"] = round(1e6 * child / len(raws), 1)
    src.close()
    return out


def wire_target(wire_bytes: int, block_bytes: int) -> dict[str, Any]:
    """The issue's wire target for one case: at most 1.1x the missing blocks plus 2 KB."""
    limit = int(1.1 * block_bytes + 2048)
    return {"wire_limit_bytes": limit, "wire_target_met": wire_bytes <= limit}


def recon_path(stats: SyncStats) -> dict[str, Any]:
    """How the session found the difference: by sketch (estimator + IBLT), or by ranges
    (feed-head lists or fingerprints, also the fallback when a sketch does not decode)."""
    path = "ranges" if stats.sketch_cells == 0 or stats.sketch_failed else "sketch"
    return {"path": path, "sketch_cells": stats.sketch_cells,
            "sketch_failed": stats.sketch_failed}


def many_feeds(n: int) -> list[bytes]:
    return [Block.create(Identity.from_seed((1000 + k).to_bytes(32, "big")), 0, GENESIS_PREV,
                         int(NOW * 1000), (route_tx(k),)).raw for k in range(n)]


def bench_round_trips(feeds: list[bytes]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for diff in (1, 100):
        a = Ledger.open(":memory:", Identity.from_seed(b"\x05" * 32))
        b = Ledger.open(":memory:", Identity.from_seed(b"\x06" * 32))
        a.receive_blocks(feeds, NOW)
        b.receive_blocks(feeds[diff:], NOW)
        result = sync_pair(b, a, NOW)
        s = result.initiator.stats
        assert result.error is None and s.blocks_in == diff
        out[f"diff_{diff}_of_{len(feeds)}"] = {
            "round_trips_to_find": s.recon_messages / 2,
            "round_trips_total": result.messages / 2,
            "wire_bytes": result.wire_bytes,
            "missing_block_bytes": s.block_bytes_in,
            "wire_ratio": round(result.wire_bytes / s.block_bytes_in, 3),
            "overhead_bytes": result.wire_bytes - s.block_bytes_in,
            **wire_target(result.wire_bytes, s.block_bytes_in), **recon_path(s),
        }
        a.close()
        b.close()
    return out


def bench_sketch_trials(feeds: list[bytes], trials: int) -> dict[str, Any]:
    """100 differences among the feeds, `trials` times with another 100 missing each time:
    how often the sketch does not decode (then ranges take over and cost more bytes) and how
    often the wire target holds."""
    a = Ledger.open(":memory:", Identity.from_seed(b"\x05" * 32))
    a.receive_blocks(feeds, NOW)
    ratios: list[float] = []
    failed = met = 0
    for t in range(trials):
        lo = (100 * t) % (len(feeds) - 100)
        b = Ledger.open(":memory:", Identity.from_seed(b"\x06" * 32))
        b.receive_blocks(feeds[:lo] + feeds[lo + 100:], NOW)
        result = sync_pair(b, a, NOW)
        s = result.initiator.stats
        assert result.error is None and s.blocks_in == 100
        ratios.append(result.wire_bytes / s.block_bytes_in)
        failed += s.sketch_failed or s.sketch_cells == 0
        met += wire_target(result.wire_bytes, s.block_bytes_in)["wire_target_met"]
        b.close()
    a.close()
    return {"trials": trials, "feeds": len(feeds), "differences": 100,
            "by_ranges": failed, "wire_target_met": met,
            "wire_ratio_median": round(statistics.median(ratios), 3),
            "wire_ratio_max": round(max(ratios), 3)}


def bench_wire_diverged(tmp: Path) -> dict[str, Any]:
    """1,000 shared feeds; 100 of them are 20 blocks (8 tx each) ahead on one side."""
    a = Ledger.open(":memory:", Identity.from_seed(b"\x07" * 32))
    b = Ledger.open(":memory:", Identity.from_seed(b"\x08" * 32))
    base = many_feeds(1000)
    a.receive_blocks(base, NOW)
    b.receive_blocks(base, NOW)
    extra: list[bytes] = []
    for k in range(100):
        who = Identity.from_seed((1000 + k).to_bytes(32, "big"))
        head = a.store.head(who.public_key)
        assert head is not None
        prev = head.hash
        for h in range(1, 21):
            blk = Block.create(who, h, prev, int(NOW * 1000),
                               tuple(route_tx(h * 8 + j) for j in range(8)))
            extra.append(blk.raw)
            prev = blk.hash
    a.receive_blocks(extra, NOW)
    result = sync_pair(b, a, NOW)
    s = result.initiator.stats
    assert result.error is None and s.blocks_in == 2000
    return {"feeds": 1000, "differing_feeds": 100, "missing_blocks": s.blocks_in,
            "wire_bytes": result.wire_bytes, "missing_block_bytes": s.block_bytes_in,
            "wire_ratio": round(result.wire_bytes / s.block_bytes_in, 4),
            **wire_target(result.wire_bytes, s.block_bytes_in), **recon_path(s),
            "round_trips": result.messages / 2}


async def run_agents(port: int, key: bytes, agents: list[Ledger]) -> dict[str, Any]:
    cfg = SyncConfig(fetch=False)

    async def one(led: Ledger) -> float:
        result = await sync_with_backhaul(led, "127.0.0.1", port, backhaul_key=key,
                                          config=cfg, timeout=600)
        assert result.stats.blocks_out == 100, result.stats
        return result.seconds

    start = time.perf_counter()
    times = await asyncio.gather(*(one(led) for led in agents))
    elapsed = time.perf_counter() - start
    ordered = sorted(times)
    return {"agents": len(agents), "blocks": 100 * len(agents), "seconds": round(elapsed, 2),
            "blocks_per_s": round(100 * len(agents) / elapsed),
            "p50_sync_s": round(statistics.median(ordered), 2),
            "p99_sync_s": round(ordered[int(0.99 * (len(ordered) - 1))], 2)}


def make_agents(count: int) -> list[Ledger]:
    agents = []
    for k in range(count):
        led = Ledger.open(":memory:", Identity.from_seed((50_000 + k).to_bytes(32, "big")),
                          config=LedgerConfig(max_block_txs=4))
        for i in range(400):
            led.append(route_tx(i), NOW)
        led.flush(NOW)
        agents.append(led)
    return agents


def bench_backhaul(tmp: Path, db: str, count: int) -> dict[str, Any]:
    from ledger.backhaul.cli import open_store

    store = open_store(db)
    if db.startswith("postgresql"):
        from ledger.pgstore import PostgresStore

        assert isinstance(store, PostgresStore)
        store.drop_all()
        store.close()
        store = open_store(db)
    agents = make_agents(count)
    for led in agents:
        store.enrol(led.author, "bench", 0)
    store.close()
    server_cpu = children_cpu()
    log_path = tmp / f"server-{db.split(':')[0]}.log"
    log = log_path.open("w")
    proc = subprocess.Popen([sys.executable, "-m", "ledger.backhaul.cli", "serve", "--listen",
                             "127.0.0.1:0", "--db", db, "--key", str(tmp / "bh.key"),
                             "--checkpoint-interval", "5"],
                            stdout=subprocess.PIPE, stderr=log, text=True)
    assert proc.stdout is not None
    info = json.loads(proc.stdout.readline())
    try:
        clients_cpu = time.process_time()
        out = asyncio.run(run_agents(int(info["port"]), bytes.fromhex(info["key"]), agents))
        clients_cpu = time.process_time() - clients_cpu
    except Exception:
        print("the server's log ends:", *log_path.read_text().splitlines()[-20:], sep="\n",
              file=sys.stderr)
        raise
    finally:
        proc.terminate()
        rest, _ = proc.communicate(timeout=60)
        log.close()
        for led in agents:
            led.close()
    # The server's CPU (with its signature child), from start-up to exit, and the agents'.
    blocks = out["blocks"]
    out["server_cpu_us_per_block"] = round(1e6 * (children_cpu() - server_cpu) / blocks, 1)
    out["clients_cpu_us_per_block"] = round(1e6 * clients_cpu / blocks, 1)
    stopped = json.loads(rest.strip().splitlines()[-1])
    out["server_commits"] = stopped.get("commits")
    return out


def postgres_available() -> str | None:
    try:
        import psycopg

        with psycopg.connect(PG_DSN, connect_timeout=2, autocommit=True) as db:
            db.execute(f"CREATE SCHEMA IF NOT EXISTS {PG_SCHEMA}")
    except Exception as exc:  # no server: report why instead of a figure
        return str(exc).splitlines()[0]
    return None


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    parser.add_argument("--agents", type=int, default=1000)
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--no-backhaul", action="store_true", help="skip the agents' runs")
    args = parser.parse_args()
    quick = args.quick
    out: dict[str, Any] = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                                       "platform": platform.platform(),
                                       "load_avg_1m_at_start": round(os.getloadavg()[0], 2)}}
    out["raw"] = raw_rates()
    verify_rate = max(out["raw"]["nacl_verify_per_s"], out["raw"]["cryptography_verify_per_s"])
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        out["append"] = bench_append(tmp, 20_000 if quick else 100_000)
        cpu_rate = out["raw"]["nacl_verify_per_cpu_s"]
        out["ingest"] = bench_ingest(tmp, 2_000 if quick else 10_000, verify_rate, cpu_rate)
        out["ingest_pooled"] = bench_ingest(tmp, 2_000 if quick else 10_000, verify_rate,
                                            cpu_rate, processes=1)
        feeds = many_feeds(2_000 if quick else 10_000)
        out["round_trips"] = bench_round_trips(feeds)
        out["sketch_trials"] = bench_sketch_trials(feeds, 5 if quick else 20)
        out["wire_diverged"] = bench_wire_diverged(tmp)
        agents = 50 if quick else args.agents
        if args.no_backhaul:
            print(json.dumps(out, indent=2))
            return 0
        out["backhaul_sqlite"] = bench_backhaul(tmp, f"sqlite:{tmp / 'bh.sqlite'}", agents)
        why = "disabled" if args.no_postgres else postgres_available()
        out["backhaul_postgresql"] = (bench_backhaul(tmp, PG_BENCH_DSN, agents) if why is None
                                      else {"skipped": why})
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
