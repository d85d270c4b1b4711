"""Codec, transaction registry, block validation: properties and typed rejections."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger import Ledger, codec
from ledger.block import GENESIS_PREV, Block, decode_block, signing_bytes
from ledger.errors import BlockError, CodecError, LedgerError, TxSchemaError, UnknownTxType
from ledger.tx import (
    Field,
    Float,
    Int,
    Transaction,
    TxType,
    _check_map,
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
    forged = Block(b1.author, b1.height, b1.prev, b1.timestamp_ms, b1.txs, bytes(64), b1.raw,
                   b1.hash)
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


def test_codec_without_canonical_check_still_refuses_trailing_bytes() -> None:
    assert codec.decode(cbor2.dumps({"b": 1, "a": 2}), 100, canonical=False) == {"b": 1, "a": 2}
    with pytest.raises(CodecError, match="after the CBOR item"):
        codec.decode(b"\x01\x02", 100, canonical=False)
    with pytest.raises(CodecError, match="after the CBOR item"):
        codec.decode(b"\x01\x02", 100)


def _reframed(block: Block, height_bytes: bytes, sig_head: bytes = b"\x58\x40",
              sig: bytes | None = None) -> bytes:
    """`block` re-encoded by hand: its height as given, its signature behind `sig_head`."""
    parts = [codec.encode(1), codec.encode(block.author), height_bytes, codec.encode(block.prev),
             codec.encode(block.timestamp_ms), codec.encode([tx.to_wire() for tx in block.txs])]
    return b"\x87" + b"".join(parts) + sig_head + (block.signature if sig is None else sig)


def test_a_relay_cannot_re_encode_a_signed_block() -> None:
    """Blocks are not re-encoded on receipt: the signature and the framing must catch every
    other encoding of an honest author's block, so one block keeps one hash."""
    reg = default_registry()
    b5 = Block.create(ALICE, 5, b"\x07" * 32, T0, (_route(),))
    assert _reframed(b5, codec.encode(5)) == b5.raw
    head = FeedHead(ALICE.public_key, 4, b"\x07" * 32, T0)
    wide_height = decode_block(_reframed(b5, b"\x18\x05"), reg)  # 5 in two bytes
    assert wide_height.height == 5 and wide_height.hash != b5.hash
    with pytest.raises(BlockError) as info:
        check_block(wide_height, head, T0)
    assert info.value.reason == "signature"
    for raw in (_reframed(b5, codec.encode(5), b"\x59\x00\x40"),  # signature length in 2 bytes
                b5.raw + b"\x00",                                   # trailing byte
                b"\x98\x07" + b5.raw[1:]):                          # array length in 2 bytes
        with pytest.raises(BlockError) as info:
            decode_block(raw, reg)
        assert info.value.reason == "malformed"


def test_an_author_signing_two_encodings_of_one_height_equivocates(
        make_ledger: Callable[..., Ledger]) -> None:
    reg = default_registry()
    b0 = Block.create(ALICE, 0, GENESIS_PREV, T0, (_route(),))
    other = _reframed(b0, b"\x18\x00", sig=bytes(64))
    other = other[:-64] + ALICE.sign(signing_bytes(other))
    assert decode_block(other, reg).txs == b0.txs and other != b0.raw
    led = make_ledger("eq", 9)
    first = led.receive_blocks([b0.raw], T0 / 1000)
    assert len(first.stored) == 1
    second = led.receive_blocks([other], T0 / 1000)
    assert second.equivocations == 1 and led.store.flag_of(ALICE.public_key) is not None


