"""The difference sketch (`ledger.sketch`): an XOR invertible Bloom lookup table and the
bucket estimator that sizes it, and the sync sessions that use them."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger import Ledger, codec, sketch
from ledger.block import Block
from ledger.errors import SyncError
from ledger.local import sync_pair
from ledger.reconcile import Item, ReconIndex
from ledger.sync import K_EST, K_SKETCH, K_VERSION, VERSION, SyncConfig, SyncSession
from ledger.validate import FeedHead
from mesh.identity import Identity

NOW = 1_750_000_000.0
MakeLedger = Callable[..., Ledger]
keys = st.binary(min_size=sketch.KEY_LEN, max_size=sketch.KEY_LEN)


@given(st.sets(keys, max_size=60), st.sets(keys, max_size=12), st.sets(keys, max_size=12),
       st.integers(0, 40))
@settings(max_examples=200, deadline=None)
def test_a_decoded_difference_is_exactly_the_difference(shared: set[bytes], only_a: set[bytes],
                                                        only_b: set[bytes], extra: int) -> None:
    only_a -= shared | only_b
    only_b -= shared
    cells = sketch.cells_for(len(only_a) + len(only_b) + extra)
    a = sketch.Iblt.of(shared | only_a, cells)
    b = sketch.Iblt.of(shared | only_b, cells)
    wire = sketch.Iblt.from_bytes(b.to_bytes())
    assert wire.keys == b.keys and wire.checks == b.checks
    decoded = wire.subtract(a).decode()
    if decoded is None:  # may happen (~1 % at the sizes `cells_for` picks): never wrong
        return
    ours, theirs = sketch.split_difference(decoded, shared | only_a)
    assert sorted(ours) == sorted(only_a) and sorted(theirs) == sorted(only_b)


def test_tables_sized_by_cells_for_almost_always_decode() -> None:
    """Deterministic draws: at most 2 of 100 tables per difference size fail to peel."""
    import random

    rng = random.Random(7)
    for size in (1, 5, 20, 100):
        failures = 0
        for _ in range(100):
            diff = [rng.randbytes(sketch.KEY_LEN) for _ in range(size)]
            if sketch.Iblt.of(diff, sketch.cells_for(size)).decode() is None:
                failures += 1
        assert failures <= 2, (size, failures)


@given(st.binary(max_size=3 * sketch.HASHES * sketch.CELL_LEN))
@settings(max_examples=300, deadline=None)
def test_tables_from_the_wire_are_bounded(data: bytes) -> None:
    """Untrusted bytes: a ValueError, or a table whose decode ends with at most one key a
    cell (or None)."""
    try:
        table = sketch.Iblt.from_bytes(data)
    except ValueError:
        return
    decoded = table.decode()
    assert decoded is None or len(decoded) <= table.cells


def index_of(count: int, seed: int, height: Callable[[int], int] = lambda k: 0) -> ReconIndex:
    return ReconIndex([FeedHead(Identity.from_seed((seed + k).to_bytes(32, "big")).public_key,
                                height(k), bytes([k % 256]) * 32, 0) for k in range(count)])


def test_the_estimator_tells_equal_sets_and_sizes_a_difference() -> None:
    a = index_of(2000, 1)
    same = sketch.Estimator.of(index_of(2000, 1), 128)
    assert sketch.Estimator.of(a, 128).compare(same) == (0, 0)
    assert sketch.estimate_items(0, 0, 128) == 0
    fewer = sketch.Estimator.of(index_of(1900, 1), 128)  # 100 feeds lacking
    differing, lacking = sketch.Estimator.of(a, 128).compare(fewer)
    estimate = sketch.estimate_items(differing, lacking, 128)
    assert estimate is not None and 100 <= estimate <= 160
    ahead = sketch.Estimator.of(index_of(2000, 1, lambda k: 1 if k < 100 else 0), 128)
    differing, lacking = sketch.Estimator.of(a, 128).compare(ahead)
    estimate = sketch.estimate_items(differing, lacking, 128)
    assert lacking == 0 and estimate is not None and 200 <= estimate <= 300  # two keys a feed
    assert sketch.estimate_items(128, 0, 128) is None  # saturated: use ranges


def test_sketch_keys_name_feed_height_and_head() -> None:
    item = Item(b"\x01" * 32, 70000, b"\xab\xcd" + bytes(6))
    assert sketch.key_parts(sketch.sketch_key(item)) == (b"\x01" * 6, 70000, b"\xab\xcd")
    assert not sketch.usable([Item(b"\x01" * 32, 2**32, bytes(8))])


def chains(count: int, seed: int, length: int) -> list[list[bytes]]:
    out = []
    for k in range(count):
        who = Identity.from_seed((seed + k).to_bytes(32, "big"))
        prev, chain = bytes(32), []
        for h in range(length):
            blk = Block.create(who, h, prev, int(NOW * 1000), ())
            chain.append(blk.raw)
            prev = blk.hash
        out.append(chain)
    return out


@pytest.fixture(scope="module")
def feeds() -> list[list[bytes]]:
    return chains(300, 9000, 3)


def diverge(make_ledger: MakeLedger, feeds: list[list[bytes]]) -> tuple[Ledger, Ledger]:
    """300 feeds: 20 only on a, 20 only on b, 15 ahead on a, 15 ahead on b, the rest equal."""
    a, b = make_ledger("a", 1), make_ledger("b", 2)
    for k, chain in enumerate(feeds):
        na = 0 if 20 <= k < 40 else (3 if 40 <= k < 55 else (1 if 55 <= k < 70 else 2))
        nb = 0 if k < 20 else (1 if 40 <= k < 55 else (3 if 55 <= k < 70 else 2))
        if na:
            a.receive_blocks(chain[:na], NOW)
        if nb:
            b.receive_blocks(chain[:nb], NOW)
    return a, b


def test_a_sketch_reconciles_differences_both_ways(make_ledger: MakeLedger,
                                                   feeds: list[list[bytes]]) -> None:
    a, b = diverge(make_ledger, feeds)
    result = sync_pair(a, b, NOW)
    assert result.error is None and result.initiator.stats.sketch_cells > 0
    assert not result.initiator.stats.sketch_failed
    assert [(h.author, h.height, h.hash) for h in a.heads()] == [
        (h.author, h.height, h.hash) for h in b.heads()]
    assert len(a.heads()) == 300 and result.initiator.stats.recon_messages <= 4
    moved = result.initiator.stats.blocks_in + result.responder.stats.blocks_in
    assert moved == 20 * 2 + 20 * 2 + 15 * 2 + 15 * 2  # nothing twice
    assert a.verify(NOW).ok and b.verify(NOW).ok


def test_a_sketch_that_does_not_decode_falls_back_to_ranges(
        make_ledger: MakeLedger, feeds: list[list[bytes]],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sketch, "cells_for", lambda keys: sketch.HASHES)  # far too small
    a, b = diverge(make_ledger, feeds)
    result = sync_pair(a, b, NOW)
    assert result.error is None and result.initiator.stats.sketch_failed
    assert [(h.author, h.height) for h in a.heads()] == [(h.author, h.height) for h in b.heads()]
    assert result.initiator.stats.recon_messages <= 10


def test_without_sketches_the_ranges_do_it_all(make_ledger: MakeLedger,
                                               feeds: list[list[bytes]]) -> None:
    a, b = diverge(make_ledger, feeds)
    result = sync_pair(a, b, NOW, config=SyncConfig(sketch=False),
                       responder_config=SyncConfig())
    assert result.error is None and result.initiator.stats.sketch_cells == 0
    assert [(h.author, h.height) for h in a.heads()] == [(h.author, h.height) for h in b.heads()]


def test_estimators_and_sketches_out_of_turn_are_malformed(make_ledger: MakeLedger) -> None:
    led = make_ledger("a", 1)
    for chain in chains(40, 7000, 1):
        led.receive_blocks(chain, NOW)
    est = sketch.Estimator.of(ReconIndex(led.heads()), 16)
    bad = [
        {K_VERSION: VERSION, K_SKETCH: b"\x00" * (4 * sketch.CELL_LEN)},  # nobody asked
        {K_VERSION: VERSION, K_EST: [est.total, est.buckets[:-2]]},  # 15 buckets
        {K_VERSION: VERSION, K_EST: [est.total[:4], est.buckets]},
    ]
    for message in bad:
        session = SyncSession(led.store, led.registry, initiator=False, peer="p", now=NOW)
        with pytest.raises(SyncError) as info:
            session.receive(codec.encode(message), NOW)
        assert info.value.reason == "malformed"
    initiator = SyncSession(led.store, led.registry, initiator=True, peer="p", now=NOW)
    initiator.start(NOW)
    with pytest.raises(SyncError):  # an estimator is the initiator's to send
        initiator.receive(codec.encode({K_VERSION: VERSION, K_EST: [est.total, est.buckets]}),
                          NOW)
    asker = SyncSession(led.store, led.registry, initiator=True, peer="q", now=NOW)
    asker.start(NOW)
    with pytest.raises(SyncError) as info:  # 5 cells: not a multiple of HASHES
        asker.receive(codec.encode({K_VERSION: VERSION, K_SKETCH: b"\x00" * (5 * 15)}), NOW)
    assert info.value.reason == "malformed"


def test_an_equivocation_at_the_head_is_found_through_the_sketch(make_ledger: MakeLedger,
                                                                 feeds: list[list[bytes]]) -> None:
    a, b = make_ledger("a", 1), make_ledger("b", 2)
    for chain in feeds[:40]:
        a.receive_blocks(chain, NOW)
        b.receive_blocks(chain, NOW)
    cheat = Identity.from_seed(b"\x09" * 32)
    genesis = Block.create(cheat, 0, bytes(32), int(NOW * 1000), ())
    one = Block.create(cheat, 1, genesis.hash, int(NOW * 1000), ())
    other = Block.create(cheat, 1, genesis.hash, int(NOW * 1000) + 1, ())
    a.receive_blocks([genesis.raw, one.raw], NOW)
    b.receive_blocks([genesis.raw, other.raw], NOW)
    result = sync_pair(a, b, NOW)
    assert result.error is None and result.initiator.stats.sketch_cells > 0
    assert cheat.public_key in a.store.flagged() and cheat.public_key in b.store.flagged()
