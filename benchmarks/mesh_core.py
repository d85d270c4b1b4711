"""Mesh core throughput beside the raw Ed25519 verify rate, and control frame sizes (JSON).

    .venv/bin/python benchmarks/mesh_core.py [--frames N]

The core's receive path decodes, checks freshness and the hop-count hash chain, verifies the
signature and updates its tables; the raw rate is the fastest Ed25519 verify on this machine
(libsodium through PyNaCl, or OpenSSL through cryptography, whichever is faster), measured in
the same run. Target (issue 2): the core's rate is at least 0.6 of the raw rate.
RREQs are measured as heard two hops from an originator whose ring search is at TTL 7
(TTL_THRESHOLD), and at NET_DIAMETER (35), the worst case for the hop-count hash chain.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from random import Random

import nacl.bindings as sodium
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from mesh import frames as fr
from mesh.identity import Identity
from mesh.line import LineStatus
from mesh.node import MeshNode

GW = LineStatus(True, "lte", -85, True, 60)


def raw_verify_rates(n: int) -> dict[str, float]:
    ident = Identity.from_seed(b"r" * 32)
    msgs = [b"m%d" % i + b"x" * 80 for i in range(n)]
    sigs = [ident.sign(m) for m in msgs]
    t = time.perf_counter()
    for m, s in zip(msgs, sigs, strict=True):
        sodium.crypto_sign_open(s + m, ident.public_key)
    libsodium = n / (time.perf_counter() - t)
    key = Ed25519PrivateKey.from_private_bytes(ident.seed).public_key()
    t = time.perf_counter()
    for m, s in zip(msgs, sigs, strict=True):
        key.verify(s, m)
    openssl = n / (time.perf_counter() - t)
    return {"libsodium_verify_per_s": libsodium, "openssl_verify_per_s": openssl}


def make_node(seed: int) -> MeshNode:
    return MeshNode(identity=Identity.from_seed(bytes([seed]) * 32), rng=Random(seed), now=0.0,
                    line=GW)


def hello_frames(n: int, senders: int) -> list[tuple[bytes, int]]:
    idents = [Identity.from_seed(i.to_bytes(4, "big") * 8) for i in range(senders)]
    out = []
    for k in range(n):
        ident = idents[k % senders]
        body = fr.Hello(ident.public_key, k + 1, k // senders + 1, 1000, LineStatus())
        signed = fr.encode_body(body)
        sig = ident.sign(fr.signing_message(fr.T_HELLO, signed))
        out.append((fr.encode_control(fr.T_HELLO, ident.node_id, signed, sig), k % senders))
    return out


def rreq_frames(n: int, origins: int, dest: bytes, ttl: int) -> list[tuple[bytes, int]]:
    rng = Random(7)
    idents = [Identity.from_seed(i.to_bytes(4, "big") * 8) for i in range(origins)]
    out = []
    for k in range(n):
        ident = idents[k % origins]
        seed = rng.randbytes(fr.HASH_LEN)
        body = fr.Rreq(ident.public_key, k + 1, k + 1, dest, 0, fr.F_UNKNOWN_SEQ | fr.F_GRATUITOUS,
                       ttl, fr.hash_chain(seed, ttl))
        signed = fr.encode_body(body)
        sig = ident.sign(fr.signing_message(fr.T_RREQ, signed))
        # Heard from a neighbour two hops out from the originator.
        out.append((fr.encode_control(fr.T_RREQ, ident.node_id, signed, sig, ttl - 2, 2,
                                      fr.hash_chain(seed, 2)), k % origins))
    return out


def run_core(frames: list[tuple[bytes, int]]) -> tuple[float, MeshNode]:
    node = make_node(99)
    t = time.perf_counter()
    now = 0.0
    for data, link in frames:
        now += 0.0001
        node.receive(data, "wifi0", link, now)
    node.handle_timer(now + 1.0)
    node.datagrams_to_send()
    while node.next_event() is not None:
        pass
    return len(frames) / (time.perf_counter() - t), node


def frame_sizes() -> dict[str, int]:
    ident = Identity.from_seed(b"s" * 32)
    h16 = b"h" * 16
    sizes = {}
    bodies: list[fr.Body] = [
        fr.Hello(ident.public_key, 2**40, 2**20, 1000, GW, 3, (ident.node_id, 2**20, 999)),
        fr.Rreq(ident.public_key, 2**40, 2**20, ident.node_id, 2**20, 0x0D, 35, h16),
        fr.Rrep(ident.public_key, 2**40, ident.node_id, ident.public_key, 2**20, ident.node_id,
                30000, 0x08, 3, 35, h16, GW),
        fr.Rerr(ident.public_key, 2**40, 0, ((ident.node_id, 2**20),), ()),
        fr.RrepAck(ident.public_key, 2**40, 2**40),
    ]
    for body in bodies:
        t = fr.TYPE_OF[type(body)]
        signed = fr.encode_body(body)
        sizes[fr.KIND_OF[t]] = len(fr.encode_control(t, ident.node_id, signed, b"s" * 64, 30, 3,
                                                     h16))
    data = fr.Data(ident.node_id, ident.node_id, ident.node_id, 2**40, 64, 3, 0, b"p" * (64 + 16))
    sizes["data_64B_payload"] = len(fr.encode_data(data))
    return sizes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=20000)
    args = parser.parse_args()
    raw = raw_verify_rates(args.frames)
    fastest = max(raw.values())
    hello_rate, hello_node = run_core(hello_frames(args.frames, 50))
    rreq_rate, rreq_node = run_core(rreq_frames(args.frames, 1000, b"\x42" * 8, 7))
    rreq35_rate, _ = run_core(rreq_frames(args.frames, 1000, b"\x43" * 8, 35))
    assert hello_node.stats["rx_hello"] == args.frames
    assert not hello_node.stats["drop_bad_signature"]
    assert rreq_node.stats["rreq_forwarded"] == args.frames
    print(json.dumps({
        "machine": f"{platform.machine()} {platform.python_implementation()} "
                   f"{platform.python_version()}",
        "frames": args.frames,
        **{k: round(v) for k, v in raw.items()},
        "raw_verify_per_s": round(fastest),
        "hello_receive_per_s": round(hello_rate),
        "rreq_forward_per_s": round(rreq_rate),
        "rreq_forward_ttl35_per_s": round(rreq35_rate),
        "hello_ratio_to_raw": round(hello_rate / fastest, 3),
        "rreq_ratio_to_raw": round(rreq_rate / fastest, 3),
        "rreq_ttl35_ratio_to_raw": round(rreq35_rate / fastest, 3),
        "target_ratio": 0.6,
        "control_frame_bytes": frame_sizes(),
    }, indent=2))


if __name__ == "__main__":
    main()
