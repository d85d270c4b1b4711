"""Checkpoints: the backhaul's signed Merkle root over the feed heads it holds (finality).

Leaves are `SHA-256(0x00 || author || height(8 bytes) || head hash)` in author order; an inner
node is `SHA-256(0x01 || left || right)`; an odd node at the end of a level moves up unchanged.
A checkpoint is `[version, backhaul key, seq, time_ms, root, feed count, signature]`; a proof
for one feed is `[author, height, hash, index, [sibling hashes]]`. An agent verifies the
signature with the backhaul's key and the proof against the root, then treats that feed up to
that height as final (and prunable from other devices' storage). Pure functions and data.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ledger import codec
from ledger.block import Signer
from ledger.errors import CheckpointError, CodecError
from ledger.validate import FeedHead, Verifier

VERSION = 1
CONTEXT = b"manet-ledger-checkpoint/1"
MAX_CHECKPOINT_BYTES = 4096
MAX_PROOF_DEPTH = 64


def leaf_hash(head: FeedHead) -> bytes:
    return hashlib.sha256(b"\x00" + head.author + head.height.to_bytes(8, "big")
                          + head.hash).digest()


def _parent(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


class MerkleTree:
    """All levels of the tree over `heads` (sorted by author), to answer proofs."""

    def __init__(self, heads: Sequence[FeedHead]) -> None:
        self.heads = sorted(heads, key=lambda h: h.author)
        self.position = {h.author: i for i, h in enumerate(self.heads)}
        level = [leaf_hash(h) for h in self.heads]
        self.levels = [level]
        while len(level) > 1:
            nxt = [_parent(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
            if len(level) % 2:
                nxt.append(level[-1])
            self.levels.append(nxt)
            level = nxt

    @property
    def root(self) -> bytes:
        return self.levels[-1][0] if self.levels[-1] else hashlib.sha256(b"").digest()

    def proof(self, author: bytes) -> list[Any] | None:
        """`[author, height, hash, index, siblings]`, or None when the feed is not covered."""
        index = self.position.get(author)
        if index is None:
            return None
        head = self.heads[index]
        siblings: list[bytes] = []
        i = index
        for level in self.levels[:-1]:
            sib = i ^ 1
            if sib < len(level):
                siblings.append(level[sib])
            i //= 2
        return [head.author, head.height, head.hash, index, siblings]


def root_from_proof(proof: Any, count: int) -> tuple[FeedHead, bytes]:
    """The feed head a proof vouches for and the root it leads to; raises `CheckpointError`."""
    if (type(proof) is not list or len(proof) != 5 or type(proof[0]) is not bytes
            or type(proof[1]) is not int or type(proof[2]) is not bytes
            or type(proof[3]) is not int or type(proof[4]) is not list
            or len(proof[4]) > MAX_PROOF_DEPTH or not 0 <= proof[3] < count):
        raise CheckpointError("malformed inclusion proof")
    author, height, hash_, index, siblings = proof
    head = FeedHead(author, height, hash_, 0)
    node = leaf_hash(head)
    width = count
    i = index
    it = iter(siblings)
    while width > 1:
        sib = i ^ 1
        if sib < width:
            try:
                other = next(it)
            except StopIteration:
                raise CheckpointError("inclusion proof too short") from None
            if type(other) is not bytes or len(other) != 32:
                raise CheckpointError("malformed sibling hash")
            node = _parent(other, node) if i % 2 else _parent(node, other)
        i //= 2
        width = (width + 1) // 2
    if next(it, None) is not None:
        raise CheckpointError("inclusion proof too long")
    return head, node


@dataclass(frozen=True, slots=True)
class Checkpoint:
    backhaul: bytes
    seq: int
    time_ms: int
    root: bytes
    count: int
    signature: bytes
    raw: bytes = field(repr=False, compare=False)

    @classmethod
    def create(cls, signer: Signer, seq: int, time_ms: int, tree: MerkleTree) -> Checkpoint:
        body = [VERSION, signer.public_key, seq, time_ms, tree.root, len(tree.heads)]
        sig = signer.sign(CONTEXT + codec.encode(body))
        return cls(signer.public_key, seq, time_ms, tree.root, len(tree.heads), sig,
                   codec.encode([*body, sig]))


def decode_checkpoint(raw: bytes, backhaul_key: bytes, verifier: Verifier) -> Checkpoint:
    """Parse and verify a checkpoint signed by `backhaul_key`; raises `CheckpointError`."""
    try:
        value = codec.decode(raw, MAX_CHECKPOINT_BYTES)
    except CodecError as exc:
        raise CheckpointError(f"malformed checkpoint: {exc}") from exc
    if (type(value) is not list or len(value) != 7 or value[0] != VERSION
            or not all(type(v) is t for v, t in zip(value[1:], (bytes, int, int, bytes, int,
                                                                  bytes), strict=True))):
        raise CheckpointError("malformed checkpoint")
    _, key, seq, time_ms, root, count, sig = value
    if key != backhaul_key:
        raise CheckpointError("checkpoint signed by another key than the backhaul's")
    if not verifier(key, sig, CONTEXT + codec.encode(value[:6])):
        raise CheckpointError("bad checkpoint signature")
    return Checkpoint(key, seq, time_ms, root, count, sig, raw)


def verify_proofs(checkpoint: Checkpoint, proofs: Sequence[Any]) -> list[FeedHead]:
    """The feed heads the proofs show under the checkpoint's root; raises `CheckpointError`."""
    heads: list[FeedHead] = []
    for proof in proofs:
        head, root = root_from_proof(proof, checkpoint.count)
        if root != checkpoint.root:
            raise CheckpointError(f"proof for {head.author.hex()[:16]} does not match the root")
        heads.append(head)
    return heads