BODIES: list[tuple[str, dict[Any, Any]]] = [
    ("mesh.route_added", {**_route().body, "hops": True}),          # a bool is no int
    ("mesh.route_added", {**_route().body, "t": float("inf")}),
    ("mesh.route_added", {**_route().body, "lifetime_s": -1.0}),
    ("mesh.route_added", {**_route().body, 3: 1}),                   # a key that is no str
    ("mesh.route_added", {**_route().body, "dest": None}),
    ("mesh.gateway_changed", {"old": None, "new": b"g" * 8, "next_hop": None, "hops": 1,
                              "seq": 2, "line": None, "reason": "x", "t": 1.0}),
    ("mesh.gateway_changed", {"old": None, "new": b"g" * 8, "next_hop": None, "hops": 1,
                              "seq": 2, "line": {"connected": 1}, "reason": "x", "t": 1.0}),
    ("line.status", {"old": [], "new": {}, "t": 1.0}),
    ("mesh.route_broken", {**_route().body, "reason": "x" * 65}),
    ("mesh.route_broken", {"dest": b"d" * 8, "next_hop": b"n" * 8, "hops": 0, "seq": 2**32,
                           "reason": "", "t": 0}),
    ("mesh.manet_joined", {"neighbours": [b"a" * 8, b"b"], "has_line": False, "t": 1.0}),
    ("mesh.manet_joined", {"neighbours": [b"a" * 8], "has_line": False, "t": 1.0}),
]


@pytest.mark.parametrize(("name", "body"), BODIES)
def test_compiled_schema_checks_match_the_schema(name: str, body: dict[Any, Any]) -> None:
    """The per-type compiled checker gives the same verdict and message as walking the schema."""
    reg = default_registry()
    expected: str | None = None
    try:
        if any(type(k) is not str for k in body):
            raise TxSchemaError("type", "body keys must be strings")
        _check_map("", reg.get(name).fields, body)
    except TxSchemaError as exc:
        expected = f"{exc.reason}: {exc}"
    try:
        reg.validate(Transaction(name, body))
        got = None
    except TxSchemaError as exc:
        got = f"{exc.reason}: {exc}"
    assert got == expected


def _canonical(body: dict[Any, Any]) -> dict[Any, Any]:
    """`body` with its keys in the order a received (deterministically encoded) body has."""
    decoded: dict[Any, Any] = cbor2.loads(codec.encode(body))
    return decoded


_ODD = st.sampled_from([None, True, -1, 2**40, 0.5, float("inf"), b"x" * 8, b"y", "s", "x" * 70,
                        [b"a" * 8], [b"b"], [], {}, {"connected": True}, {"rtt_ms": -1}])
_NESTED = ["line.status", "mesh.neighbour_line", "mesh.neighbour_up", "mesh.gateway_changed",
           "mesh.manet_joined", "mesh.route_added"]
"""Types with nested maps or lists: their checks may raise from the fast path."""


@given(st.data())
@settings(max_examples=300)
def test_compiled_checks_match_the_schema_on_canonical_bodies(data: st.DataObject) -> None:
    """Bodies in canonical key order take the compiled fast path; with any field replaced by
    an odd value, or left out, the verdict and the message stay those of the schema walk."""
    reg = default_registry()
    name = data.draw(st.sampled_from(_NESTED) | st.sampled_from(reg.names()))
    fields = reg.get(name).fields
    valid = {"mesh.route_added": _route().body,
             "line.status": {"old": _LINE, "new": _LINE, "t": 1.0},
             "mesh.neighbour_up": {"node": b"n" * 8, "iface": "wlan0", "line": _LINE, "t": 2.0}}
    body = dict(valid.get(name, {key: None for key in fields}))
    for key in data.draw(st.lists(st.sampled_from(sorted(fields)), max_size=4)):
        if data.draw(st.booleans()):
            body[key] = data.draw(_ODD)
        else:
            body.pop(key, None)
    body = _canonical(body)
    expected: str | None = None
    try:
        _check_map("", fields, body)
    except TxSchemaError as exc:
        expected = f"{exc.reason}: {exc}"
    got: str | None = None
    try:
        reg.validate(Transaction(name, body))
    except TxSchemaError as exc:
        got = f"{exc.reason}: {exc}"
    assert got == expected


_LINE = {"connected": True, "technology": "lte", "signal_dbm": -80, "backhaul_reachable": True,
         "rtt_ms": 40}


