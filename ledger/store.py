"""SQLite storage of feeds (WAL, synchronous=FULL): blocks, a transaction index, feed heads,
equivocation proofs, checkpoints, peers that were cut off, and (on the backhaul) enrolled keys.

A write returns after SQLite committed it to the WAL with an fsync, so a block that `put_blocks`
returned is durable across power loss. Opening a file that is not a ledger database, or that is
corrupt, raises `StorageError` and leaves the file untouched.

The transaction index has one row per block and transaction type (not one per transaction):
`idxs` holds the indices of that type's transactions in the block, 2 bytes each, big-endian.
A block of 8 route transactions costs two B-tree entries (block, index row) instead of 25.
"""

from __future__ import annotations

import os
import sqlite3
import struct
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from ledger.block import Block
from ledger.errors import StorageError
from ledger.validate import FeedHead

APPLICATION_ID = 0x4D4C4731  # "MLG1": marks the file as a ledger database
SCHEMA_VERSION = 2
"""1: one index row per transaction (txs + two indexes). 2: one row per block per transaction
type (`txidx`); version-1 files are migrated in place when opened."""
SQLITE_MAGIC = b"SQLite format 3\x00"
PAGE_SIZE = 8192
"""Of new files (older ones keep theirs). Received blocks are ~0.8 KB: at SQLite's default of
4 KB, four fit a page of the blocks table, and storing 4,000 of them in batches of 1,000 cost
7.2-8.1 us CPU a block; at 8 KB 5.7-6.2, at 16 KB 5.4-5.9. A device's own commit (a block, its
index row, its feed head) writes ~3 pages to the WAL, so bigger pages cost flash writes
there: 8 KB takes most of the gain for twice the bytes a commit, 16 KB would take four times."""

SCHEMA = """
CREATE TABLE feeds(
    author BLOB PRIMARY KEY, height INTEGER NOT NULL, hash BLOB NOT NULL, ts INTEGER NOT NULL,
    base_height INTEGER NOT NULL DEFAULT 0, flagged TEXT);
CREATE TABLE blocks(
    author BLOB NOT NULL, height INTEGER NOT NULL, hash BLOB NOT NULL, ts INTEGER NOT NULL,
    raw BLOB NOT NULL, PRIMARY KEY(author, height)) WITHOUT ROWID;
CREATE TABLE txidx(
    type TEXT NOT NULL, ts INTEGER NOT NULL, author BLOB NOT NULL, height INTEGER NOT NULL,
    idxs BLOB NOT NULL, PRIMARY KEY(type, ts, author, height)) WITHOUT ROWID;
CREATE TABLE equivocations(
    author BLOB NOT NULL, height INTEGER NOT NULL, raw_a BLOB NOT NULL, raw_b BLOB NOT NULL,
    found_ms INTEGER NOT NULL, PRIMARY KEY(author, height));
CREATE TABLE checkpoints(
    backhaul BLOB NOT NULL, seq INTEGER NOT NULL, time_ms INTEGER NOT NULL, root BLOB NOT NULL,
    raw BLOB NOT NULL, PRIMARY KEY(backhaul, seq));
CREATE TABLE checkpointed(author BLOB PRIMARY KEY, height INTEGER NOT NULL, hash BLOB NOT NULL);
CREATE TABLE peers(
    peer TEXT PRIMARY KEY, last_sync_ms INTEGER, cut_reason TEXT, cut_ms INTEGER);
CREATE TABLE enrolled(key BLOB PRIMARY KEY, name TEXT NOT NULL, added_ms INTEGER NOT NULL);
"""


@dataclass(frozen=True, slots=True)
class TxRow:
    """Where a transaction lives: (author, height, idx) in a block with timestamp `ts`."""

    author: bytes
    height: int
    idx: int
    type: str
    ts: int


@dataclass(frozen=True, slots=True)
class Equivocation:
    author: bytes
    height: int
    raw_a: bytes
    raw_b: bytes
    found_ms: int


