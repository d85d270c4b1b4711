"""Signed hash-chained feeds, storage, sync sessions, contracts and the backhaul server.

The facade is `ledger.Ledger`; transaction types live in `ledger.tx` (see docs/ledger.md).
"""

from ledger.ledger import Ledger, LedgerConfig, TxRecord, VerifyReport
from ledger.tx import Transaction, TxRegistry, TxType, register_tx_type, transaction_from_mesh_event

__all__ = ["Ledger", "LedgerConfig", "Transaction", "TxRecord", "TxRegistry", "TxType",
           "VerifyReport", "register_tx_type", "transaction_from_mesh_event"]
