"""Deterministic contracts whose state is replayed from the ledger's contract transactions.

One model serves parent/child contracts, provisional contracts approved by an auditor, usage
records checked against rules, and fees and tokens (see docs/contracts.md).
The ledger loads this package as a plugin: `register_tx_types` adds ``contract.tx``.
"""

from __future__ import annotations

from ledger.contracts.engine import Engine, HistoryEntry, Replay, default_templates, state_hash
from ledger.contracts.errors import ContractError
from ledger.contracts.payloads import TX_TYPE
from ledger.contracts.tx import Checkpoint, ContractTx, canonical_order, make_tx
from ledger.tx import Any_, Int, Str, TxRegistry, TxType

CONTRACT_TX = TxType(
    TX_TYPE,
    "A contract call or creation; the contract engine checks it when it replays.",
    {"v": Int(1, 1), "op": Str(16), "template": Str(40, optional=True),
     "params": Any_(optional=True), "roles": Any_(optional=True),
     "contract": Str(40, optional=True), "method": Str(40, optional=True),
     "args": Any_(optional=True)},
)


def register_tx_types(registry: TxRegistry) -> None:
    """The ledger's plugin hook (see ledger.tx.DEFAULT_PLUGINS)."""
    registry.register(CONTRACT_TX)


__all__ = ["CONTRACT_TX", "Checkpoint", "ContractError", "ContractTx", "Engine", "HistoryEntry",
           "Replay", "canonical_order", "default_templates", "make_tx", "register_tx_types",
           "state_hash"]