class SqliteStore:
    """One SQLite database. Not thread-safe: use it from one thread (or one executor)."""

    def __init__(self, path: str | os.PathLike[str], *, check: bool = True) -> None:
        self.path = Path(path)
        self._group = False
        _refuse_foreign_file(self.path)
        try:
            self.db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise StorageError(f"cannot open {self.path}: {exc}") from exc
        try:
            self._prepare(check)
        except sqlite3.DatabaseError as exc:
            self.db.close()
            raise StorageError(f"{self.path} is not a usable ledger database: {exc}") from exc
        except StorageError:
            self.db.close()
            raise

    def _prepare(self, check: bool) -> None:
        db = self.db
        app_id = db.execute("PRAGMA application_id").fetchone()[0]
        tables = db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
        if app_id != APPLICATION_ID and tables:
            raise StorageError(f"{self.path} is an SQLite database of another program")
        if check:
            result = db.execute("PRAGMA quick_check").fetchone()[0]
            if result != "ok":
                raise StorageError(f"{self.path} is corrupt: {result}")
        if not tables:  # a new file: before WAL mode fixes the page size
            db.execute(f"PRAGMA page_size={PAGE_SIZE}")
        mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0].lower()
        if mode != "wal" and not (mode == "memory" and str(self.path) == ":memory:"):
            raise StorageError(f"{self.path}: WAL mode is not available")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("PRAGMA foreign_keys=OFF")
        if not tables:
            db.executescript("BEGIN IMMEDIATE;" + SCHEMA
                             + f"PRAGMA application_id={APPLICATION_ID};"
                             + f"PRAGMA user_version={SCHEMA_VERSION}; COMMIT;")
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version == 1:
            self._migrate_v1()
            version = db.execute("PRAGMA user_version").fetchone()[0]
        if version != SCHEMA_VERSION:
            raise StorageError(f"{self.path} has schema {version}; this build reads "
                               f"{SCHEMA_VERSION}")

    def _migrate_v1(self) -> None:
        """Schema 1 -> 2 in one transaction: per-transaction index rows become one row per
        block and type. A crash in between leaves the file at version 1 (WAL rollback)."""
        db = self.db
        with self._write():
            db.execute(_TXIDX_DDL)
            rows = db.execute("SELECT type, ts, author, height, group_concat(idx) FROM txs "
                              "GROUP BY type, ts, author, height")
            db.executemany("INSERT INTO txidx(type, ts, author, height, idxs) VALUES (?,?,?,?,?)",
                           ((t, ts, a, h, pack_idxs(sorted(int(i) for i in idxs.split(","))))
                            for t, ts, a, h, idxs in rows.fetchall()))
            db.execute("DROP TABLE txs")  # drops its two indexes too
            db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def close(self) -> None:
        self.db.close()

    @contextmanager
    def _write(self) -> Iterator[None]:
        """One atomic write: its own durable transaction, or a savepoint inside `group()`."""
        db = self.db
        if self._group:
            db.execute("SAVEPOINT w")
            try:
                yield
            except BaseException:
                db.execute("ROLLBACK TO w")
                db.execute("RELEASE w")
                raise
            db.execute("RELEASE w")
            return
        db.execute("BEGIN IMMEDIATE")
        try:
            yield
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    @contextmanager
    def group(self) -> Iterator[None]:
        """Group commit: every write inside is durable when the block ends, with one fsync
        (writes, peers' sync marks included, join one transaction; each write stays atomic
        on its own through a savepoint). Nothing inside is durable before the end: callers
        acknowledge only after it. An error escaping the block rolls all of it back."""
        if self._group:
            raise StorageError("groups do not nest")
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        self._group = True
        try:
            yield
        except BaseException:
            self._group = False
            db.execute("ROLLBACK")
            raise
        self._group = False
        db.execute("COMMIT")

    # ---------------------------------------------------------------- feeds and blocks

    def head(self, author: bytes) -> FeedHead | None:
        row = self.db.execute("SELECT height, hash, ts FROM feeds WHERE author=?",
                              (author,)).fetchone()
        return None if row is None else FeedHead(author, row[0], row[1], row[2])

    def heads(self) -> list[FeedHead]:
        rows = self.db.execute("SELECT author, height, hash, ts FROM feeds ORDER BY author")
        return [FeedHead(a, h, x, t) for a, h, x, t in rows]

    def flagged(self) -> dict[bytes, str]:
        """Authors caught equivocating, with the reason: their feeds are no longer extended.
        (The proof is what counts: we may hold a proof about a feed we never stored.)"""
        rows = self.db.execute("SELECT author, min(height) FROM equivocations GROUP BY author")
        return {a: f"equivocation at height {h}" for a, h in rows}

    def flag_of(self, author: bytes) -> str | None:
        row = self.db.execute("SELECT min(height) FROM equivocations WHERE author=?",
                              (author,)).fetchone()
        return None if row is None or row[0] is None else f"equivocation at height {row[0]}"

    def base_height(self, author: bytes) -> int:
        row = self.db.execute("SELECT base_height FROM feeds WHERE author=?",
                              (author,)).fetchone()
        return 0 if row is None else int(row[0])

    def block_hash(self, author: bytes, height: int) -> bytes | None:
        row = self.db.execute("SELECT hash FROM blocks WHERE author=? AND height=?",
                              (author, height)).fetchone()
        return None if row is None else bytes(row[0])

    def block_raw(self, author: bytes, height: int) -> bytes | None:
        row = self.db.execute("SELECT raw FROM blocks WHERE author=? AND height=?",
                              (author, height)).fetchone()
        return None if row is None else bytes(row[0])

    def blocks_from(self, author: bytes, from_height: int, limit: int,
                    max_bytes: int) -> list[bytes]:
        """Encoded blocks of a feed from `from_height` up, at most `limit` and about `max_bytes`
        (always at least one block when there is one)."""
        out: list[bytes] = []
        total = 0
        rows = self.db.execute(
            "SELECT raw FROM blocks WHERE author=? AND height>=? ORDER BY height LIMIT ?",
            (author, from_height, limit))
        for (raw,) in rows:
            if out and total + len(raw) > max_bytes:
                break
            out.append(bytes(raw))
            total += len(raw)
        return out

    def iter_blocks(self, author: bytes) -> Iterator[bytes]:
        rows = self.db.execute("SELECT raw FROM blocks WHERE author=? ORDER BY height", (author,))
        for (raw,) in rows:
            yield bytes(raw)

    def put_blocks(self, blocks: Sequence[Block]) -> None:
        """Store validated blocks (each extends the head, in order) in one durable commit."""
        if not blocks:
            return
        db = self.db
        # Blobs bound as bytearray, not bytes: CPython's sqlite3 (3.11) tries to adapt every
        # bytes parameter (an adapter lookup, then an `__adapt__` lookup on its protocol type
        # that raises and clears an AttributeError with a formatted message), a bytearray it
        # binds as it is: 0.27 us a parameter, five a block. Both are stored as one BLOB.
        blob = bytearray
        with self._write():
            db.executemany("INSERT INTO blocks(author, height, hash, ts, raw) VALUES (?,?,?,?,?)",
                           [(blob(b.author), b.height, blob(b.hash), b.timestamp_ms, blob(b.raw))
                            for b in blocks])
            db.executemany("INSERT INTO txidx(type, ts, author, height, idxs) VALUES (?,?,?,?,?)",
                           [(t, ts, blob(a), h, blob(i)) for t, ts, a, h, i in index_rows(blocks)])
            last: dict[bytes, Block] = {}
            for b in blocks:
                last[b.author] = b
            db.executemany(
                "INSERT INTO feeds(author, height, hash, ts) VALUES (?,?,?,?) "
                "ON CONFLICT(author) DO UPDATE SET height=excluded.height, hash=excluded.hash, "
                "ts=excluded.ts",
                [(b.author, b.height, b.hash, b.timestamp_ms) for b in last.values()])

    def record_equivocation(self, author: bytes, height: int, raw_a: bytes, raw_b: bytes,
                            now_ms: int) -> None:
        """Keep both blocks as proof and flag the author's feed."""
        db = self.db
        with self._write():
            db.execute("INSERT OR IGNORE INTO equivocations VALUES (?,?,?,?,?)",
                       (author, height, raw_a, raw_b, now_ms))
            db.execute("UPDATE feeds SET flagged=? WHERE author=?",
                       (f"equivocation at height {height}", author))

    def equivocation_raws(self, limit: int) -> list[tuple[bytes, bytes]]:
        """Up to `limit` proofs (both blocks), oldest first: what a sync passes on."""
        rows = self.db.execute("SELECT raw_a, raw_b FROM equivocations ORDER BY found_ms "
                               "LIMIT ?", (limit,))
        return [(bytes(a), bytes(b)) for a, b in rows]

    def equivocations(self) -> list[Equivocation]:
        rows = self.db.execute("SELECT author, height, raw_a, raw_b, found_ms FROM equivocations "
                               "ORDER BY author, height")
        return [Equivocation(a, h, bytes(x), bytes(y), t) for a, h, x, y, t in rows]

    # ---------------------------------------------------------------- transactions

    def tx_rows(self, *, type: str | None = None, author: bytes | None = None,
                since_ms: int | None = None, until_ms: int | None = None,
                limit: int | None = None) -> list[TxRow]:
        """Transactions in the defined replay order: (block time, author, height, index)."""
        where: list[str] = []
        args: list[object] = []
        for clause, value in (("type=?", type), ("author=?", author), ("ts>=?", since_ms),
                              ("ts<?", until_ms)):
            if value is not None:
                where.append(clause)
                args.append(value)
        sql = "SELECT author, height, ts, type, idxs FROM txidx"
        if where:
            sql += " WHERE " + " AND ".join(where)
        # One row per block and type: rows of one block are adjacent, merged by index below.
        sql += " ORDER BY ts, author, height"
        out: list[TxRow] = []
        block: list[TxRow] = []
        for a, h, ts, t, idxs in self.db.execute(sql, args):
            if block and (block[0].height != h or block[0].author != a or block[0].ts != ts):
                block.sort(key=_by_idx)
                out += block
                block = []
                if limit is not None and len(out) >= limit:
                    break
            block += [TxRow(a, h, i, t, ts) for i in unpack_idxs(idxs)]
        else:
            block.sort(key=_by_idx)
            out += block
        return out if limit is None else out[:limit]

    def tx_count(self) -> int:
        """Transactions indexed (every stored block's)."""
        row = self.db.execute("SELECT coalesce(sum(length(idxs)), 0) / 2 FROM txidx").fetchone()
        return int(row[0])

    # ---------------------------------------------------------------- checkpoints, retention

    def put_checkpoint(self, backhaul: bytes, seq: int, time_ms: int, root: bytes, raw: bytes,
                       covered: Sequence[FeedHead]) -> None:
        """Keep a verified checkpoint and raise the checkpointed height of the feeds it proved."""
        db = self.db
        with self._write():
            db.execute("INSERT OR IGNORE INTO checkpoints VALUES (?,?,?,?,?)",
                       (backhaul, seq, time_ms, root, raw))
            db.executemany(
                "INSERT INTO checkpointed(author, height, hash) VALUES (?,?,?) "
                "ON CONFLICT(author) DO UPDATE SET height=excluded.height, hash=excluded.hash "
                "WHERE excluded.height > checkpointed.height",
                [(h.author, h.height, h.hash) for h in covered])

    def checkpointed_height(self, author: bytes) -> int:
        """Highest height of `author`'s feed a verified checkpoint covers (-1: none)."""
        row = self.db.execute("SELECT height FROM checkpointed WHERE author=?",
                              (author,)).fetchone()
        return -1 if row is None else int(row[0])

    def latest_checkpoint(self) -> bytes | None:
        row = self.db.execute("SELECT raw FROM checkpoints ORDER BY time_ms DESC, seq DESC "
                              "LIMIT 1").fetchone()
        return None if row is None else bytes(row[0])

    def blocks_bytes(self) -> int:
        row = self.db.execute("SELECT coalesce(sum(length(raw)), 0) FROM blocks").fetchone()
        return int(row[0])

    def prune(self, quota_bytes: int, keep_author: bytes) -> int:
        """Delete others' oldest checkpointed blocks until the blocks fit in `quota_bytes`.

        Never touches `keep_author`'s feed, never a block above its feed's checkpointed height,
        and keeps each feed's highest checkpointed block as the base it resumes from.
        Returns the number of blocks deleted.
        """
        over = self.blocks_bytes() - quota_bytes
        if over <= 0:
            return 0
        candidates = self.db.execute(
            "SELECT b.author, b.height, length(b.raw) FROM blocks b "
            "JOIN checkpointed c ON c.author=b.author "
            "WHERE b.author != ? AND b.height < c.height ORDER BY b.ts, b.author, b.height",
            (keep_author,)).fetchall()
        doomed: list[tuple[bytes, int]] = []
        for author, height, size in candidates:
            if over <= 0:
                break
            doomed.append((author, height))
            over -= size
        if not doomed:
            return 0
        bases: dict[bytes, int] = {}
        for author, height in doomed:
            bases[author] = max(bases.get(author, 0), height + 1)
        db = self.db
        with self._write():
            db.executemany("DELETE FROM blocks WHERE author=? AND height=?", doomed)
            db.execute("CREATE TEMP TABLE IF NOT EXISTS doomed(author BLOB NOT NULL, "
                       "height INTEGER NOT NULL, PRIMARY KEY(author, height)) WITHOUT ROWID")
            db.execute("DELETE FROM temp.doomed")
            db.executemany("INSERT INTO temp.doomed VALUES (?,?)", doomed)
            # txidx is keyed by type first: one scan finds a pruned block's rows of every type
            db.execute("DELETE FROM txidx WHERE (author, height) IN "
                       "(SELECT author, height FROM temp.doomed)")
            db.execute("DELETE FROM temp.doomed")
            db.executemany("UPDATE feeds SET base_height=max(base_height, ?) WHERE author=?",
                           [(h, a) for a, h in bases.items()])
        return len(doomed)

    # ---------------------------------------------------------------- peers, enrolment

    def mark_synced(self, peer: str, now_ms: int) -> None:
        self.db.execute("INSERT INTO peers(peer, last_sync_ms) VALUES (?,?) ON CONFLICT(peer) "
                        "DO UPDATE SET last_sync_ms=excluded.last_sync_ms", (peer, now_ms))

    def mark_cut(self, peer: str, reason: str, now_ms: int) -> None:
        self.db.execute("INSERT INTO peers(peer, cut_reason, cut_ms) VALUES (?,?,?) "
                        "ON CONFLICT(peer) DO UPDATE SET cut_reason=excluded.cut_reason, "
                        "cut_ms=excluded.cut_ms", (peer, reason[:500], now_ms))

    def peers(self) -> list[tuple[str, int | None, str | None, int | None]]:
        return list(self.db.execute(
            "SELECT peer, last_sync_ms, cut_reason, cut_ms FROM peers ORDER BY peer"))

    def last_sync_ms(self) -> int | None:
        row = self.db.execute("SELECT max(last_sync_ms) FROM peers").fetchone()
        return None if row is None or row[0] is None else int(row[0])

    def enrol(self, key: bytes, name: str, now_ms: int) -> None:
        self.db.execute("INSERT OR REPLACE INTO enrolled VALUES (?,?,?)", (key, name, now_ms))

    def is_enrolled(self, key: bytes) -> bool:
        return self.db.execute("SELECT 1 FROM enrolled WHERE key=?", (key,)).fetchone() is not None


