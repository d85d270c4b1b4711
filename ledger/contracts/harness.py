"""In-memory feeds of contract transactions, for tests, benchmarks and simulations.

The ledger signs and chains real feeds; this harness only numbers each author's transactions
the way a feed would (height, index) and stamps the time it is given, so thousands of
transactions from many nodes can be built and shuffled without the storage layer.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ledger.contracts.tx import ContractTx, make_tx
from mesh.identity import Identity


class Feed:
    """One node's contract transactions: one per block, heights counting from 0."""

    def __init__(self, identity: Identity) -> None:
        self.identity = identity
        self.node = identity.hex_id
        self.height = -1

    @classmethod
    def from_seed(cls, name: str) -> Feed:
        return cls(Identity.from_seed(name.encode().ljust(32, b"\0")[:32]))

    def tx(self, body: Mapping[str, Any] | bytes, time_ms: int) -> ContractTx:
        """The next transaction of this feed (bytes: an encoded, possibly malformed, body)."""
        self.height += 1
        payload = body if isinstance(body, bytes) else dict(body)
        return make_tx(self.identity.node_id, self.height, 0, time_ms, payload)