def test_received_blocks_make_their_transactions_when_read() -> None:
    reg = default_registry()
    txs = (_route(), reg.make("line.status", {"old": _LINE, "new": _LINE, "t": 1.0}), _route())
    made = Block.create(ALICE, 0, GENESIS_PREV, T0, txs)
    got = decode_block(made.raw, reg)
    assert got.tx_types == made.tx_types == ["mesh.route_added", "line.status",
                                             "mesh.route_added"]
    assert got.txs == made.txs and got.txs is got.txs and got == made
    with pytest.raises(AttributeError):
        got.height = 1  # type: ignore[misc]


# --- the byte-template fast path of decode_block ------------------------------------------

_REG = default_registry()
"""One registry for these tests: each compiles its templates' patterns when first used."""

def _near(spec: Field) -> st.SearchStrategy[Any]:
    """Values of a field's kind, four times in five within its bounds (the fast path's
    case), else around its bounds and CBOR's encoding sizes, in and out."""
    lo, hi = spec.lo, spec.hi
    good: st.SearchStrategy[Any]
    edge: st.SearchStrategy[Any]
    if spec.kind == "int":
        good = st.integers(int(-2**64 if lo is None else lo), int(2**64 - 1 if hi is None else hi))
        edge = st.sampled_from([e for b in (lo, hi) if b is not None
                                for e in (int(b) - 1, int(b), int(b) + 1)]
                               + [23, 24, 255, 256, 65535, 65536, 2**32 - 1, 2**32, -24, -25,
                                  -256, -257, -2**64 - 1, 2**64])
    elif spec.kind == "float":
        good = (st.floats(min_value=0.0, allow_infinity=False, width=16)
                | st.floats(min_value=0.0, allow_infinity=False, width=32)
                | st.floats(min_value=0.0, allow_infinity=False) | st.integers(0, 2**64 - 1))
        edge = (st.floats() | st.integers(-3, 3)
                | st.sampled_from([-0.0, 5e-324, -5e-324, float("inf"), float("nan")]))
    elif spec.kind in ("bytes", "str"):
        size = {"min_size": int(lo or 0), "max_size": int(hi or 300)}
        out = {"min_size": max(0, int(lo or 0) - 1), "max_size": int(hi or 300) + 1}
        if spec.kind == "bytes":
            good, edge = st.binary(**size), st.binary(**out)
        else:
            good = st.text(st.characters(max_codepoint=127), **size)
            edge = st.text(**out)
    elif spec.kind == "bool":
        good, edge = st.booleans(), st.sampled_from([0, 1])
    elif spec.kind == "map" and spec.fields is not None:
        good = edge = st.fixed_dictionaries({k: _near(f) for k, f in spec.fields.items()})
    else:
        good = edge = plain
    if spec.optional:
        good = good | st.none()
    return st.integers(0, 4).flatmap(lambda k: edge if k == 0 else good)


@st.composite
def _odd_tx(draw: st.DrawFn) -> Transaction:
    """A transaction of a templated type: each field near its bounds, sometimes left out."""
    name = draw(st.sampled_from([n for n in _REG.names() if _REG._runs.get(n) is not None]))
    fields = _REG.get(name).fields
    body = {key: draw(_near(spec)) for key, spec in fields.items()}
    odd = draw(st.integers(0, 9)) if body else 9
    if odd == 0:
        body.pop(draw(st.sampled_from(sorted(body))))
    elif odd == 1:
        body[draw(st.sampled_from(sorted(body)))] = draw(
            st.sampled_from([None, b"", "", [], {}, 1.5, True]))
    return Transaction(name, body)


def _both_paths(raw: bytes) -> None:
    """Whatever the fast path takes, the full decode takes too, with the same fields."""
    from ledger.block import _decode

    fast = decode_block(raw, _REG)  # the fast path, or the full decode when it passes
    slow = _decode(raw, _REG)
    assert (fast.author, fast.height, fast.prev, fast.timestamp_ms, fast.signature, fast.hash,
            fast.tx_types, fast.txs) == (slow.author, slow.height, slow.prev, slow.timestamp_ms,
                                         slow.signature, slow.hash, slow.tx_types, slow.txs)


