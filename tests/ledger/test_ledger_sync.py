"""Sync sessions wired in memory: divergence, partitions, cuts and resumption, hostile peers."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger import Ledger, Transaction, codec
from ledger.block import Block
from ledger.errors import SyncError
from ledger.local import sync_pair
from ledger.sync import K_BLOCKS, K_RANGES, K_VERSION, VERSION, SyncConfig, SyncSession
from mesh.identity import Identity

NOW = 1_750_000_000.0
MakeLedger = Callable[..., Ledger]


def grow(led: Ledger, blocks: int, start: float = NOW, txs: int = 2) -> None:
    for i in range(blocks):
        for j in range(txs):
            led.append(Transaction("mesh.manet_left", {"t": float(i * txs + j)}), start + i)
        led.flush(start + i)


def view(led: Ledger) -> list[tuple[bytes, int, bytes]]:
    return [(h.author, h.height, h.hash) for h in led.heads()]


def foreign_feeds(count: int, seed: int = 100) -> list[list[bytes]]:
    """`count` one-block feeds by other authors, as encoded blocks."""
    feeds = []
    for k in range(count):
        who = Identity.from_seed((seed + k).to_bytes(32, "big"))
        feeds.append([Block.create(who, 0, bytes(32), int(NOW * 1000), ()).raw])
    return feeds


def test_two_peers_diverging_over_many_blocks_converge(make_ledger: MakeLedger) -> None:
    a, b = make_ledger("a", 1), make_ledger("b", 2)
    grow(a, 120)
    grow(b, 80)
    shared = foreign_feeds(30)
    for feed in shared:
        a.receive_blocks(feed, NOW)
        b.receive_blocks(feed, NOW)
    result = sync_pair(a, b, NOW + 200)
    assert result.error is None and result.responder.state == "complete"
    assert view(a) == view(b) and len(view(a)) == 32
    assert a.verify(NOW + 200).ok and b.verify(NOW + 200).ok
    moved = result.initiator.stats.block_bytes_out + result.responder.stats.block_bytes_out
    assert result.initiator.stats.blocks_out == 120 and result.responder.stats.blocks_out == 80
    assert result.wire_bytes <= 1.1 * moved + 2048
    again = sync_pair(b, a, NOW + 201)
    assert again.initiator.stats.blocks_out == again.responder.stats.blocks_out == 0
    assert again.messages <= 3


def test_three_way_partitions_merge(make_ledger: MakeLedger) -> None:
    nodes = [make_ledger(f"n{i}", i + 1) for i in range(6)]
    for i, led in enumerate(nodes):
        grow(led, 5 + 3 * i, NOW + i)
    groups = [nodes[0:2], nodes[2:4], nodes[4:6]]
    for g in groups:  # each partition syncs inside itself
        assert sync_pair(g[0], g[1], NOW + 50).error is None
        assert view(g[0]) == view(g[1]) and len(view(g[0])) == 2
    for i, led in enumerate(nodes):  # the partitions keep writing apart
        grow(led, 2, NOW + 60 + i)
    assert sync_pair(nodes[1], nodes[2], NOW + 100).error is None  # then they meet, pairwise
    assert sync_pair(nodes[3], nodes[4], NOW + 100).error is None
    assert sync_pair(nodes[5], nodes[0], NOW + 100).error is None
    for led in nodes:
        for other in nodes:
            if other is not led:
                sync_pair(led, other, NOW + 101)
    final = view(nodes[0])
    assert len(final) == 6
    assert all(view(led) == final for led in nodes)
    assert all(led.verify(NOW + 102).ok for led in nodes)


def test_interrupted_sync_resumes_where_it_stopped(make_ledger: MakeLedger) -> None:
    a, b = make_ledger("a", 1), make_ledger("b", 2)
    grow(a, 300, txs=8)
    small = SyncConfig(max_message_bytes=96 * 1024)
    first = sync_pair(a, b, NOW + 400, cut_after=3, config=small)
    assert first.cut and first.initiator.state == "failed"
    got = b.store.head(a.author)
    assert got is not None and 0 < got.height < 299  # part arrived and is durable
    assert b.verify(NOW + 400).ok
    second = sync_pair(b, a, NOW + 401, config=small)
    assert second.error is None and second.initiator.state == "complete"
    assert view(a) == view(b)
    assert second.initiator.stats.blocks_in == 299 - got.height  # only the rest was sent
    assert second.initiator.stats.duplicates == 0


def test_peer_sending_an_invalid_block_is_cut_and_recorded(make_ledger: MakeLedger) -> None:
    b = make_ledger("b", 2)
    liar = Identity.from_seed(b"\x33" * 32)
    good = Block.create(liar, 0, bytes(32), int(NOW * 1000), ())
    bad = bytearray(Block.create(liar, 1, good.hash, int(NOW * 1000), ()).raw)
    bad[-1] ^= 0xFF
    session = SyncSession(b.store, b.registry, initiator=False, peer="liar", now=NOW)
    message = codec.encode({K_VERSION: VERSION, K_BLOCKS: [good.raw, bytes(bad)]})
    with pytest.raises(SyncError) as info:
        session.receive(message, NOW)
    assert info.value.reason == "invalid_block" and session.state == "failed"
    assert b.store.head(liar.public_key) is not None  # the good block before it is kept
    [(peer, _, reason, _)] = b.store.peers()
    assert peer == "liar" and reason is not None and "signature" in reason
    assert codec.decode(session.error_message(), 1000)[5] == "invalid_block"


def test_bounds_cut_a_flooding_peer(make_ledger: MakeLedger) -> None:
    b = make_ledger("b", 2)
    cfg = SyncConfig(max_message_bytes=4096, max_ranges=8)
    huge = codec.encode({K_VERSION: VERSION, K_BLOCKS: [b"x" * 5000]})
    s1 = SyncSession(b.store, b.registry, initiator=False, peer="p1", now=NOW, config=cfg)
    with pytest.raises(SyncError):
        s1.receive(huge, NOW)
    many = codec.encode({K_VERSION: VERSION, K_RANGES: [
        [b"", 1, [[bytes([i + 1]) for i in range(9)], b"f" * 8 * 9]]]})
    s2 = SyncSession(b.store, b.registry, initiator=False, peer="p2", now=NOW, config=cfg)
    with pytest.raises(SyncError) as info:
        s2.receive(many, NOW)
    assert info.value.reason == "bounds"
    feeds = foreign_feeds(5)
    flood = codec.encode({K_VERSION: VERSION, K_BLOCKS: [f[0] for f in feeds]})
    s3 = SyncSession(b.store, b.registry, initiator=False, peer="p3", now=NOW,
                     config=SyncConfig(max_new_feeds=3))
    with pytest.raises(SyncError):
        s3.receive(flood, NOW)


@given(st.binary(max_size=300))
@settings(max_examples=150, deadline=None)
def test_junk_messages_only_raise_sync_error(data: bytes) -> None:
    led = Ledger.open(":memory:", Identity.from_seed(b"\x05" * 32))
    try:
        session = SyncSession(led.store, led.registry, initiator=False, peer="j", now=NOW)
        try:
            session.receive(data, NOW)
        except SyncError:
            assert session.state == "failed"
            return
        assert session.state in ("running", "complete")
    finally:
        led.close()


@pytest.mark.parametrize("differences", [1, 100])
def test_round_trips_grow_with_the_difference_not_the_size(make_ledger: MakeLedger,
                                                           differences: int) -> None:
    a, b = make_ledger("a", 1), make_ledger("b", 2)
    feeds = foreign_feeds(2000)
    everything = [f[0] for f in feeds]
    a.receive_blocks(everything, NOW)
    b.receive_blocks(everything[differences:], NOW)
    result = sync_pair(b, a, NOW)
    assert result.error is None
    assert result.initiator.stats.blocks_in == differences
    assert view(a) == view(b)
    if differences == 1:
        assert result.initiator.stats.recon_messages <= 8  # at most 4 round trips to find it
        assert result.wire_bytes - result.initiator.stats.block_bytes_in <= 2048


def test_upload_only_peer_gets_nothing_it_did_not_ask_for(make_ledger: MakeLedger) -> None:
    device, hub = make_ledger("device", 1), make_ledger("hub", 2)
    grow(device, 10)
    for feed in foreign_feeds(50):
        hub.receive_blocks(feed, NOW)
    result = sync_pair(device, hub, NOW + 20, config=SyncConfig(fetch=False),
                       responder_config=SyncConfig())
    assert result.error is None
    assert result.responder.stats.blocks_in == 10 and result.initiator.stats.blocks_in == 0
    assert len(device.heads()) == 1 and len(hub.heads()) == 51


@pytest.fixture(scope="module")
def pool() -> list[list[bytes]]:
    """40 feeds of 4 blocks each, by different authors."""
    feeds = []
    for k in range(40):
        who = Identity.from_seed((500 + k).to_bytes(32, "big"))
        prev, chain = bytes(32), []
        for h in range(4):
            blk = Block.create(who, h, prev, int(NOW * 1000), ())
            chain.append(blk.raw)
            prev = blk.hash
        feeds.append(chain)
    return feeds


@given(st.lists(st.tuples(st.integers(0, 4), st.integers(0, 4)), min_size=40, max_size=40),
       st.sampled_from([1, 4, 200]))
@settings(max_examples=40, deadline=None)
def test_any_two_sets_of_feeds_reconcile_to_their_union(pool: list[list[bytes]],
                                                        lengths: list[tuple[int, int]],
                                                        per_message: int) -> None:
    a = Ledger.open(":memory:", Identity.from_seed(b"\x0a" * 32))
    b = Ledger.open(":memory:", Identity.from_seed(b"\x0b" * 32))
    try:
        for chain, (na, nb) in zip(pool, lengths, strict=True):
            if na:
                a.receive_blocks(chain[:na], NOW)
            if nb:
                b.receive_blocks(chain[:nb], NOW)
        cfg = SyncConfig(max_message_bytes=per_message * 200 + 64 * 1024)
        result = sync_pair(a, b, NOW, config=cfg)
        assert result.error is None
        expected = {chain[0][4:36]: max(n) - 1 for chain, n in zip(pool, lengths, strict=True)
                    if max(n) > 0}
        assert view(a) == view(b)
        assert {h.author: h.height for h in a.heads()} == expected
        moved = result.initiator.stats.blocks_in + result.responder.stats.blocks_in
        assert moved == sum(abs(na - nb) for na, nb in lengths)  # nothing sent twice
    finally:
        a.close()
        b.close()


def test_session_byte_cap_stops_a_flood_and_the_next_session_goes_on(
        make_ledger: MakeLedger) -> None:
    a, b = make_ledger("a", 1), make_ledger("b", 2)
    grow(a, 200, txs=8)
    cfg = SyncConfig(max_message_bytes=70 * 1024, max_session_bytes=40 * 1024)
    first = sync_pair(b, a, NOW + 300, config=cfg)
    got = b.store.head(a.author)
    assert got is not None and 0 < got.height < 199
    assert first.error is None or first.error.reason == "bounds"
    for _ in range(10):
        if b.store.head(a.author) == a.store.head(a.author):
            break
        sync_pair(b, a, NOW + 301, config=cfg)
    assert view(a) == view(b) and b.verify(NOW + 302).ok


def test_packed_ranges_of_the_wrong_size_are_malformed(make_ledger: MakeLedger) -> None:
    b = make_ledger("b", 2)
    bad = [
        [b"", 1, [[b"\x01", None], b"f" * 15]],      # two ranges, 15 bytes of fingerprints
        [b"", 1, [[b"\x01", 5], b"f" * 16]],         # a bound that is no bytes
        [b"", 2, [None, b"i" * 17, [0]]],            # one item, 17 bytes of ids
        [b"", 2, [None, b"i" * 16, [-1]]],           # a negative height
    ]
    for group in bad:
        session = SyncSession(b.store, b.registry, initiator=False, peer="p", now=NOW)
        with pytest.raises(SyncError) as info:
            session.receive(codec.encode({K_VERSION: VERSION, K_RANGES: [group]}), NOW)
        assert info.value.reason == "malformed"
