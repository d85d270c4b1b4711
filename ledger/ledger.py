"""The facade other packages use: a node's ledger over one SQLite file.

    led = Ledger.open("ledger.sqlite", identity)
    led.append(led.registry.make("line.status", body), now)   # batched
    led.record_event(mesh_event, now)                           # routing history
    block = led.flush(now)                                      # durable when it returns
    led.query(type="mesh.route_added")

`now` is wall-clock seconds (time.time()): block timestamps are wall time in milliseconds.
Appends are batched into one signed block when `max_block_txs` are pending or
`max_block_delay_s` after the first pending one (drive that with `get_timer`/`handle_timer`,
like a protocol core). A transaction is acknowledged only when a `flush` that covered it
returned; until then a power cut may lose it (never a flushed one).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ledger.block import GENESIS_PREV, Block, decode_block
from ledger.errors import BlockError, LedgerError
from ledger.ingest import IngestResult, ingest
from ledger.sigpool import SignaturePool
from ledger.store import SqliteStore
from ledger.sync import SyncConfig, SyncSession
from ledger.tx import Transaction, TxRegistry, default_registry, transaction_from_mesh_event
from ledger.validate import MAX_FUTURE_MS, FeedHead, Verifier, check_block
from mesh import events as ev
from mesh.identity import Identity, VerifyCache
from mesh.identity import verify as ed25519_verify


def default_verify_processes() -> int:
    """One signature child when there is a second core, else none (the backhaul's default)."""
    return 1 if (os.cpu_count() or 1) > 1 else 0


@dataclass(frozen=True, slots=True, kw_only=True)
class LedgerConfig:
    """Knobs of a node's ledger; the defaults suit a Raspberry Pi."""

    max_block_txs: int = 256
    """A block is signed as soon as this many transactions are pending."""
    max_block_delay_s: float = 2.0
    """...or this long after the first pending transaction was appended."""
    quota_bytes: int = 256 * 1024 * 1024
    """Storage quota for blocks; `prune()` deletes others' checkpointed blocks above it."""
    max_future_ms: int = MAX_FUTURE_MS
    """How far ahead of our clock a received block's timestamp may be."""
    check_on_open: bool = True
    """Run SQLite's quick_check when opening (linear in the file size)."""
    verify_processes: int = 0
    """Child processes that check received blocks' signatures while this one decodes,
    validates and stores them (`ledger.sigpool`; 0: all inline, the default, because a
    simulator runs hundreds of ledgers in one process). A device with a spare core sets 1
    (`default_verify_processes()`): a child starts at the first batch of more than 64
    blocks, and the ingesting thread checks what finds no idle child."""


@dataclass(frozen=True, slots=True)
class TxRecord:
    """A stored transaction with where it lives: feed author, block height, index, block time."""

    author: bytes
    height: int
    index: int
    time_ms: int
    tx: Transaction


@dataclass(slots=True)
class VerifyReport:
    """Result of `Ledger.verify()`: every feed re-checked block by block."""

    feeds: int = 0
    blocks: int = 0
    problems: list[tuple[bytes, int, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


class Ledger:
    """A node's ledger: its own feed, copies of others' feeds, checkpoints."""

    def __init__(self, store: SqliteStore, identity: Identity, registry: TxRegistry,
                 config: LedgerConfig) -> None:
        self.store = store
        self.identity = identity
        self.author = identity.public_key
        self.registry = registry
        self.config = config
        self.verify_cache = VerifyCache()
        self.verifier: Verifier = ed25519_verify
        """The signature check for received blocks: the plain one, not `verify_cache`. A block
        is verified once per ledger (a duplicate is known by its bytes first), so the cache
        never hit and kept up to 65,536 block messages (~55 MB of 850-byte blocks) alive. A
        simulator running many ledgers in one process may set one shared, smaller
        `VerifyCache(...).verify` here: a block is then checked once, not once per node."""
        self.verify_pool: SignaturePool | None = None
        """Where received blocks' signatures are checked (`LedgerConfig.verify_processes`)."""
        if config.verify_processes > 0:
            self.verify_pool = SignaturePool(config.verify_processes)
        self._pending: list[Transaction] = []
        self._first_pending: float | None = None

    @classmethod
    def open(cls, path: str | os.PathLike[str], identity: Identity, *,
             registry: TxRegistry | None = None, config: LedgerConfig | None = None) -> Ledger:
        """Open (or create) the ledger file; raises `StorageError` for a corrupt/foreign file."""
        cfg = config or LedgerConfig()
        store = SqliteStore(Path(path), check=cfg.check_on_open)
        return cls(store, identity, registry or default_registry(), cfg)

    def close(self) -> None:
        """Flush pending transactions, then close the database. Safe to call twice."""
        if self._pending:
            self.flush()
        if self.verify_pool is not None:
            self.verify_pool.close()
        self.store.close()

    def sync_session(self, *, initiator: bool, peer: str, now: float,
                     config: SyncConfig | None = None) -> SyncSession:
        """A sync session over this ledger's store, registry and signature checking."""
        return SyncSession(self.store, self.registry, initiator=initiator, peer=peer, now=now,
                           config=config, verifier=self.verifier, pool=self.verify_pool)

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---------------------------------------------------------------- writing

    def append(self, tx: Transaction, now: float | None = None) -> Block | None:
        """Queue a validated transaction; returns the block when this append filled one."""
        self.registry.validate(tx)
        t = time.time() if now is None else now
        self._pending.append(tx)
        if self._first_pending is None:
            self._first_pending = t
        if len(self._pending) >= self.config.max_block_txs:
            return self.flush(t)
        return None

    def record_event(self, event: ev.Event, now: float | None = None) -> bool:
        """Append the ledger record of a mesh event; False for events that are not history."""
        tx = transaction_from_mesh_event(event)
        if tx is None:
            return False
        self.append(tx, now)
        return True

    def flush(self, now: float | None = None) -> Block | None:
        """Sign the pending transactions into one block and return after it is durable."""
        if not self._pending:
            return None
        t = time.time() if now is None else now
        head = self.store.head(self.author)
        ts = int(t * 1000)
        if head is None:
            block = Block.create(self.identity, 0, GENESIS_PREV, ts, tuple(self._pending))
        else:
            block = Block.create(self.identity, head.height + 1, head.hash,
                                 max(ts, head.timestamp_ms), tuple(self._pending))
        self.store.put_blocks([block])
        self._pending.clear()
        self._first_pending = None
        return block

    def get_timer(self) -> float | None:
        """When the pending batch must be signed (None: nothing pending)."""
        if self._first_pending is None:
            return None
        return self._first_pending + self.config.max_block_delay_s

    def handle_timer(self, now: float) -> Block | None:
        deadline = self.get_timer()
        if deadline is not None and now >= deadline:
            return self.flush(now)
        return None

    @property
    def pending(self) -> int:
        return len(self._pending)

    # ---------------------------------------------------------------- receiving

    def receive_blocks(self, raws: list[bytes], now: float | None = None) -> IngestResult:
        """Validate and store blocks from a peer; raises `BlockError` on the first bad one."""
        t = time.time() if now is None else now
        return ingest(self.store, raws, self.registry, int(t * 1000), verifier=self.verifier,
                      max_future_ms=self.config.max_future_ms, pool=self.verify_pool)

    # ---------------------------------------------------------------- reading

    def height(self) -> int:
        """Height of this node's own feed (-1 when it has no block yet)."""
        head = self.store.head(self.author)
        return -1 if head is None else head.height

    def heads(self) -> list[FeedHead]:
        return self.store.heads()

    def block(self, author: bytes, height: int) -> Block | None:
        raw = self.store.block_raw(author, height)
        return None if raw is None else decode_block(raw, self.registry)

    def blocks(self, author: bytes) -> Iterator[Block]:
        for raw in self.store.iter_blocks(author):
            yield decode_block(raw, self.registry)

    def query(self, *, type: str | None = None, author: bytes | None = None,
              since_ms: int | None = None, until_ms: int | None = None,
              limit: int | None = None) -> list[TxRecord]:
        """Transactions in replay order: block time, then author, height, index."""
        rows = self.store.tx_rows(type=type, author=author, since_ms=since_ms,
                                  until_ms=until_ms, limit=limit)
        out: list[TxRecord] = []
        cache: dict[tuple[bytes, int], Block] = {}
        for row in rows:
            key = (row.author, row.height)
            block = cache.get(key)
            if block is None:
                raw = self.store.block_raw(row.author, row.height)
                if raw is None:
                    raise LedgerError(f"index names a missing block {row.author.hex()}/"
                                      f"{row.height}")
                block = cache[key] = decode_block(raw, self.registry)
            out.append(TxRecord(row.author, row.height, row.idx, row.ts, block.txs[row.idx]))
        return out

    def verify(self, now: float | None = None) -> VerifyReport:
        """Re-check every stored feed end to end: decoding, links, heights, signatures, heads."""
        return verify_store(self.store, self.registry,
                            int((time.time() if now is None else now) * 1000))

    def stats(self) -> dict[str, Any]:
        heads = self.store.heads()
        return {"author": self.author.hex(), "own_height": self.height(), "feeds": len(heads),
                "blocks_bytes": self.store.blocks_bytes(), "pending": len(self._pending),
                "flagged": len(self.store.flagged()),
                "equivocations": len(self.store.equivocations())}

    # ---------------------------------------------------------------- retention, sync state

    def prune(self) -> int:
        """Apply the storage quota: delete others' old, checkpointed blocks (never our own)."""
        return self.store.prune(self.config.quota_bytes, self.author)

    def sync_lag_s(self, now: float | None = None) -> float | None:
        """Seconds since the last completed sync with any peer (None: never synced)."""
        last = self.store.last_sync_ms()
        if last is None:
            return None
        return max(0.0, (time.time() if now is None else now) - last / 1000)


def verify_store(store: SqliteStore, registry: TxRegistry, now_ms: int) -> VerifyReport:
    """Check every feed in `store` block by block (what `manet-agent ledger verify` runs)."""
    del now_ms  # stored blocks were checked for clock sanity on arrival; not again here
    report = VerifyReport()
    for head in store.heads():
        report.feeds += 1
        base = store.base_height(head.author)
        prev: FeedHead | None = None
        expected = base
        for raw in store.iter_blocks(head.author):
            report.blocks += 1
            try:
                block = decode_block(raw, registry)
                if block.author != head.author or block.height != expected:
                    raise BlockError("gap", f"expected height {expected}")
                if prev is None and base > 0:
                    prev = FeedHead(block.author, block.height - 1, block.prev,
                                    block.timestamp_ms)
                check_block(block, prev, block.timestamp_ms)
            except LedgerError as exc:
                report.problems.append((head.author, expected, str(exc)))
                break
            prev = FeedHead(block.author, block.height, block.hash, block.timestamp_ms)
            expected += 1
        else:
            if prev is None or prev.height != head.height or prev.hash != head.hash:
                report.problems.append((head.author, head.height,
                                        "feed head does not match the stored blocks"))
    return report
