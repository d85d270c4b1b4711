"""Codec, transaction registry, block validation: properties and typed rejections."""

from __future__ import annotations

import dataclasses

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger import codec
from ledger.block import GENESIS_PREV, Block, decode_block
from ledger.errors import BlockError, CodecError, LedgerError, TxSchemaError, UnknownTxType
from ledger.tx import (
    Float,
    Int,
    Transaction,
    TxType,
    default_registry,
    line_from_body,
    register_tx_type,
    transaction_from_mesh_event,
)
from ledger.validate import FeedHead, check_block, head_of
from mesh import events as ev
from mesh.identity import Identity
from mesh.line import LineStatus

ALICE = Identity.from_seed(b"\x01" * 32)
BOB = Identity.from_seed(b"\x02" * 32)
T0 = 1_750_000_000_000
plain = st.recursive(
    st.none() | st.booleans() | st.integers(-2**63, 2**64 - 1) | st.binary(max_size=40)
    | st.text(max_size=20) | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner,
                                                                 max_size=5),
    max_leaves=20)


@given(plain)
def test_codec_round_trip_is_canonical(value: object) -> None:
    data = codec.encode(value)
    assert codec.encode(codec.decode(data, 1 << 20)) == data


@given(st.binary(max_size=200))
@settings(max_examples=300)
def test_codec_rejects_junk_with_codec_error_only(data: bytes) -> None:
    try:
        value = codec.decode(data, 1 << 20)
    except CodecError:
        return
    assert codec.encode(value) == data  # whatever passes is canonical


def test_codec_rejects_non_canonical_tags_and_oversize() -> None:
    with pytest.raises(CodecError, match="canonical"):
        codec.decode(cbor2.dumps({"b": 1, "a": 2}), 100)  # keys out of order
    with pytest.raises(CodecError, match="tag"):
        codec.decode(cbor2.dumps(cbor2.CBORTag(99, 1)), 100)
    with pytest.raises(CodecError, match="limit"):
        codec.decode(codec.encode(b"x" * 200), 100)


def _route() -> Transaction:
    return Transaction("mesh.route_added", {"dest": b"d" * 8, "next_hop": b"n" * 8, "hops": 2,
                                            "seq": 7, "lifetime_s": 3.0, "t": 1.5})


def test_registry_rejects_unknown_and_malformed() -> None:
    reg = default_registry()
    reg.validate(_route())
    with pytest.raises(UnknownTxType):
        reg.validate(Transaction("example.unregistered", {}))
    bad_cases = [
        {**_route().body, "hops": 300},          # out of range
        {**_route().body, "dest": b"short"},     # wrong length
        {**_route().body, "extra": 1},           # unknown field
        {k: v for k, v in _route().body.items() if k != "seq"},  # missing
        {**_route().body, "seq": "7"},           # wrong type
    ]
    for body in bad_cases:
        with pytest.raises(TxSchemaError):
            reg.validate(Transaction("mesh.route_added", body))


def test_plugins_register_their_types() -> None:
    reg = default_registry()
    assert "charging.session" in reg and "contract.tx" in reg  # the default plugins' types
    kind = TxType("example.session", "An example plugin type.",
                  {"kwh": Float(0, 1000), "evse": Int(0)})
    register_tx_type(reg, kind)
    register_tx_type(reg, kind)  # the very same type again is harmless
    reg.validate(Transaction("example.session", {"kwh": 12.5, "evse": 3}))
    with pytest.raises(LedgerError):
        register_tx_type(reg, TxType("example.session", "other", {}))
    with pytest.raises(ValueError):
        TxType("NoDots", "bad name", {})


