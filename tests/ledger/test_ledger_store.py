"""The SQLite store and the Ledger facade: batching, durability, queries, bad files, retention,
equivocation."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from ledger import Ledger, Transaction
from ledger.block import Block
from ledger.checkpoint import MerkleTree
from ledger.errors import BlockError, StorageError, TxError
from ledger.ingest import ingest
from ledger.local import sync_pair
from ledger.sigpool import SignaturePool, Signed, Ticket
from ledger.store import PAGE_SIZE
from mesh import events as ev
from mesh.identity import Identity, verify

NOW = 1_750_000_000.0
MakeLedger = Callable[..., Ledger]


def left(t: float) -> Transaction:
    return Transaction("mesh.manet_left", {"t": t})


def test_batches_by_size_and_by_time(make_ledger: MakeLedger) -> None:
    led = make_ledger("a", 1, max_block_txs=3, max_block_delay_s=2.0)
    assert led.append(left(0), NOW) is None
    assert led.append(left(1), NOW) is None
    block = led.append(left(2), NOW)
    assert block is not None and block.height == 0 and len(block.txs) == 3
    led.append(left(3), NOW + 1)
    assert led.get_timer() == NOW + 3
    assert led.handle_timer(NOW + 2.9) is None
    block = led.handle_timer(NOW + 3)
    assert block is not None and block.height == 1 and led.get_timer() is None
    assert led.height() == 1 and led.pending == 0


def test_flushed_blocks_survive_reopen_and_verify(make_ledger: MakeLedger, tmp_path: Path) -> None:
    led = make_ledger("a", 1)
    for i in range(5):
        led.record_event(ev.ManetLeft(float(i)), NOW + i)
        led.flush(NOW + i)
    led.record_event(ev.DataReceived(b"x" * 8, b"", 1, 9.0), NOW)  # not history: ignored
    assert led.pending == 0
    led.close()
    again = Ledger.open(tmp_path / "a.sqlite", Identity.from_seed(b"\x01" * 32))
    try:
        assert again.store.db.execute("PRAGMA page_size").fetchone()[0] == PAGE_SIZE
        assert again.height() == 4
        report = again.verify(NOW + 10)
        assert report.ok and report.blocks == 5
        assert [r.tx.body["t"] for r in again.query(type="mesh.manet_left")] == [0, 1, 2, 3, 4]
        assert len(again.query(since_ms=int((NOW + 3) * 1000))) == 2
    finally:
        again.close()


def test_invalid_transaction_is_refused_and_nothing_lost(make_ledger: MakeLedger) -> None:
    led = make_ledger("a", 1)
    led.append(left(1), NOW)
    with pytest.raises(TxError):
        led.append(Transaction("mesh.manet_left", {"t": "soon"}), NOW)
    assert led.pending == 1 and led.flush(NOW) is not None


def test_foreign_and_corrupt_files_give_storage_error(tmp_path: Path) -> None:
    me = Identity.from_seed(b"\x01" * 32)
    text = tmp_path / "notes.txt"
    text.write_text("not a database at all, and it must stay as it is")
    with pytest.raises(StorageError, match="not an SQLite database"):
        Ledger.open(text, me)
    assert text.read_text().startswith("not a database")
    other = tmp_path / "other.sqlite"
    con = sqlite3.connect(other)
    con.execute("CREATE TABLE songs(title TEXT)")
    con.commit()
    con.close()
    with pytest.raises(StorageError, match="another program"):
        Ledger.open(other, me)
    good = tmp_path / "good.sqlite"
    led = Ledger.open(good, me)
    for i in range(200):
        led.append(left(i), NOW)
    led.flush(NOW)
    led.close()
    data = bytearray(good.read_bytes())
    data[100:4096] = b"\xa5" * 3996  # trash the schema page
    good.write_bytes(bytes(data))
    with pytest.raises(StorageError):
        Ledger.open(good, me)


def test_damaged_block_bytes_are_found_by_verify(make_ledger: MakeLedger) -> None:
    led = make_ledger("a", 1)
    for i in range(3):
        led.append(left(i), NOW)
        led.flush(NOW)
    raw = bytearray(led.store.block_raw(led.author, 1) or b"")
    raw[-1] ^= 0x01  # one bit of the signature flips on disk
    led.store.db.execute("UPDATE blocks SET raw=? WHERE height=1", (bytes(raw),))
    report = led.verify(NOW)
    assert not report.ok and report.problems[0][:2] == (led.author, 1)


def test_query_order_is_the_replay_order(make_ledger: MakeLedger) -> None:
    a, b = make_ledger("a", 1), make_ledger("b", 2)
    a.append(left(1), NOW)
    a.flush(NOW)
    b.append(left(2), NOW)
    b.append(left(3), NOW)
    b.flush(NOW)
    a.append(left(4), NOW + 1)
    a.flush(NOW + 1)
    assert sync_pair(a, b, NOW + 2).error is None
    order_a = [(r.author, r.height, r.index) for r in a.query()]
    order_b = [(r.author, r.height, r.index) for r in b.query()]
    assert order_a == order_b and len(order_a) == 4
    assert [r.time_ms for r in a.query()] == sorted(r.time_ms for r in a.query())


def test_equivocation_is_kept_as_proof_and_flags_the_author(make_ledger: MakeLedger) -> None:
    cheat = Identity.from_seed(b"\x09" * 32)
    a = make_ledger("a", 1)
    genesis = Block.create(cheat, 0, bytes(32), int(NOW * 1000), (left(0),))
    one = Block.create(cheat, 1, genesis.hash, int(NOW * 1000), (left(1),))
    other_one = Block.create(cheat, 1, genesis.hash, int(NOW * 1000), (left(99),))
    a.receive_blocks([genesis.raw, one.raw], NOW)
    result = a.receive_blocks([other_one.raw], NOW)
    assert result.equivocations == 1
    [proof] = a.store.equivocations()
    assert {proof.raw_a, proof.raw_b} == {one.raw, other_one.raw}
    assert cheat.public_key in a.store.flagged()
    two = Block.create(cheat, 2, one.hash, int(NOW * 1000), (left(2),))
    assert a.receive_blocks([two.raw], NOW).refused_flagged == 1
    assert a.store.head(cheat.public_key).height == 1  # type: ignore[union-attr]
    honest = Identity.from_seed(b"\x07" * 32)
    a.receive_blocks([Block.create(honest, 0, bytes(32), int(NOW * 1000), ()).raw], NOW)
    forged = Block.create(Identity.from_seed(b"\x08" * 32), 0, bytes(32), int(NOW * 1000), ())
    raw = bytearray(forged.raw)
    raw[4:36] = honest.public_key  # a "second block" that the honest author never signed
    with pytest.raises(BlockError) as info:
        a.receive_blocks([bytes(raw)], NOW)
    assert info.value.reason == "signature"
    assert honest.public_key not in a.store.flagged()


def test_equivocation_found_during_sync(make_ledger: MakeLedger) -> None:
    cheat = Identity.from_seed(b"\x09" * 32)
    a, b = make_ledger("a", 1), make_ledger("b", 2)
    genesis = Block.create(cheat, 0, bytes(32), int(NOW * 1000), (left(0),))
    fork_a = Block.create(cheat, 1, genesis.hash, int(NOW * 1000), (left(1),))
    fork_b = Block.create(cheat, 1, genesis.hash, int(NOW * 1000), (left(2),))
    a.receive_blocks([genesis.raw, fork_a.raw], NOW)
    b.receive_blocks([genesis.raw, fork_b.raw], NOW)
    result = sync_pair(a, b, NOW)
    assert result.error is None
    assert cheat.public_key in a.store.flagged() and cheat.public_key in b.store.flagged()


def test_retention_prunes_only_checkpointed_blocks_of_others(make_ledger: MakeLedger) -> None:
    a, b = make_ledger("a", 1), make_ledger("b", 2)
    for i in range(30):
        b.append(left(i), NOW + i)
        b.flush(NOW + i)
        a.append(left(i), NOW + i)
        a.flush(NOW + i)
    assert sync_pair(a, b, NOW + 40).error is None
    before = a.store.blocks_bytes()
    assert a.prune() == 0  # under quota
    # A checkpoint covers b's feed up to height 19 only.
    b_head = b.store.head(b.author)
    assert b_head is not None
    covered = [h for h in a.heads() if h.author == b.author]
    h19 = b.block(b.author, 19)
    assert h19 is not None
    covered = [type(covered[0])(b.author, 19, h19.hash, h19.timestamp_ms)]
    tree = MerkleTree(covered)
    a.store.put_checkpoint(b"\x00" * 32, 1, int(NOW * 1000), tree.root, b"cp", covered)
    a.config = type(a.config)(quota_bytes=1)
    deleted = a.prune()
    assert deleted == 19  # heights 0..18 of b; 19 stays as the base; 20..29 are unsynced
    assert a.store.blocks_bytes() < before
    assert a.height() == 29 and len(list(a.store.iter_blocks(a.author))) == 30
    assert a.store.base_height(b.author) == 19
    assert len(a.query(author=b.author)) == 11 and a.store.tx_count() == 30 + 11  # index pruned
    assert a.verify(NOW + 50).ok
    # A pruned feed still syncs forward from its base.
    b.append(left(99), NOW + 60)
    b.flush(NOW + 60)
    assert sync_pair(b, a, NOW + 61).error is None
    assert a.store.head(b.author).height == 30  # type: ignore[union-attr]


def test_equivocation_proofs_travel_with_sync(make_ledger: MakeLedger) -> None:
    cheat = Identity.from_seed(b"\x09" * 32)
    a, c = make_ledger("a", 1), make_ledger("c", 3)
    genesis = Block.create(cheat, 0, bytes(32), int(NOW * 1000), (left(0),))
    fork_a = Block.create(cheat, 1, genesis.hash, int(NOW * 1000), (left(1),))
    fork_b = Block.create(cheat, 1, genesis.hash, int(NOW * 1000), (left(2),))
    a.receive_blocks([genesis.raw, fork_a.raw], NOW)
    a.receive_blocks([fork_b.raw], NOW)
    result = sync_pair(c, a, NOW)
    assert result.error is None and result.initiator.stats.equivocations == 1
    assert cheat.public_key in c.store.flagged()
    assert c.store.head(cheat.public_key) is None  # its blocks were refused, the proof kept
    assert sync_pair(c, a, NOW).initiator.stats.equivocations == 0  # known: not counted again


def test_a_forged_proof_cuts_the_peer(make_ledger: MakeLedger) -> None:
    from ledger import codec
    from ledger.errors import SyncError
    from ledger.sync import K_PROOFS, K_VERSION, VERSION, SyncSession

    c = make_ledger("c", 3)
    honest = Identity.from_seed(b"\x07" * 32)
    real = Block.create(honest, 0, bytes(32), int(NOW * 1000), (left(0),))
    fake = bytearray(Block.create(honest, 0, bytes(32), int(NOW * 1000), (left(1),)).raw)
    fake[-1] ^= 1
    session = SyncSession(c.store, c.registry, initiator=False, peer="liar", now=NOW)
    message = codec.encode({K_VERSION: VERSION, K_PROOFS: [[real.raw, bytes(fake)]]})
    with pytest.raises(SyncError) as info:
        session.receive(message, NOW)
    assert info.value.reason == "invalid_proof" and not c.store.flagged()


@pytest.mark.parametrize("processes", [0, 2])
def test_blocks_before_a_bad_signature_are_stored_with_or_without_a_pool(
        make_ledger: MakeLedger, processes: int) -> None:
    """Verification in child processes (in chunks, beside the decoding) stores exactly what
    inline verification stores: every block before the first bad signature, nothing after."""
    author = Identity.from_seed(b"\x05" * 32)
    chain: list[Block] = []
    prev = bytes(32)
    for h in range(150):  # more than two chunks of VERIFY_CHUNK
        chain.append(Block.create(author, h, prev, int(NOW * 1000), (left(h),)))
        prev = chain[-1].hash
    raws = [b.raw for b in chain]
    raws[100] = raws[100][:-1] + bytes([raws[100][-1] ^ 1])  # flip a signature bit
    led = make_ledger("p", 1, verify_processes=processes)
    with pytest.raises(BlockError) as info:
        led.receive_blocks(raws, NOW)
    assert info.value.reason == "signature" and "height 100" in str(info.value)
    assert led.store.head(author.public_key).height == 99  # type: ignore[union-attr]
    result = led.receive_blocks([b.raw for b in chain[100:]], NOW)
    assert len(result.stored) == 50 and led.verify(NOW).ok
    other = make_ledger("q", 2, verify_processes=processes)
    assert sync_pair(other, led, NOW).error is None
    assert other.store.head(author.public_key) == led.store.head(author.public_key)


def route(i: int) -> Transaction:
    return Transaction("mesh.route_added", {"dest": bytes(8), "next_hop": b"n" * 8, "hops": i,
                                            "seq": i, "lifetime_s": 6.0, "t": float(i)})


def test_index_rows_per_type_keep_the_replay_order_and_limits(make_ledger: MakeLedger) -> None:
    led = make_ledger("a", 1)
    for tx in (left(0), route(1), left(2), route(3), left(4)):  # one block, types interleaved
        led.append(tx, NOW)
    led.flush(NOW)
    led.append(route(5), NOW + 1)
    led.flush(NOW + 1)
    assert [(r.height, r.index, r.tx.type[5:]) for r in led.query()] == [
        (0, 0, "manet_left"), (0, 1, "route_added"), (0, 2, "manet_left"),
        (0, 3, "route_added"), (0, 4, "manet_left"), (1, 0, "route_added")]
    assert [(r.height, r.index) for r in led.query(type="mesh.route_added")] == [
        (0, 1), (0, 3), (1, 0)]
    assert [r.index for r in led.query(limit=4)] == [0, 1, 2, 3]
    assert [r.index for r in led.query(type="mesh.manet_left", limit=2)] == [0, 2]
    assert [r.height for r in led.query(since_ms=int((NOW + 1) * 1000))] == [1]
    assert [r.index for r in led.query(author=led.author, until_ms=int((NOW + 1) * 1000))] == [
        0, 1, 2, 3, 4]
    assert led.store.tx_count() == 6


def test_schema_1_files_are_migrated_in_place(tmp_path: Path) -> None:
    """A file written by the previous build (one index row per transaction) opens, is
    converted to one row per block and type, and answers the same queries."""
    me = Identity.from_seed(b"\x01" * 32)
    path = tmp_path / "old.sqlite"
    led = Ledger.open(path, me)
    for i in range(10):
        led.append(left(i) if i % 3 else route(i), NOW + i // 4)
        if i % 4 == 3:
            led.flush(NOW + i // 4)
    led.flush(NOW + 3)
    before = [(r.author, r.height, r.index, r.time_ms, r.tx) for r in led.query()]
    rows = [(r.author, r.height, r.idx, r.type, r.ts) for r in led.store.tx_rows()]
    led.close()
    con = sqlite3.connect(path, isolation_level=None)  # rewrite it as schema 1 wrote it
    con.executescript(
        "BEGIN; DROP TABLE txidx;"
        "CREATE TABLE txs(author BLOB NOT NULL, height INTEGER NOT NULL, idx INTEGER NOT NULL,"
        " type TEXT NOT NULL, ts INTEGER NOT NULL, PRIMARY KEY(author, height, idx)) WITHOUT ROWID;"
        "CREATE INDEX txs_by_type ON txs(type, ts); CREATE INDEX txs_by_time ON txs(ts);"
        "PRAGMA user_version=1; COMMIT;")
    con.executemany("INSERT INTO txs VALUES (?,?,?,?,?)", rows)
    con.close()
    again = Ledger.open(path, me)
    try:
        assert again.store.db.execute("PRAGMA user_version").fetchone()[0] == 2
        assert [(r.author, r.height, r.index, r.time_ms, r.tx) for r in again.query()] == before
        assert len(before) == 10 and again.verify(NOW + 5).ok
        names = {n for (n,) in again.store.db.execute("SELECT name FROM sqlite_master")}
        assert "txs" not in names and "txs_by_type" not in names
    finally:
        again.close()


def test_a_newer_schema_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "new.sqlite"
    Ledger.open(path, Identity.from_seed(b"\x01" * 32)).close()
    con = sqlite3.connect(path)
    con.execute("PRAGMA user_version=3")
    con.close()
    with pytest.raises(StorageError, match="schema 3"):
        Ledger.open(path, Identity.from_seed(b"\x01" * 32))


class _NoChildPool(SignaturePool):
    """A pool whose answers the test makes up: it starts no child."""

    def __init__(self) -> None:
        super().__init__(1)
        self.close()
        self.sent = 0

    def ready(self, ticket: Ticket) -> bool:
        return True

    def abandon(self, ticket: Ticket) -> None:
        pass


class _BusyPool(_NoChildPool):
    """Every child always busy: the ingesting thread checks every chunk itself."""

    def send(self, chunk: Sequence[Signed]) -> Ticket | None:
        return None


class _EagerPool(_NoChildPool):
    """Checks each chunk in this process as it is sent; answers in order."""

    def __init__(self) -> None:
        super().__init__()
        self.answers: dict[Ticket, int] = {}

    def send(self, chunk: Sequence[Signed]) -> Ticket | None:
        self.sent += 1
        bad = next((i for i, s in enumerate(chunk) if not verify(*s)), -1)
        self.answers[0, self.sent] = bad
        return 0, self.sent

    def receive(self, ticket: Ticket) -> int | None:
        return self.answers.pop(ticket)


class _GonePool(_NoChildPool):
    """Takes every chunk, then its child is gone: the ingesting thread checks them after all."""

    def send(self, chunk: Sequence[Signed]) -> Ticket | None:
        return 0, 0

    def receive(self, ticket: Ticket) -> int | None:
        return None


class _StarvedPool(_NoChildPool):
    """Takes every chunk and never answers: the ingesting thread must not wait for it."""

    def __init__(self) -> None:
        super().__init__()
        self.abandoned: list[Ticket] = []

    def send(self, chunk: Sequence[Signed]) -> Ticket | None:
        self.sent += 1
        return 0, self.sent

    def ready(self, ticket: Ticket) -> bool:
        return False

    def receive(self, ticket: Ticket) -> int | None:
        raise AssertionError("waited for a starved child")

    def abandon(self, ticket: Ticket) -> None:
        self.abandoned.append(ticket)


@pytest.mark.parametrize("make_pool", [_BusyPool, _EagerPool, _GonePool, _StarvedPool,
                                       SignaturePool],
                         ids=["busy", "eager", "gone", "starved", "process"])
def test_the_first_bad_signature_wins_whoever_verified_it(
        make_ledger: MakeLedger, make_pool: Callable[[], SignaturePool]) -> None:
    """Chunks checked by the ingesting thread, by a child, or by the ingesting thread after
    the child was lost or while it is starved: the earliest bad block decides what is
    stored."""
    pool = make_pool()
    author = Identity.from_seed(b"\x05" * 32)
    chain: list[Block] = []
    prev = bytes(32)
    for h in range(200):
        chain.append(Block.create(author, h, prev, int(NOW * 1000), (left(h),)))
        prev = chain[-1].hash
    raws = [b.raw for b in chain]
    for bad in (30, 170):  # in the first and the third chunk
        raws[bad] = raws[bad][:-1] + bytes([raws[bad][-1] ^ 1])
    led = make_ledger("p", 1)
    try:
        with pytest.raises(BlockError, match="height 30"):
            ingest(led.store, raws, led.registry, int(NOW * 1000), pool=pool)
        assert led.store.head(author.public_key).height == 29  # type: ignore[union-attr]
        result = ingest(led.store, [b.raw for b in chain[30:]], led.registry,
                        int(NOW * 1000), pool=pool)
        assert len(result.stored) == 170 and led.verify(NOW).ok
    finally:
        pool.close()


def test_a_signature_pool_child_answers_chunks_in_order_and_none_after_close() -> None:
    me = Identity.from_seed(b"\x06" * 32)
    good = [(me.public_key, me.sign(b"m%d" % i), b"m%d" % i) for i in range(5)]
    pool = SignaturePool(1)
    first = pool.send(good)
    second = pool.send([*good[:2], (me.public_key, good[0][1], b"other"), *good[3:]])
    assert first == (0, 0) and second == (0, 1)
    assert pool.receive(second) == 2 and pool.receive(first) == -1
    third, fourth = pool.send(good), pool.send(good[:1])
    assert third is not None and fourth is not None
    pool.abandon(third)  # checked elsewhere: its answer is dropped
    assert pool.receive(fourth) == -1
    fifth = pool.send(good)
    assert fifth is not None and pool.receive(fifth) == -1
    pool.close()
    assert pool.send(good[:1]) is None  # the caller checks it


def test_a_group_commits_its_writes_together_and_a_failed_write_alone_is_undone(
        make_ledger: MakeLedger) -> None:
    led = make_ledger("a", 1)
    other = Identity.from_seed(b"\x07" * 32)
    b0 = Block.create(other, 0, bytes(32), int(NOW * 1000), (left(0),))
    b1 = Block.create(other, 1, b0.hash, int(NOW * 1000), (left(1),))
    store = led.store
    with store.group():
        store.put_blocks([b0])
        with pytest.raises(sqlite3.IntegrityError):
            store.put_blocks([b1, b0])  # b0 again: this write is rolled back, b1 with it
        store.mark_synced("peer", 5)
    assert store.head(other.public_key).height == 0  # type: ignore[union-attr]
    assert store.peers() == [("peer", 5, None, None)] and store.tx_count() == 1
    with pytest.raises(RuntimeError), store.group():
        store.put_blocks([b1])
        raise RuntimeError("the caller failed before the commit")
    assert store.head(other.public_key).height == 0  # type: ignore[union-attr]
    with store.group(), pytest.raises(StorageError, match="nest"), store.group():
        pass
