"""The codec against its contract: round trips, and only FrameError ever escapes decode()."""

import contextlib

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mesh import frames as fr
from mesh.identity import Identity
from mesh.line import LineStatus
from mesh.reassembly import Reassembler

ID = Identity.from_seed(b"k" * 32)
lines = st.builds(LineStatus, st.booleans(), st.sampled_from(["none", "lte", "5g"]),
                  st.integers(-200, 0), st.booleans(), st.integers(0, 600_000))
u64 = st.integers(0, fr.U64)
node = st.binary(min_size=8, max_size=8)
h16 = st.binary(min_size=16, max_size=16)
bodies = st.one_of(
    st.builds(fr.Hello, st.just(ID.public_key), u64, u64, st.integers(0, 600_000), lines),
    st.builds(fr.Rreq, st.just(ID.public_key), u64, u64, node, u64, st.integers(0, 255),
              st.integers(0, 255), h16),
    st.builds(fr.Rrep, st.just(ID.public_key), u64, node, st.just(ID.public_key), u64, node,
              st.integers(0, 3_600_000), st.integers(0, 255), st.integers(0, 255),
              st.integers(0, 255), h16, st.none() | lines),
    st.builds(fr.Rerr, st.just(ID.public_key), u64, st.integers(0, 255),
              st.lists(st.tuples(node, u64), max_size=5).map(tuple),
              st.lists(node, max_size=3).map(tuple)),
    st.builds(fr.RrepAck, st.just(ID.public_key), u64, u64),
)


@settings(max_examples=300, deadline=None)
@given(bodies, node, st.integers(0, 255), st.integers(0, 255), h16)
def test_control_round_trip(body: fr.Body, sender: bytes, ttl: int, hops: int, h: bytes) -> None:
    ftype = fr.TYPE_OF[type(body)]
    signed = fr.encode_body(body)
    sig = ID.sign(fr.signing_message(ftype, signed))
    data = fr.encode_control(ftype, sender, signed, sig, ttl, hops, h)
    frame = fr.decode(data)
    assert isinstance(frame, fr.Control)
    assert frame.body == body and frame.sender == sender and frame.signature == sig
    if ftype in (fr.T_RREQ, fr.T_RREP):
        assert (frame.ttl, frame.hop_count, frame.hop_hash) == (ttl, hops, h)
    assert fr.encode_control(ftype, sender, frame.signed, sig, frame.ttl, frame.hop_count,
                             frame.hop_hash) == data


@settings(max_examples=200, deadline=None)
@given(node, node, node, u64, st.integers(0, 255), st.integers(0, 255), st.integers(0, 255),
       st.binary(max_size=300))
def test_data_round_trip(s: bytes, o: bytes, d: bytes, c: int, ttl: int, hops: int, flags: int,
                         sealed: bytes) -> None:
    frame = fr.Data(s, o, d, c, ttl, hops, flags, sealed)
    assert fr.decode(fr.encode_data(frame)) == frame


@settings(max_examples=2000, deadline=None)
@given(st.binary(max_size=600))
def test_random_bytes_only_raise_frame_error(data: bytes) -> None:
    try:
        fr.decode(data)
    except fr.FrameError as exc:
        assert exc.reason in {"truncated", "malformed", "version", "unknown_type", "oversized"}


@settings(max_examples=500, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.binary(max_size=40)
                    | st.text(max_size=5),
                    lambda c: st.lists(c, max_size=8), max_leaves=30))
def test_random_cbor_only_raises_frame_error(value: object) -> None:
    for prefix in ([], [1], [1, 2], [1, 6]):
        with contextlib.suppress(fr.FrameError):
            fr.decode(cbor2.dumps([*prefix, value] if prefix else value))


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=1, max_size=2000), st.integers(10, 300))
def test_fragment_round_trip(data: bytes, mtu: int) -> None:
    pieces = fr.fragment(data, mtu, 7)
    assert all(len(p) <= mtu for p in pieces)
    r = Reassembler(max_bytes=4096, timeout_s=1.0, max_frame_bytes=4096)
    out = None
    for p in reversed(pieces):
        out = r.add("if", "peer", fr.decode_fragment(p), 0.0)
    assert out == data and r.held_bytes == 0


def test_oversized_and_truncated() -> None:
    with pytest.raises(fr.FrameError) as exc:
        fr.decode(b"\x80" * 3000)
    assert exc.value.reason == "oversized"
    with pytest.raises(fr.FrameError) as exc:
        fr.decode(b"")
    assert exc.value.reason == "truncated"
    good = fr.encode_data(fr.Data(b"s" * 8, b"o" * 8, b"d" * 8, 1, 5, 0, 0, b"x" * 40))
    for cut in range(1, len(good)):
        with pytest.raises(fr.FrameError):
            fr.decode(good[:cut])


def test_reassembly_memory_is_bounded() -> None:
    r = Reassembler(max_bytes=1000, timeout_s=1.0, max_frame_bytes=2048)
    for i in range(500):  # a flood of first fragments that never complete
        r.add("if", i % 7, fr.decode_fragment(fr.fragment(b"z" * 600, 100, i)[0]), 0.001 * i)
        assert r.held_bytes <= 1000
    assert r.evicted > 0
    r.add("if", "x", fr.decode_fragment(fr.fragment(b"z" * 600, 100, 1)[0]), 10.0)
    assert r.expired > 0 and r.held_bytes <= 100


def test_decode_cache_shares_node_ids_and_remembers_hash_chains() -> None:
    cache = fr.DecodeCache(capacity=8)
    frames = []
    for counter in range(3):
        body = fr.RrepAck(ID.public_key, counter, 7)
        signed = fr.encode_body(body)
        sig = ID.sign(fr.signing_message(fr.T_RREP_ACK, signed))
        frames.append(cache.decode(fr.encode_control(fr.T_RREP_ACK, b"s" * 8, signed, sig)))
    assert all(isinstance(f, fr.Control) for f in frames)
    assert len({id(f.origin) for f in frames}) == 1 and frames[0].origin == ID.node_id
    assert len({id(f.sender) for f in frames}) == 1
    data = [fr.encode_data(fr.Data(b"s" * 8, bytes([k]) * 8, b"d" * 8, k, 5, 0, 0, b""))
            for k in range(2)]
    a, b = (cache.decode(d) for d in data)
    assert a.sender is b.sender and a.dest is b.dest and a.origin is not b.origin
    small = fr.DecodeCache(capacity=4)
    for steps in range(10):  # more than capacity: results stay right, the memo bounded
        assert small.hash_chain(b"h" * 16, steps) == fr.hash_chain(b"h" * 16, steps)
        assert small.hash_chain(b"h" * 16, steps) == fr.hash_chain(b"h" * 16, steps)
        assert len(small._chains) <= 4
    for k in range(10):
        small.decode(fr.encode_data(fr.Data(bytes([k]) * 8, b"o" * 8, b"d" * 8, k, 5, 0, 0,
                                            b"")))
        assert len(small._ids) <= 4