def _fast_only(raw: bytes) -> Block | None:
    from ledger.block import _USUAL, _from_template

    found = _USUAL.match(raw, 0, len(raw) - 66) if raw[-66:-64] == b"\x58\x40" else None
    return None if found is None else _from_template(raw, found, _REG)


@given(st.lists(_odd_tx(), min_size=1, max_size=4), st.integers(0, 2**64 - 1),
       st.integers(0, 2**64 - 1),
       st.data())
@settings(max_examples=150, deadline=None)
def test_the_template_fast_path_takes_only_what_the_full_decode_takes(
        txs: list[Transaction], height: int, ts: int, data: st.DataObject) -> None:
    """Blocks of edge values (floats of every width, infinities, NaN, -0.0, ints around
    every bound and encoding size, strings over their limits and non-ASCII, fields left
    out), and the same bytes with one byte changed: the fast path refuses whatever the full
    decode refuses, and agrees with it on what both take."""
    if data.draw(st.integers(0, 3)) and txs:
        txs = [txs[0]] * len(txs)  # one type: the fast path's case
    raw = Block.create(ALICE, height, b"\x05" * 32, ts, tuple(txs)).raw
    mutations = [raw]
    for _ in range(3):
        i = data.draw(st.integers(0, len(raw) - 1))
        mutations.append(raw[:i] + bytes([data.draw(st.integers(0, 255))]) + raw[i + 1:])
    for candidate in mutations:
        if _fast_only(candidate) is not None:
            _both_paths(candidate)


@given(_odd_tx())
@settings(max_examples=500, deadline=None)
def test_a_template_matches_only_transactions_that_pass_their_schema(tx: Transaction) -> None:
    encoded = tx.encode()
    if _REG._runs[tx.type].match(encoded, 0, len(encoded), 1):
        _REG.from_wire(cbor2.loads(encoded))  # raises if the template was wrong


def _valid(spec: Field) -> Any:
    """A value every schema of this kind and bounds accepts."""
    lo = spec.lo
    if spec.kind == "int":
        return int(lo) if lo is not None else 0
    if spec.kind == "float":
        return 1.5 if lo is None else float(lo) + 1.5
    if spec.kind in ("bytes", "str"):
        n = int(lo or 0)
        return b"x" * n if spec.kind == "bytes" else "x" * n
    if spec.kind == "bool":
        return True
    if spec.kind == "list" and spec.items is not None:
        return [_valid(spec.items)] * int(lo or 0)
    assert spec.kind == "map" and spec.fields is not None
    return {k: _valid(f) for k, f in spec.fields.items()}


_EDGES: list[Any] = [
    None, True, False, b"", "", [], {}, 1.5, -1.5,
    0, 1, 23, 24, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**63, 2**64 - 1,
    -1, -24, -25, -200, -201, -256, -257, -65536, -65537, -2**32, -2**32 - 1, -2**64,
    float("inf"), float("-inf"), float("nan"), -0.0, 0.0, 5e-324, -5e-324, 1e308, 65504.0,
    65520.0, 3.4e38, 3.5e38, "é", "x" * 300, [b"a" * 8, b"b"], [None], [[b"a" * 8]], [1]]


def _with(body: dict[str, Any], path: tuple[str, ...], value: Any) -> dict[str, Any]:
    out = dict(body)
    out[path[0]] = value if len(path) == 1 else _with(out[path[0]], path[1:], value)
    return out


def _paths(fields: Mapping[str, Field], prefix: tuple[str, ...] = ()) -> list[
        tuple[tuple[str, ...], Field]]:
    out = []
    for key, spec in fields.items():
        out.append(((*prefix, key), spec))
        if spec.kind == "map" and spec.fields is not None:
            out += _paths(spec.fields, (*prefix, key))
    return out


