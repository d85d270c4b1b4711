"""Contract transactions, backhaul checkpoints, and the canonical replay order.

Canonical order (why): every node must apply the same transactions in the same order, whatever
order they arrived in. The key is

    (finality epoch, block time, author node id, feed height, index in block)

* Finality epoch: the sequence number of the first backhaul checkpoint that covers the
  transaction (checkpoint heights >= its feed height), or "not final" (after all epochs).
  Final transactions therefore form a prefix of the order that nothing arriving later can
  reorder: a transaction that shows up late with an old (or forged, backdated) block time is
  placed after everything already checkpointed, so final state stays final.
* Block time: the author's signed block timestamp, so the order follows real time as well as
  the authors' clocks allow; "the later of two double spends fails" means later in this time.
* Author, feed height, index: unique per transaction, so the order is total; height and index
  keep one feed's own transactions in the order its author wrote them when times tie.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ledger.contracts import codec

NOT_FINAL = 1 << 62
"""Epoch of a transaction that no checkpoint covers yet (sorts after every real epoch)."""


@dataclass(frozen=True, slots=True)
class ContractTx:
    """One contract transaction as the ledger holds it.

    `author` is the signer's 8-byte node id (`mesh.identity.node_id_of` of its key).
    `payload` is the call (see payloads.py): the decoded body the ledger stored, or its
    canonical CBOR; bytes are decoded by the engine, so a malformed payload is a recorded
    failure, not a crash.
    """

    tx_id: bytes
    author: bytes
    time_ms: int
    height: int
    index: int
    payload: Mapping[str, Any] | bytes


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """What a verified backhaul checkpoint covers (the ledger checks its signature and
    proofs): `heights` maps an author node id to the highest feed height covered."""

    seq: int
    time_ms: int
    heights: Mapping[bytes, int] = field(default_factory=dict)

    def covers(self, tx: ContractTx) -> bool:
        return self.heights.get(tx.author, -1) >= tx.height


def tx_id_of(author: bytes, height: int, index: int) -> bytes:
    """Transaction id: its place in its author's feed (the feed's signatures and hash chain
    vouch for the content; a second block at one height is the ledger's equivocation case)."""
    return codec.digest(b"manet-contract-tx", author, height.to_bytes(8, "big"),
                        index.to_bytes(4, "big"))


def make_tx(author: bytes, height: int, index: int, time_ms: int,
            payload: Mapping[str, Any] | bytes) -> ContractTx:
    return ContractTx(tx_id=tx_id_of(author, height, index), author=author, time_ms=time_ms,
                      height=height, index=index, payload=payload)


def epoch_of(tx: ContractTx, checkpoints: Sequence[Checkpoint]) -> int:
    """Sequence number of the first checkpoint that covers `tx`, or NOT_FINAL."""
    for cp in checkpoints:
        if cp.covers(tx):
            return cp.seq
    return NOT_FINAL


def canonical_order(txs: Iterable[ContractTx],
                    checkpoints: Sequence[Checkpoint] = ()) -> list[tuple[int, ContractTx]]:
    """Deduplicate by id and sort into the canonical order; returns (epoch, tx) pairs."""
    cps = sorted(checkpoints, key=lambda c: c.seq)
    unique: dict[bytes, ContractTx] = {}
    for tx in txs:
        unique.setdefault(tx.tx_id, tx)
    keyed = [(epoch_of(tx, cps) if cps else NOT_FINAL, tx) for tx in unique.values()]
    keyed.sort(key=lambda p: (p[0], p[1].time_ms, p[1].author, p[1].height, p[1].index,
                              p[1].tx_id))
    return keyed
