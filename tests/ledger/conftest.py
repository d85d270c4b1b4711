"""Fixtures for the ledger tests: ledgers in a temporary folder with fixed keys and clocks."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ledger import Ledger, LedgerConfig
from mesh.identity import Identity

NOW = 1_750_000_000.0
"""A fixed wall-clock time (seconds) so block timestamps repeat run after run."""

MakeLedger = Callable[..., Ledger]


@pytest.fixture
def make_ledger(tmp_path: Path) -> Iterator[MakeLedger]:
    opened: list[Ledger] = []

    def make(name: str, seed: int, **config: object) -> Ledger:
        led = Ledger.open(tmp_path / f"{name}.sqlite", Identity.from_seed(bytes([seed]) * 32),
                          config=LedgerConfig(**config))  # type: ignore[arg-type]
        opened.append(led)
        return led

    yield make
    for led in opened:
        led.close()  # closing twice is harmless
