"""Deterministic contracts whose state is replayed from the ledger's contract transactions.

One model serves parent/child contracts, provisional contracts approved by an auditor, usage
records checked against rules, and fees and tokens (see docs/contracts.md).
The ledger loads this package as a plugin: `register_tx_types` adds ``contract.tx``. The
engine and the rest load when first named (`ledger.contracts.Engine`...): an agent registers
the type on every start, and replays contracts only when asked (0.35 MB it need not hold).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ledger.tx import Any_, Int, Str, TxRegistry, TxType

if TYPE_CHECKING:
    from ledger.contracts.engine import (
        Engine,
        HistoryEntry,
        Replay,
        default_templates,
        state_hash,
    )
    from ledger.contracts.errors import ContractError
    from ledger.contracts.tx import Checkpoint, ContractTx, canonical_order, make_tx

TX_TYPE = "contract.tx"

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


_LAZY = {
    "Engine": "engine", "HistoryEntry": "engine", "Replay": "engine",
    "default_templates": "engine", "state_hash": "engine", "ContractError": "errors",
    "Checkpoint": "tx", "ContractTx": "tx", "canonical_order": "tx", "make_tx": "tx",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


__all__ = ["CONTRACT_TX", "Checkpoint", "ContractError", "ContractTx", "Engine", "HistoryEntry",
           "Replay", "canonical_order", "default_templates", "make_tx", "register_tx_types",
           "state_hash"]