@pytest.mark.parametrize("name", [n for n in _REG.names() if _REG._runs.get(n) is not None])
def test_a_template_refuses_every_edge_value_its_schema_refuses(name: str) -> None:
    """Each field (nested ones too) of a valid body in turn holds each edge value, and
    lengths around each bound and encoding size: whatever the template matches, the schema
    accepts."""
    fields = _REG.get(name).fields
    base = {k: _valid(f) for k, f in fields.items()}
    _REG.from_wire(cbor2.loads(Transaction(name, base).encode()))
    matched = 0
    for path, spec in _paths(fields):
        values = list(_EDGES)
        sizes = {0, 1, 8, 16, 23, 24, 32, 64, 65, 255, 256}
        if spec.kind in ("bytes", "str"):
            sizes |= {int(spec.lo or 0) - 1, int(spec.hi or 0) + 1}
        for n in sizes:
            values += [b"y" * n, "y" * n, [b"y" * 8] * n, [b"y"] + [b"y" * 8] * n,
                       [b"y" * 8] * n + [None]] if n >= 0 else []
        for value in values:
            encoded = Transaction(name, _with(base, path, value)).encode()
            if _REG._runs[name].match(encoded, 0, len(encoded), 1):
                matched += 1
                _REG.from_wire(cbor2.loads(encoded))  # raises if the template was wrong
    assert matched  # the fast path is taken at all


def test_usual_blocks_take_the_fast_path_and_read_their_transactions_later() -> None:
    reg = default_registry()
    line = {"connected": True, "technology": "lte", "signal_dbm": -80,
            "backhaul_reachable": True, "rtt_ms": 40}
    for txs in ((_route(),) * 8, (reg.make("line.status", {"old": line, "new": line, "t": 1.0}),),
                (reg.make("mesh.gateway_changed", {"old": None, "new": b"g" * 8, "next_hop": None,
                                                   "hops": 1, "seq": 2, "line": None,
                                                   "reason": "up", "t": 0.0}),), ()):
        made = Block.create(ALICE, 300, b"\x05" * 32, T0, txs)
        assert _fast_only(made.raw) is not None
        got = decode_block(made.raw, reg)
        assert got == made and got.tx_types == made.tx_types
    mixed = Block.create(ALICE, 0, GENESIS_PREV, T0, (_route(), _route_broken(), _route()))
    fast = _fast_only(mixed.raw)  # transaction by transaction
    assert fast is not None and fast.tx_types == mixed.tx_types and fast == mixed
    joined = reg.make("mesh.manet_joined", {"neighbours": [b"a" * 8], "has_line": True,
                                            "t": 1.0})
    listed = Block.create(ALICE, 0, GENESIS_PREV, T0, (joined, _route()))
    assert _fast_only(listed.raw) is not None and decode_block(listed.raw, reg) == listed
    own = default_registry()
    register_tx_type(own, TxType("test.checked", "with its own check", {"n": Int(0)},
                                 check=lambda body: None))
    untemplated = Block.create(ALICE, 0, GENESIS_PREV, T0,
                               (_route(), own.make("test.checked", {"n": 1})))
    from ledger.block import _USUAL, _from_template

    found = _USUAL.match(untemplated.raw, 0, len(untemplated.raw) - 66)
    assert found is not None and _from_template(untemplated.raw, found, own) is None
    assert decode_block(untemplated.raw, own) == untemplated  # decoded and checked
    negative_zero = Transaction("mesh.route_added", {**_route().body, "t": -0.0})
    odd = Block.create(ALICE, 0, GENESIS_PREV, T0, (negative_zero,))
    assert _fast_only(odd.raw) is None and decode_block(odd.raw, reg).txs[0].body["t"] == 0.0


def _route_broken() -> Transaction:
    return Transaction("mesh.route_broken", {"dest": b"d" * 8, "next_hop": b"n" * 8, "hops": 2,
                                             "seq": 7, "reason": "timeout", "t": 1.5})
