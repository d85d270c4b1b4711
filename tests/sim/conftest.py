"""Helpers for the simulator tests: write a scenario from a TOML string."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from sim_radio import scenario as scn


@pytest.fixture
def make_scenario(tmp_path: Path) -> Callable[..., scn.Scenario]:
    counter = [0]

    def make(text: str, name: str = "") -> scn.Scenario:
        counter[0] += 1
        path = tmp_path / (name or f"s{counter[0]}.toml")
        path.write_text(text, encoding="utf-8")
        return scn.load(path)

    return make