_TXIDX_DDL = SCHEMA[SCHEMA.index("CREATE TABLE txidx("):SCHEMA.index("CREATE TABLE equivocations(")]


def pack_idxs(idxs: Sequence[int]) -> bytes:
    """Transaction indices of one block (< 65536, see `ledger.block.MAX_BLOCK_TXS`) as bytes."""
    return struct.pack(f">{len(idxs)}H", *idxs)


@lru_cache(maxsize=256)
def _all_idxs(count: int) -> bytes:
    return pack_idxs(range(count))


def unpack_idxs(data: bytes) -> tuple[int, ...]:
    return struct.unpack(f">{len(data) // 2}H", data)


def _by_idx(row: TxRow) -> int:
    return row.idx


def index_rows(blocks: Sequence[Block]) -> list[tuple[str, int, bytes, int, bytes]]:
    """The transaction index rows of `blocks`: one per block and transaction type."""
    rows: list[tuple[str, int, bytes, int, bytes]] = []
    for b in blocks:
        types = b.tx_types
        if not types:
            continue
        first = types[0]
        if types.count(first) == len(types):  # the usual block: one type
            rows.append((first, b.timestamp_ms, b.author, b.height, _all_idxs(len(types))))
            continue
        by_type: dict[str, list[int]] = {}
        for i, name in enumerate(types):
            by_type.setdefault(name, []).append(i)
        rows += [(t, b.timestamp_ms, b.author, b.height, pack_idxs(idxs))
                 for t, idxs in by_type.items()]
    return rows


def _refuse_foreign_file(path: Path) -> None:
    """Refuse, before SQLite touches it, a non-empty file that is not an SQLite database."""
    try:
        with path.open("rb") as fh:
            header = fh.read(len(SQLITE_MAGIC))
    except FileNotFoundError:
        return
    except OSError as exc:
        raise StorageError(f"cannot read {path}: {exc.strerror}") from exc
    if header and header != SQLITE_MAGIC:
        raise StorageError(f"{path} is not an SQLite database (refusing to touch it)")
