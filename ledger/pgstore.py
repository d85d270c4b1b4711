"""PostgreSQL storage for the backhaul (psycopg 3), so several backhaul instances can share one
database. Same methods as `SqliteStore` where the backhaul needs them.

Concurrency between instances: block rows are keyed by (author, height) and inserted with
ON CONFLICT DO NOTHING, and a feed head only moves up (`WHERE feeds.height < excluded.height`),
so two instances that receive the same block store it once. Commits are durable
(PostgreSQL's default synchronous_commit=on).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import psycopg

from ledger.block import Block
from ledger.errors import StorageError
from ledger.store import index_rows, pack_idxs
from ledger.validate import FeedHead

SCHEMA = """
CREATE TABLE IF NOT EXISTS ledger_meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS ledger_feeds(
    author BYTEA PRIMARY KEY, height BIGINT NOT NULL, hash BYTEA NOT NULL, ts BIGINT NOT NULL,
    base_height BIGINT NOT NULL DEFAULT 0, flagged TEXT);
CREATE TABLE IF NOT EXISTS ledger_blocks(
    author BYTEA NOT NULL, height BIGINT NOT NULL, hash BYTEA NOT NULL, ts BIGINT NOT NULL,
    raw BYTEA NOT NULL, PRIMARY KEY(author, height));
CREATE TABLE IF NOT EXISTS ledger_txidx(
    type TEXT NOT NULL, ts BIGINT NOT NULL, author BYTEA NOT NULL, height BIGINT NOT NULL,
    idxs BYTEA NOT NULL, PRIMARY KEY(type, ts, author, height));
CREATE TABLE IF NOT EXISTS ledger_equivocations(
    author BYTEA NOT NULL, height BIGINT NOT NULL, raw_a BYTEA NOT NULL, raw_b BYTEA NOT NULL,
    found_ms BIGINT NOT NULL, PRIMARY KEY(author, height));
CREATE TABLE IF NOT EXISTS ledger_peers(
    peer TEXT PRIMARY KEY, last_sync_ms BIGINT, cut_reason TEXT, cut_ms BIGINT);
CREATE TABLE IF NOT EXISTS ledger_enrolled(
    key BYTEA PRIMARY KEY, name TEXT NOT NULL, added_ms BIGINT NOT NULL);
