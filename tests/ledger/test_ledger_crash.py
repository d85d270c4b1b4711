"""SIGKILL a process that appends in a loop, 20 times; nothing acknowledged may be lost.
The full run (hundreds of kills) is `python -m ledger.crashtest --kills 500`."""

from __future__ import annotations

from pathlib import Path

from ledger.crashtest import run


def test_sigkill_loses_no_acknowledged_block(tmp_path: Path) -> None:
    report = run(tmp_path / "crash.sqlite", kills=20, seed=7)
    assert report.kills == 20
    assert report.final_height + 1 >= report.acked_blocks > 0
    assert report.transactions >= 5 * report.acked_blocks
