"""The crash test: a child process appends in a loop and is killed with SIGKILL at random
moments, many times; after each kill the feed must verify end to end and hold every block
whose flush the child acknowledged.

    python -m ledger.crashtest --kills 500 --db /tmp/crash.sqlite     (the full run)

The child prints `ack HEIGHT COUNT` after each `flush()` returned, so an ack in the pipe is a
promise that the block is durable. SIGKILL loses the process, not the OS page cache: this checks
the application's write protocol (WAL commit order, no half-written block), not the disk's
honesty about fsync, which needs real power cuts.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ledger.block import decode_block
from ledger.errors import BlockError
from ledger.ledger import Ledger, LedgerConfig
from ledger.tx import Transaction
from ledger.validate import FeedHead, check_block, head_of
from mesh.identity import Identity

SEED = b"\x42" * 32


def child(db: str, batch: int) -> None:
    """Append `batch` transactions per block forever, acknowledging each durable block."""
    led = Ledger.open(db, Identity.from_seed(SEED), config=LedgerConfig(check_on_open=False))
    count = led.store.tx_count()
    print("ready", flush=True)
    while True:
        for _ in range(batch):
            led.append(Transaction("mesh.manet_left", {"t": float(count)}))
            count += 1
        block = led.flush()
        assert block is not None
        print(f"ack {block.height} {count}", flush=True)


@dataclass(slots=True)
class CrashReport:
    kills: int
    acked_blocks: int
    final_height: int
    transactions: int
    seconds: float


class CrashTestFailure(AssertionError):
    """An acknowledged block was lost, or the feed does not verify."""


def run(db: Path, kills: int, seed: int, batch: int = 5, max_delay_s: float = 0.12) -> CrashReport:
    """Kill the child `kills` times; raise `CrashTestFailure` on the first loss or corruption.

    After each kill the new tail of the feed is checked (link, height, signature, schema, the
    transaction sequence) from the last checked block; at the end the whole feed is verified.
    """
    rng = random.Random(seed)
    started = time.monotonic()
    acked_height = -1
    acked_count = 0
    checked = Tail(None, 0)
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    for _ in range(kills):
        proc = subprocess.Popen([sys.executable, "-m", "ledger.crashtest", "--child",
                                 "--db", str(db), "--batch", str(batch)],
                                stdout=subprocess.PIPE, text=True, env=env)
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != "ready":
            proc.kill()
            raise CrashTestFailure("child did not start")
        time.sleep(rng.uniform(0.0, max_delay_s))
        os.kill(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        for line in out.splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[0] == "ack":
                acked_height = max(acked_height, int(parts[1]))
                acked_count = max(acked_count, int(parts[2]))
        checked = check_tail(db, checked, acked_height, acked_count)
    led = Ledger.open(db, Identity.from_seed(SEED))
    try:
        report = led.verify()
        if not report.ok:
            raise CrashTestFailure(f"feed does not verify: {report.problems[:3]}")
        height = led.height()
    finally:
        led.close()
    return CrashReport(kills, acked_height + 1, height, checked.count,
                       time.monotonic() - started)


@dataclass(frozen=True, slots=True)
class Tail:
    """How far the feed was checked: its head then, and transactions counted up to it."""

    head: FeedHead | None
    count: int


def check_tail(db: Path, tail: Tail, acked_height: int, acked_count: int) -> Tail:
    """Check the blocks added since `tail` and that nothing acknowledged is missing."""
    led = Ledger.open(db, Identity.from_seed(SEED))
    try:
        prev, count = tail.head, tail.count
        if prev is not None and led.store.block_hash(led.author, prev.height) != prev.hash:
            raise CrashTestFailure(f"block {prev.height} changed after it was checked")
        start = 0 if prev is None else prev.height + 1
        for raw in led.store.blocks_from(led.author, start, 1 << 40, 1 << 62):
            try:
                block = decode_block(raw, led.registry)
                check_block(block, prev, block.timestamp_ms)
            except BlockError as exc:
                raise CrashTestFailure(f"feed does not verify: {exc}") from exc
            for tx in block.txs:
                if tx.body["t"] != float(count):
                    raise CrashTestFailure(f"transaction {count} lost or repeated")
                count += 1
            prev = head_of(block)
        head = led.store.head(led.author)
        if head != prev:
            raise CrashTestFailure("feed head does not match the stored blocks")
        height = -1 if head is None else head.height
        if height < acked_height or count < acked_count:
            raise CrashTestFailure(f"acknowledged block {acked_height} / transaction "
                                   f"{acked_count} lost (head {height}, {count} stored)")
        return Tail(prev, count)
    finally:
        led.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ledger.crashtest")
    parser.add_argument("--db", default="crashtest.sqlite")
    parser.add_argument("--kills", type=int, default=500)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--batch", type=int, default=5)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.db, args.batch)
        return 0
    report = run(Path(args.db), args.kills, args.seed, args.batch)
    print(json.dumps({"kills": report.kills, "acked_blocks": report.acked_blocks,
                      "final_height": report.final_height,
                      "transactions": report.transactions, "seconds": round(report.seconds, 1),
                      "lost": 0}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