INSERT INTO ledger_meta VALUES ('schema', '2') ON CONFLICT DO NOTHING;
"""


class PostgresStore:
    """One connection to PostgreSQL; use it from one thread (the backhaul's store thread)."""

    def __init__(self, dsn: str) -> None:
        try:
            self.db = psycopg.connect(dsn, autocommit=True, connect_timeout=5)
        except psycopg.Error as exc:
            raise StorageError(f"cannot connect to PostgreSQL: {exc}") from exc
        try:
            with self.db.transaction():
                self.db.execute("SELECT pg_advisory_xact_lock(4242424242)")
                self.db.execute(SCHEMA)
                row = self.db.execute("SELECT value FROM ledger_meta WHERE key='schema'"
                                      ).fetchone()
                if row is not None and row[0] == "1":
                    self._migrate_v1()
                    row = ("2",)
        except psycopg.Error as exc:
            self.db.close()
            raise StorageError(f"cannot prepare the ledger schema: {exc}") from exc
        if row is None or row[0] != "2":
            self.db.close()
            raise StorageError(f"PostgreSQL ledger schema {row} is not the one this build reads")

    def _migrate_v1(self) -> None:
        """Schema 1 -> 2 (inside the caller's locked transaction): one transaction index row
        per block and type instead of one per transaction, as in `ledger.store`. Every
        instance sharing the database must run this build afterwards (an older one refuses
        schema 2 at start)."""
        rows = self.db.execute("SELECT type, ts, author, height, array_agg(idx ORDER BY idx) "
                               "FROM ledger_txs GROUP BY type, ts, author, height").fetchall()
        with self.db.cursor() as cur:
            cur.executemany("INSERT INTO ledger_txidx(type, ts, author, height, idxs) "
                            "VALUES (%s,%s,%s,%s,%s) ON CONFLICT DO NOTHING",
                            [(t, ts, a, h, pack_idxs(idxs)) for t, ts, a, h, idxs in rows])
        self.db.execute("DROP TABLE ledger_txs")
        self.db.execute("UPDATE ledger_meta SET value='2' WHERE key='schema'")

    def close(self) -> None:
        self.db.close()

    @contextmanager
    def group(self) -> Iterator[None]:
        """Group commit: the writes inside share one transaction (each write's own block
        becomes a savepoint) and are durable when the block ends; see `SqliteStore.group`."""
        with self.db.transaction():
            yield

    def drop_all(self) -> None:
        """Delete every ledger table (tests and benchmarks start from scratch)."""
        for table in ("meta", "feeds", "blocks", "txs", "txidx", "equivocations", "peers",
                      "enrolled"):
            self.db.execute(f"DROP TABLE IF EXISTS ledger_{table}")

    def head(self, author: bytes) -> FeedHead | None:
        row = self.db.execute("SELECT height, hash, ts FROM ledger_feeds WHERE author=%s",
                              (author,)).fetchone()
        return None if row is None else FeedHead(author, row[0], bytes(row[1]), row[2])

    def heads(self) -> list[FeedHead]:
        rows = self.db.execute("SELECT author, height, hash, ts FROM ledger_feeds "
                               "ORDER BY author").fetchall()
        return [FeedHead(bytes(a), h, bytes(x), t) for a, h, x, t in rows]

    def flag_of(self, author: bytes) -> str | None:
        row = self.db.execute("SELECT min(height) FROM ledger_equivocations WHERE author=%s",
                              (author,)).fetchone()
        return None if row is None or row[0] is None else f"equivocation at height {row[0]}"

    def flagged(self) -> dict[bytes, str]:
        rows = self.db.execute("SELECT author, min(height) FROM ledger_equivocations "
                               "GROUP BY author").fetchall()
        return {bytes(a): f"equivocation at height {h}" for a, h in rows}

    def equivocation_raws(self, limit: int) -> list[tuple[bytes, bytes]]:
        rows = self.db.execute("SELECT raw_a, raw_b FROM ledger_equivocations "
                               "ORDER BY found_ms LIMIT %s", (limit,)).fetchall()
        return [(bytes(a), bytes(b)) for a, b in rows]

    def base_height(self, author: bytes) -> int:
        row = self.db.execute("SELECT base_height FROM ledger_feeds WHERE author=%s",
                              (author,)).fetchone()
        return 0 if row is None else int(row[0])

    def block_raw(self, author: bytes, height: int) -> bytes | None:
        row = self.db.execute("SELECT raw FROM ledger_blocks WHERE author=%s AND height=%s",
                              (author, height)).fetchone()
        return None if row is None else bytes(row[0])

    def blocks_from(self, author: bytes, from_height: int, limit: int,
                    max_bytes: int) -> list[bytes]:
        rows = self.db.execute(
            "SELECT raw FROM ledger_blocks WHERE author=%s AND height>=%s ORDER BY height "
            "LIMIT %s", (author, from_height, limit)).fetchall()
        out: list[bytes] = []
        total = 0
        for (raw,) in rows:
            if out and total + len(raw) > max_bytes:
                break
            out.append(bytes(raw))
            total += len(raw)
        return out

    def put_blocks(self, blocks: Sequence[Block]) -> None:
        if not blocks:
            return
        last: dict[bytes, Block] = {}
        for b in blocks:
            last[b.author] = b
        # One statement per table, the rows as arrays (unnest) in binary (%b): executemany
        # sends a query per row, and psycopg's per-row work was most of the store thread's
        # time; text arrays would write every block out in hex.
        idx = index_rows(blocks)
        heads = list(last.values())
        with self.db.transaction(), self.db.cursor() as cur:
            cur.execute(
                "INSERT INTO ledger_blocks(author, height, hash, ts, raw) SELECT * FROM "
                "unnest(%b::bytea[], %b::bigint[], %b::bytea[], %b::bigint[], %b::bytea[]) "
                "ON CONFLICT DO NOTHING",
                ([b.author for b in blocks], [b.height for b in blocks],
                 [b.hash for b in blocks], [b.timestamp_ms for b in blocks],
                 [b.raw for b in blocks]))
            cur.execute(
                "INSERT INTO ledger_txidx(type, ts, author, height, idxs) SELECT * FROM "
                "unnest(%b::text[], %b::bigint[], %b::bytea[], %b::bigint[], %b::bytea[]) "
                "ON CONFLICT DO NOTHING",
                tuple(list(column) for column in zip(*idx, strict=True)) if idx
                else ([], [], [], [], []))
            cur.execute(
                "INSERT INTO ledger_feeds(author, height, hash, ts) SELECT * FROM "
                "unnest(%b::bytea[], %b::bigint[], %b::bytea[], %b::bigint[]) "
                "ON CONFLICT(author) DO UPDATE SET height=excluded.height, hash=excluded.hash, "
                "ts=excluded.ts WHERE ledger_feeds.height < excluded.height",
                ([b.author for b in heads], [b.height for b in heads],
                 [b.hash for b in heads], [b.timestamp_ms for b in heads]))

    def record_equivocation(self, author: bytes, height: int, raw_a: bytes, raw_b: bytes,
                            now_ms: int) -> None:
        with self.db.transaction():
            self.db.execute("INSERT INTO ledger_equivocations VALUES (%s,%s,%s,%s,%s) "
                            "ON CONFLICT DO NOTHING", (author, height, raw_a, raw_b, now_ms))
            self.db.execute("UPDATE ledger_feeds SET flagged=%s WHERE author=%s",
                            (f"equivocation at height {height}", author))

    def mark_synced(self, peer: str, now_ms: int) -> None:
        self.db.execute("INSERT INTO ledger_peers(peer, last_sync_ms) VALUES (%s,%s) "
                        "ON CONFLICT(peer) DO UPDATE SET last_sync_ms=excluded.last_sync_ms",
                        (peer, now_ms))

    def mark_cut(self, peer: str, reason: str, now_ms: int) -> None:
        self.db.execute("INSERT INTO ledger_peers(peer, cut_reason, cut_ms) VALUES (%s,%s,%s) "
                        "ON CONFLICT(peer) DO UPDATE SET cut_reason=excluded.cut_reason, "
                        "cut_ms=excluded.cut_ms", (peer, reason[:500], now_ms))

    def peers(self) -> list[tuple[str, int | None, str | None, int | None]]:
        rows = self.db.execute("SELECT peer, last_sync_ms, cut_reason, cut_ms FROM ledger_peers "
                               "ORDER BY peer").fetchall()
        return [(a, b, c, d) for a, b, c, d in rows]

    def enrol(self, key: bytes, name: str, now_ms: int) -> None:
        self.db.execute("INSERT INTO ledger_enrolled VALUES (%s,%s,%s) ON CONFLICT(key) "
                        "DO UPDATE SET name=excluded.name", (key, name, now_ms))

    def is_enrolled(self, key: bytes) -> bool:
        row = self.db.execute("SELECT 1 FROM ledger_enrolled WHERE key=%s", (key,)).fetchone()
        return row is not None
