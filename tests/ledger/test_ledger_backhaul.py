"""Agents syncing with a real `manet-backhaul serve` process over loopback TCP (and TLS):
enrolment, refusal, checkpoints, SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import ssl
import subprocess
import sys
from pathlib import Path

import pytest

from ledger import Ledger, LedgerConfig, Transaction
from ledger.backhaul.client import sync_with_backhaul
from ledger.errors import AuthError, SyncError
from mesh.identity import Identity

PG_DSN = "postgresql://postgres@127.0.0.1:5432/test"


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ledger.backhaul.cli", *args],
                          capture_output=True, text=True, timeout=60, check=False)


class Backhaul:
    """A `manet-backhaul serve` child process listening on a free loopback port."""

    def __init__(self, db: str, key: Path, *extra: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ledger.backhaul.cli", "serve", "--listen", "127.0.0.1:0",
             "--db", db, "--key", str(key), "--checkpoint-interval", "0", *extra],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"backhaul did not start: {self.proc.stderr.read()}")  # type: ignore[union-attr]
        info = json.loads(line)
        self.port = int(info["port"])
        self.key = bytes.fromhex(info["key"])

    def stop(self) -> dict[str, int]:
        self.proc.terminate()
        out, _ = self.proc.communicate(timeout=30)
        return dict(json.loads(out.strip().splitlines()[-1]))


def agent(tmp_path: Path, name: str, seed: int, blocks: int) -> Ledger:
    led = Ledger.open(tmp_path / f"{name}.sqlite", Identity.from_seed(bytes([seed]) * 32))
    for i in range(blocks):
        led.append(Transaction("mesh.manet_left", {"t": float(i)}))
        led.flush()
    return led


def enrol(tmp_path: Path, db: str, led: Ledger) -> None:
    keyfile = tmp_path / f"{led.author.hex()[:8]}.pub"
    keyfile.write_text(led.author.hex())
    result = cli("enrol", str(keyfile), "--db", db)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["key"] == led.author.hex()


def exercise(tmp_path: Path, db: str, ssl_pair: tuple[ssl.SSLContext, list[str]] | None = None
             ) -> None:
    """Two agents sync through the backhaul; a third, unenrolled, is refused."""
    a, b, stranger = (agent(tmp_path, "a", 1, 40), agent(tmp_path, "b", 2, 25),
                      agent(tmp_path, "c", 3, 1))
    enrol(tmp_path, db, a)
    enrol(tmp_path, db, b)
    b.config = LedgerConfig(quota_bytes=1)
    context, extra = ssl_pair if ssl_pair is not None else (None, [])
    server = Backhaul(db, tmp_path / "backhaul.key", *extra)
    try:
        async def scenario() -> None:
            first = await sync_with_backhaul(a, "127.0.0.1", server.port, backhaul_key=server.key,
                                             ssl_context=context)
            assert first.state == "complete" and first.stats.blocks_out == 40
            assert first.checkpoint is not None and first.finalized == 1
            assert a.store.checkpointed_height(a.author) == 39
            second = await sync_with_backhaul(b, "127.0.0.1", server.port,
                                              backhaul_key=server.key, ssl_context=context,
                                              proofs_for=[b.author, a.author])
            assert second.stats.blocks_out == 25 and second.stats.blocks_in == 40
            assert b.store.checkpointed_height(a.author) == 39
            # b's quota is tiny: a's checkpointed blocks go, a's head block and b's own stay.
            assert b.store.base_height(a.author) == 39 and b.block(a.author, 38) is None
            assert len(list(b.store.iter_blocks(b.author))) == 25
            third = await sync_with_backhaul(a, "127.0.0.1", server.port,
                                             backhaul_key=server.key, ssl_context=context)
            assert third.stats.blocks_in == 25 and third.stats.blocks_out == 0
            with pytest.raises(AuthError, match="not enrolled"):
                await sync_with_backhaul(stranger, "127.0.0.1", server.port, ssl_context=context)
            with pytest.raises(AuthError, match="pinned"):
                await sync_with_backhaul(a, "127.0.0.1", server.port, backhaul_key=b"\x00" * 32,
                                         ssl_context=context)

        asyncio.run(scenario())
        assert [h.height for h in a.heads()] == [h.height for h in b.heads()]
        assert a.verify().ok and b.verify().ok
        assert stranger.store.heads()[0].author == stranger.author and len(stranger.heads()) == 1
    finally:
        stats = server.stop()
        for led in (a, b, stranger):
            led.close()
    assert stats["refused"] == 1 and stats["complete"] == 3


def test_backhaul_process_with_sqlite(tmp_path: Path) -> None:
    exercise(tmp_path, f"sqlite:{tmp_path / 'backhaul.sqlite'}")


@pytest.fixture
def tls(tls_files: tuple[Path, Path]) -> tuple[ssl.SSLContext, list[str]]:
    """A client context trusting the shared self-signed certificate, and the server's flags."""
    cert_path, key_path = tls_files
    context = ssl.create_default_context(cafile=str(cert_path))
    context.check_hostname = False
    return context, ["--tls-cert", str(cert_path), "--tls-key", str(key_path)]


