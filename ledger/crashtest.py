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

from ledger.ledger import Ledger, LedgerConfig
from ledger.tx import Transaction
from mesh.identity import Identity

SEED = b"\x42" * 32


def child(db: str, batch: int) -> None:
    """Append `batch` transactions per block forever, acknowledging each durable block."""
    led = Ledger.open(db, Identity.from_seed(SEED), config=LedgerConfig(check_on_open=False))
    count = len(led.query())
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
    """Kill the child `kills` times; raise `CrashTestFailure` on the first loss or corruption."""
    rng = random.Random(seed)
    started = time.monotonic()
    acked_height = -1
    acked_count = 0
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
        check(db, acked_height, acked_count)
    final = check(db, acked_height, acked_count)
    return CrashReport(kills, acked_height + 1, final[0], final[1], time.monotonic() - started)


def check(db: Path, acked_height: int, acked_count: int) -> tuple[int, int]:
    """Verify the feed and that every acknowledged block and transaction is there, in order."""
    led = Ledger.open(db, Identity.from_seed(SEED))
    try:
        report = led.verify()
        if not report.ok:
            raise CrashTestFailure(f"feed does not verify: {report.problems[:3]}")
        height = led.height()
        if height < acked_height:
            raise CrashTestFailure(f"acknowledged height {acked_height} lost (head {height})")
        values = [r.tx.body["t"] for r in led.query()]
        if values != [float(i) for i in range(len(values))] or len(values) < acked_count:
            raise CrashTestFailure(f"transactions lost or repeated: {len(values)} stored, "
                                   f"{acked_count} acknowledged")
        return height, len(values)
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