LINE_UP = LineStatus(True, "lte", -95, True, 40)
EVENTS: list[ev.Event] = [
    ev.NeighbourUp(b"a" * 8, "wlan0", LINE_UP, 1.0),
    ev.NeighbourDown(b"a" * 8, "hello_loss", 2.0),
    ev.NeighbourLineChanged(b"a" * 8, LINE_UP, LineStatus(), 3.0),
    ev.LineStatusChanged(LineStatus(), LINE_UP, 4.0),
    ev.ManetJoined((b"a" * 8, b"b" * 8), False, 5.0),
    ev.ManetLeft(6.0),
    ev.RouteAdded(b"c" * 8, b"a" * 8, 3, 9, 6.0, 7.0),
    ev.RouteBroken(b"c" * 8, b"a" * 8, 3, 10, "rerr", 8.0),
    ev.RouteDiscoveryFailed(b"c" * 8, 3, 2, 9.0),
    ev.GatewayChanged(None, b"g" * 8, b"a" * 8, 2, 4, LINE_UP, "found", 10.0),
    ev.GatewayChanged(b"g" * 8, None, None, 0, 0, None, "lost", 11.0),
]


@pytest.mark.parametrize("event", EVENTS, ids=lambda e: type(e).__name__)
def test_every_routing_event_becomes_a_valid_transaction(event: ev.Event) -> None:
    reg = default_registry()
    tx = transaction_from_mesh_event(event)
    assert tx is not None
    assert reg.decode(tx.encode()) == tx
    assert tx.body["t"] == event.time
    if isinstance(event, ev.LineStatusChanged):
        assert line_from_body(tx.body["new"]) == event.new


def test_application_data_is_not_routing_history() -> None:
    assert transaction_from_mesh_event(ev.DataReceived(b"a" * 8, b"x", 1, 1.0)) is None
    assert transaction_from_mesh_event(ev.DataDropped(b"a" * 8, "no_route", 1.0)) is None


def _chain(n: int, who: Identity = ALICE) -> list[Block]:
    blocks: list[Block] = []
    prev, ts = GENESIS_PREV, T0
    for h in range(n):
        b = Block.create(who, h, prev, ts + h, (_route(),))
        blocks.append(b)
        prev = b.hash
    return blocks


def test_block_round_trip_and_chain_validation() -> None:
    reg = default_registry()
    blocks = _chain(3)
    head: FeedHead | None = None
    for b in blocks:
        got = decode_block(b.raw, reg)
        assert got == b and got.hash == b.hash
        check_block(got, head, T0 + 10)
        head = head_of(got)


def test_block_validation_rejects_each_fault() -> None:
    b0, b1, b2 = _chain(3)
    h0 = head_of(b0)
    cases = {
        "gap": (b2, h0),
        "link": (Block.create(ALICE, 1, b"\x07" * 32, T0 + 1, ()), h0),
        "time": (Block.create(ALICE, 1, b0.hash, T0 - 1, ()), h0),
        "author": (Block.create(BOB, 1, b0.hash, T0 + 1, ()), h0),
    }
    for reason, (block, head) in cases.items():
        with pytest.raises(BlockError) as info:
            check_block(block, head, T0 + 10)
        assert info.value.reason == reason
    with pytest.raises(BlockError, match="future"):
        check_block(Block.create(ALICE, 1, b0.hash, T0 + 10**9, ()), h0, T0)
    forged = dataclasses.replace(b1, signature=bytes(64))
    with pytest.raises(BlockError) as info:
        check_block(forged, h0, T0 + 10)
    assert info.value.reason == "signature"


@given(st.data())
@settings(max_examples=200)
def test_mutated_blocks_fail_with_block_error_only(data: st.DataObject) -> None:
    reg = default_registry()
    raw = bytearray(_chain(1)[0].raw)
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i] = data.draw(st.integers(0, 255))
    try:
        block = decode_block(bytes(raw), reg)
        check_block(block, None, T0 + 10)
    except BlockError:
        return
    assert bytes(raw) == _chain(1)[0].raw  # only an unchanged block may pass


def test_unknown_tx_in_block_is_a_block_error() -> None:
    b = Block.create(ALICE, 0, GENESIS_PREV, T0, (Transaction("nobody.knows", {}),))
    with pytest.raises(BlockError) as info:
        decode_block(b.raw, default_registry())
    assert info.value.reason == "tx"
