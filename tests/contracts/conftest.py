"""Shared fixtures: named feeds (owner, auditor, vehicles, operator) and an engine."""

from __future__ import annotations

import pytest

from ledger.contracts import Engine
from ledger.contracts.harness import Feed


class Nodes:
    """Feeds for the usual cast; each test gets fresh heights."""

    def __init__(self) -> None:
        self.owner = Feed.from_seed("owner")
        self.auditor = Feed.from_seed("auditor")
        self.v1 = Feed.from_seed("vehicle-1")
        self.v2 = Feed.from_seed("vehicle-2")
        self.v3 = Feed.from_seed("vehicle-3")
        self.op = Feed.from_seed("operator")
        self.stranger = Feed.from_seed("stranger")


@pytest.fixture
def nodes() -> Nodes:
    return Nodes()


@pytest.fixture
def engine() -> Engine:
    return Engine()