def test_backhaul_over_tls(tmp_path: Path, tls: tuple[ssl.SSLContext, list[str]]) -> None:
    exercise(tmp_path, f"sqlite:{tmp_path / 'backhaul.sqlite'}", tls)


def _postgres_or_skip() -> None:
    try:
        import psycopg

        psycopg.connect(PG_DSN, connect_timeout=2).close()
    except Exception as exc:  # any failure to connect means: no server to test against
        pytest.skip(f"no PostgreSQL server answers at {PG_DSN}: {exc}")


def _fresh_postgres() -> None:
    """Skip without a server; else start from an empty ledger schema."""
    _postgres_or_skip()
    from ledger.pgstore import PostgresStore

    store = PostgresStore(PG_DSN)
    store.drop_all()
    store.close()


@pytest.mark.postgres
def test_backhaul_process_with_postgresql(tmp_path: Path) -> None:
    _fresh_postgres()
    exercise(tmp_path, PG_DSN)


def test_enrol_refuses_a_bad_key_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pub"
    bad.write_text("nonsense")
    result = cli("enrol", str(bad), "--db", f"sqlite:{tmp_path / 'b.sqlite'}")
    assert result.returncode == 2 and "manet-backhaul:" in result.stderr


@pytest.mark.postgres
def test_two_backhaul_instances_share_one_postgresql(tmp_path: Path) -> None:
    _fresh_postgres()
    a, b = agent(tmp_path, "a", 1, 30), agent(tmp_path, "b", 2, 20)
    enrol(tmp_path, PG_DSN, a)
    enrol(tmp_path, PG_DSN, b)
    one = Backhaul(PG_DSN, tmp_path / "backhaul.key")
    two = Backhaul(PG_DSN, tmp_path / "backhaul.key")  # same key: one logical backhaul
    try:
        async def scenario() -> None:
            both = await asyncio.gather(
                sync_with_backhaul(a, "127.0.0.1", one.port, backhaul_key=one.key),
                sync_with_backhaul(b, "127.0.0.1", two.port, backhaul_key=two.key))
            assert [r.stats.blocks_out for r in both] == [30, 20]
            again = await sync_with_backhaul(b, "127.0.0.1", two.port, backhaul_key=two.key)
            assert again.stats.blocks_in == 30  # a's blocks, stored through the other instance
        asyncio.run(scenario())
        assert b.store.head(a.author) is not None and b.verify().ok
    finally:
        one.stop()
        two.stop()
        a.close()
        b.close()


