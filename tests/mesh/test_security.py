"""Forged, replayed, tampered, truncated and oversized frames: rejected, counted, harmless."""

import tracemalloc
from random import Random

from mesh import events as ev
from mesh import frames as fr
from mesh.config import BLE_MIN, MeshConfig
from mesh.identity import Identity, node_id_of
from mesh.line import LineStatus
from mesh.linkgraph import LinkGraph

GW = LineStatus(True, "lte", -85, True, 60)
ALL = {i: GW for i in range(8)}


def hello_frames(net: LinkGraph, i: int) -> list[bytes]:
    return [tx.data for _, src, tx in net.sent if src == i and tx.kind == "hello"]


def test_replayed_hello_is_rejected() -> None:
    net = LinkGraph.chain(2, seed=1, lines=ALL)
    net.run(2.5)
    old = hello_frames(net, 0)[0]
    net.inject(1, old, 0)
    assert net.nodes[1].stats["drop_replay"] + net.nodes[1].stats["drop_duplicate"] == 1


def test_forged_signature_and_impersonation_rejected() -> None:
    net = LinkGraph.chain(2, seed=2, lines=ALL)
    net.run(2.5)
    frame = fr.decode(hello_frames(net, 0)[-1])
    assert isinstance(frame, fr.Control) and isinstance(frame.body, fr.Hello)
    # Same body with a fresh counter but the signature of the old one: a forgery.
    body = fr.Hello(frame.body.origin_pk, frame.body.counter + 100, frame.body.hello_no + 1,
                    1000, LineStatus())
    signed = fr.encode_body(body)
    net.inject(1, fr.encode_control(fr.T_HELLO, frame.sender, signed, frame.signature), 0)
    assert net.nodes[1].stats["drop_bad_signature"] == 1
    # A valid signature by another key cannot claim node 0's line either.
    mallory = Identity.from_seed(b"m" * 32)
    net.inject(1, fr.encode_control(fr.T_HELLO, frame.sender, signed,
                                     mallory.sign(fr.signing_message(fr.T_HELLO, signed))), 0)
    assert net.nodes[1].stats["drop_bad_signature"] == 2
    assert not net.of_type(1, ev.NeighbourLineChanged)


def test_forwarder_cannot_shorten_hop_count() -> None:
    net = LinkGraph.chain(4, seed=3, lines=ALL)
    net.run(2.5)
    net.send(0, net.id(3), b"x")
    net.run(3.0)
    rreqs = [fr.decode(tx.data) for _, src, tx in net.sent if src == 1 and tx.kind == "rreq"]
    forwarded = next(f for f in rreqs if isinstance(f, fr.Control) and f.hop_count == 1)
    assert isinstance(forwarded, fr.Control)
    for hops, h in ((0, forwarded.hop_hash), (0, b"\x00" * 16)):
        forged = fr.encode_control(fr.T_RREQ, net.id(1), forwarded.signed, forwarded.signature,
                                   forwarded.ttl, hops, h)
        fresh = LinkGraph(4, seed=3, lines=ALL)  # same keys, nothing seen yet
        fresh.inject(2, forged, 1)
        assert fresh.nodes[2].stats["drop_bad_hop_count"] == 1
    honest = LinkGraph(4, seed=3, lines=ALL)
    honest.inject(2, fr.encode_control(fr.T_RREQ, net.id(1), forwarded.signed,
                                       forwarded.signature, forwarded.ttl, 1,
                                       forwarded.hop_hash), 1)
    assert honest.nodes[2].stats["drop_bad_hop_count"] == 0
    assert honest.nodes[2].stats["rx_rreq"] == 1


