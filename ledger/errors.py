"""Typed errors of the ledger. Each says whose fault it is: the peer's bytes, our store, or us."""

from __future__ import annotations


class LedgerError(Exception):
    """Base class of every error the ledger raises on purpose."""


class CodecError(LedgerError):
    """Bytes that are not the deterministic CBOR we expect (too big, malformed, non-canonical)."""


class TxError(LedgerError):
    """A transaction was rejected; `reason` is a short machine-readable name."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


class UnknownTxType(TxError):
    """The transaction's type is not in the registry."""


class TxSchemaError(TxError):
    """The transaction's body does not match its type's schema."""


class BlockError(LedgerError):
    """A block failed validation (signature, link, height, time, size, transactions)."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


class StorageError(LedgerError):
    """The database cannot be used: corrupt, foreign, newer schema, or unwritable."""


class SyncError(LedgerError):
    """The peer broke the sync protocol or sent invalid data; the session is cut."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


class CheckpointError(LedgerError):
    """A checkpoint or its inclusion proof does not verify with the backhaul's key."""


class AuthError(LedgerError):
    """The backhaul handshake failed: unenrolled key, bad signature, or wrong server key."""