def test_a_backhaul_that_hangs_up_mid_frame_is_a_typed_error(tmp_path: Path) -> None:
    """A backhaul that closes after half a frame gives SyncError, which callers already handle."""
    led = agent(tmp_path, "a", 1, 2)

    async def half_a_frame(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"\x00\x00")  # the start of a frame header, then nothing
        await writer.drain()
        writer.close()

    async def scenario() -> None:
        server = await asyncio.start_server(half_a_frame, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server:
            with pytest.raises(SyncError, match="hung up"):
                await sync_with_backhaul(led, "127.0.0.1", port, timeout=5)

    try:
        asyncio.run(scenario())
        assert led.verify().ok and len(list(led.store.iter_blocks(led.author))) == 2
    finally:
        led.close()


def test_concurrent_agents_share_group_commits(tmp_path: Path) -> None:
    """Messages of agents syncing at once are stored in shared transactions (fewer commits
    than messages), each answered only after its group is durable: every block is there
    after the database is reopened."""
    from ledger.backhaul.server import BackhaulServer, ServerConfig
    from ledger.store import SqliteStore
    from ledger.tx import default_registry

    db = tmp_path / "bh.sqlite"
    store = SqliteStore(db)
    agents = [agent(tmp_path, f"g{k}", 40 + k, 3 + k % 4) for k in range(24)]
    for led in agents:
        store.enrol(led.author, "test", 0)
    server = BackhaulServer(store, Identity.from_seed(b"\x33" * 32), default_registry(),
                            config=ServerConfig(checkpoint_interval_s=60))

    async def scenario() -> list[int]:
        port = await server.start("127.0.0.1", 0)
        try:
            results = await asyncio.gather(*(
                sync_with_backhaul(led, "127.0.0.1", port,
                                   backhaul_key=server.identity.public_key)
                for led in agents))
        finally:
            await server.close()
        return [r.stats.blocks_out for r in results]

    try:
        sent = asyncio.run(scenario())
        assert sent == [3 + k % 4 for k in range(24)]
        assert server.stats["complete"] == 24
        assert server.stats["commits"] < server.stats["sessions"] * 2  # two messages each
    finally:
        store.close()
        for led in agents:
            led.close()
    again = SqliteStore(db)
    try:
        assert {h.author: h.height for h in again.heads()} == {
            led.author: 2 + k % 4 for k, led in enumerate(agents)}
    finally:
        again.close()


@pytest.mark.postgres
def test_a_schema_1_postgresql_database_is_migrated(tmp_path: Path) -> None:
    """Per-transaction index rows (schema 1) become one row per block and type (schema 2)."""
    _fresh_postgres()
    import psycopg

    from ledger.pgstore import PostgresStore
    from ledger.store import unpack_idxs

    led = agent(tmp_path, "a", 1, 2)
    blocks = list(led.blocks(led.author))
    led.close()
    with psycopg.connect(PG_DSN, autocommit=True) as db:  # what schema 1 wrote
        db.execute(
            "CREATE TABLE ledger_meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);"
            "INSERT INTO ledger_meta VALUES ('schema', '1');"
            "CREATE TABLE ledger_txs(author BYTEA NOT NULL, height BIGINT NOT NULL,"
            " idx INT NOT NULL, type TEXT NOT NULL, ts BIGINT NOT NULL,"
            " PRIMARY KEY(author, height, idx));")
        with db.cursor() as cur:
            cur.executemany("INSERT INTO ledger_txs VALUES (%s,%s,%s,%s,%s)",
                            [(b.author, b.height, i, tx.type, b.timestamp_ms)
                             for b in blocks for i, tx in enumerate(b.txs)])
    store = PostgresStore(PG_DSN)
    try:
        rows = store.db.execute("SELECT type, height, idxs FROM ledger_txidx ORDER BY height"
                                ).fetchall()
        assert [(t, h, unpack_idxs(bytes(x))) for t, h, x in rows] == [
            ("mesh.manet_left", 0, (0,)), ("mesh.manet_left", 1, (0,))]
        gone = store.db.execute("SELECT to_regclass('ledger_txs')").fetchone()
        assert gone is not None and gone[0] is None
        schema = store.db.execute("SELECT value FROM ledger_meta WHERE key='schema'").fetchone()
        assert schema is not None and schema[0] == "2"
    finally:
        store.drop_all()
        store.close()