def test_tampered_data_and_garbage_counted_not_crashing() -> None:
    net = LinkGraph.chain(3, seed=4, lines=ALL)
    net.run(2.5)
    net.send(0, net.id(2), b"secret")
    net.run(3.0)
    data_tx = [tx.data for _, src, tx in net.sent if src == 1 and tx.kind == "data"]
    frame = fr.decode(data_tx[0])
    assert isinstance(frame, fr.Data) and b"secret" not in data_tx[0]  # forwarders see no payload
    flipped = fr.Data(frame.sender, frame.origin, frame.dest, frame.counter + 1, frame.ttl,
                      frame.hops, frame.flags, frame.sealed)
    net.inject(2, fr.encode_data(flipped), 1)
    assert net.nodes[2].stats["drop_bad_seal"] == 1
    net.inject(2, data_tx[0], 1)  # a replay of the real one
    assert net.nodes[2].stats["drop_data_replay"] == 1
    node = net.nodes[2]
    for junk in (b"", b"\xff\x00", data_tx[0][:10], b"\x80" * 5000, b"\x01\x00\x01\x05\x09",
                 fr.encode_data(frame)[:-3]):
        net.inject(2, junk, 1)
    assert node.stats["drop_oversized"] == 1
    assert node.stats["drop_truncated"] + node.stats["drop_malformed"] >= 4
    assert [e.payload for e in net.of_type(2, ev.DataReceived)] == [b"secret"]


def test_flood_of_forged_frames_keeps_memory_bounded() -> None:
    # Without the shared verification cache (itself an LRU capped at its capacity), so that
    # what is measured is the node's own state.
    net = LinkGraph.chain(2, seed=5, lines=ALL, shared_cache=False)
    net.run(2.5)
    node = net.nodes[1]
    rng = Random(1)
    tracemalloc.start()
    for i in range(3000):  # distinct originators, valid CBOR, junk signatures
        pk = rng.randbytes(32)
        body = fr.Hello(pk, i, i, 1000, LineStatus())
        net.inject(1, fr.encode_control(fr.T_HELLO, node_id_of(pk), fr.encode_body(body),
                                        rng.randbytes(64)), 0)
        if i == 500:
            baseline = tracemalloc.get_traced_memory()[0]
    grown = tracemalloc.get_traced_memory()[0] - baseline
    tracemalloc.stop()
    assert node.stats["drop_bad_signature"] == 3000
    assert len(node.neighbours()) == 1
    assert grown < 200_000  # forged frames leave nothing behind


def test_fragmented_control_and_data_over_ble_min_mtu() -> None:
    net = LinkGraph.chain(4, seed=6, profile=BLE_MIN, lines=ALL, config=MeshConfig())
    net.run(3.0)
    assert all(len(tx.data) <= BLE_MIN.mtu for _, _, tx in net.sent)
    net.send(0, net.id(3), bytes(range(200)))
    net.run(8.0)
    assert [e.payload for e in net.of_type(3, ev.DataReceived)] == [bytes(range(200))]
    assert net.nodes[0].stats["tx_frag"] > 0


def test_full_route_table_never_raises() -> None:
    net = LinkGraph.chain(3, seed=7, lines=ALL, config=MeshConfig(max_known_nodes=4))
    net.run(2.5)
    rng = Random(2)
    for _ in range(50):  # valid RREQs from many originators fill every table
        ident = Identity.from_seed(rng.randbytes(32))
        seed = rng.randbytes(16)
        body = fr.Rreq(ident.public_key, 1, 1, net.id(2), 0, fr.F_UNKNOWN_SEQ, 3,
                       fr.hash_chain(seed, 3))
        signed = fr.encode_body(body)
        sig = ident.sign(fr.signing_message(fr.T_RREQ, signed))
        net.inject(1, fr.encode_control(fr.T_RREQ, ident.node_id, signed, sig, 3, 0, seed), 0)
        net.run(net.now + 0.05)
    assert net.nodes[1].stats["drop_route_table_full"] > 0
    assert len(net.nodes[1].routes(net.now)) <= 4


def test_mutated_real_frames_never_raise() -> None:
    net = LinkGraph.grid(3, 3, seed=8, lines={8: GW})
    net.run(3.0)
    net.send(0, fr.BACKHAUL, b"up")
    net.send(0, net.id(4), b"mid")
    net.run(6.0)
    corpus = [tx.data for _, _, tx in net.sent]
    rng = Random(3)
    target = net.nodes[4]
    for k in range(4000):
        data = bytearray(rng.choice(corpus))
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        target.receive(bytes(data), "radio0", rng.randrange(9), net.now + k * 0.001)
        target.handle_timer(net.now + k * 0.001)
    dropped = sum(v for key, v in target.stats.items() if key.startswith("drop_"))
    assert dropped > 3000
