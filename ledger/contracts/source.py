"""Where contract transactions and checkpoints come from, and how new ones are written.

`ContractSource` is the small interface the engine's callers need; `LedgerSource` implements
it over the node's signed ledger (`ledger.Ledger`): contract transactions are ledger
transactions of type ``contract.tx``, their author is the node id of the feed's key, and the
backhaul checkpoints the ledger has verified say which of them are final.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from ledger.contracts.payloads import TX_TYPE
from ledger.contracts.tx import Checkpoint, ContractTx, make_tx
from ledger.ledger import Ledger
from mesh.identity import node_id_of


class ContractSource(Protocol):
    """What a replay reads."""

    def contract_txs(self) -> list[ContractTx]: ...

    def checkpoints(self) -> list[Checkpoint]: ...


class LedgerSource:
    """Contract transactions and checkpoints of one node's ledger; writes go to its own feed."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self._node_ids: dict[bytes, bytes] = {}

    def _node_id(self, key: bytes) -> bytes:
        nid = self._node_ids.get(key)
        if nid is None:
            nid = self._node_ids[key] = node_id_of(key)
        return nid

    def contract_txs(self) -> list[ContractTx]:
        """Contract transactions, except those of a feed from the height where its author
        was caught signing two blocks: which of the two a node holds depends on arrival
        order, so neither may count (the ledger keeps the proof)."""
        cut: dict[bytes, int] = {}
        for e in self.ledger.store.equivocations():
            cut[e.author] = min(cut.get(e.author, e.height), e.height)
        return [make_tx(self._node_id(r.author), r.height, r.index, r.time_ms, r.tx.body)
                for r in self.ledger.query(type=TX_TYPE)
                if r.author not in cut or r.height < cut[r.author]]

    def checkpoints(self) -> list[Checkpoint]:
        """The ledger keeps, per feed, the highest height any verified checkpoint covers; that
        is one aggregate checkpoint, dated by the newest checkpoint it holds."""
        store = self.ledger.store
        row = store.db.execute("SELECT seq, time_ms FROM checkpoints "
                               "ORDER BY time_ms DESC, seq DESC LIMIT 1").fetchone()
        if row is None:
            return []
        heights: dict[bytes, int] = {}
        for head in store.heads():
            h = store.checkpointed_height(head.author)
            if h >= 0:
                heights[self._node_id(head.author)] = h
        return [Checkpoint(seq=int(row[0]), time_ms=int(row[1]), heights=heights)]

    def submit(self, body: Mapping[str, Any], now: float) -> ContractTx:
        """Append a contract transaction to this node's feed and make it durable."""
        tx = self.ledger.registry.make(TX_TYPE, body)
        self.ledger.append(tx, now)
        block = self.ledger.flush(now)
        assert block is not None
        index = len(block.txs) - 1
        return make_tx(self._node_id(block.author), block.height, index, block.timestamp_ms,
                       block.txs[index].body)
